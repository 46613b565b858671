"""The driver's last step: check the run's accounting, move the staged files into place, manifest last.

Shards, rejected records and metadata are written under ``OUT/.seqpack-staging/`` while the pipeline runs.
Only when the pipeline has finished and the statistics add up are they moved into the dataset, and
``manifest.json``, the mark of a complete dataset, is written last and atomically.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from apache_beam.io.filesystems import FileSystems

import seqpack
from seqpack.pipeline.build import META_DIR, SHARDS_META, STATS_META
from seqpack.pipeline.config import RunConfig, UsageError
from seqpack.schemas import MANIFEST_NAME, STATS_NAME, Manifest, ShardInfo, SplitInfo, TokenizerInfo
from seqpack.schemas import stats as stats_format
from seqpack.transforms.rejected import REJECTED_FILE
from seqpack.transforms.write import write_atomically

STAGING_NAME = ".seqpack-staging"


def staging_dir(output: str) -> str:
    return FileSystems.join(output, STAGING_NAME)


def prepare_output(config: RunConfig) -> str:
    """Refuse to overwrite a dataset by accident; clear what a crashed run left; return the staging dir."""
    manifest = FileSystems.join(config.output, MANIFEST_NAME)
    if FileSystems.exists(manifest) and not config.overwrite:
        raise UsageError(f"{config.output} already holds a seqpack dataset: pass --overwrite to replace it")
    staging = staging_dir(config.output)
    if FileSystems.exists(staging):
        FileSystems.delete([staging])
    return staging


def _read_json(path: str) -> Any:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _splits(shards: list[dict[str, Any]]) -> dict[str, SplitInfo]:
    by_split: dict[str, list[ShardInfo]] = defaultdict(list)
    for shard in sorted(shards, key=lambda s: s["path"]):
        by_split[shard["split"]].append(ShardInfo(**{k: v for k, v in shard.items() if k != "split"}))
    return {
        name: SplitInfo(
            rows=sum(s.rows for s in infos),
            examples=sum(s.examples for s in infos),
            tokens=sum(s.tokens for s in infos),
            shards=infos,
        )
        for name, infos in sorted(by_split.items())
    }


def _ensure_parent(path: str) -> None:
    parent = path.rsplit("/", 1)[0]
    if "://" not in parent:
        import os

        os.makedirs(parent, exist_ok=True)


def _move(staging: str, output: str, relative: str) -> None:
    destination = FileSystems.join(output, relative)
    _ensure_parent(destination)
    FileSystems.rename([FileSystems.join(staging, relative)], [destination])


def _remove_previous(output: str) -> None:
    """Remove a previous dataset's manifest first (so it is never half-valid), then its files."""
    manifest_path = FileSystems.join(output, MANIFEST_NAME)
    if not FileSystems.exists(manifest_path):
        return
    with FileSystems.open(manifest_path) as handle:
        previous = Manifest.from_json(handle.read().decode("utf-8"), where=manifest_path)
    FileSystems.delete([manifest_path])
    old = [FileSystems.join(output, s.path) for split in previous.splits.values() for s in split.shards]
    old += [FileSystems.join(output, name) for name in (STATS_NAME, REJECTED_FILE)]
    existing = [path for path in old if FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


def commit(config: RunConfig, tokenizer: TokenizerInfo, staging: str) -> tuple[Manifest, dict[str, Any]]:
    """Check the accounting identity, then publish the staged dataset with its manifest written last."""
    meta = FileSystems.join(staging, META_DIR)
    stats = stats_format.finalize(_read_json(FileSystems.join(meta, STATS_META)))
    stats_format.check_identity(stats)
    shards = _read_json(FileSystems.join(meta, SHARDS_META))
    manifest = Manifest(
        max_length=config.max_length,
        packing=config.packing,
        file_format=config.file_format,
        tokenizer=tokenizer,
        splits=_splits(shards),
        config=config.to_dict(),
        created_by=f"seqpack {seqpack.__version__}",
    )
    _remove_previous(config.output)
    for shard in shards:
        _move(staging, config.output, shard["path"])
    if FileSystems.exists(FileSystems.join(staging, REJECTED_FILE)):
        _move(staging, config.output, REJECTED_FILE)
    write_atomically(FileSystems.join(config.output, STATS_NAME), stats_format.to_json(stats).encode())
    write_atomically(FileSystems.join(config.output, MANIFEST_NAME), manifest.to_json().encode())
    FileSystems.delete([staging])
    return manifest, stats
