"""The driver's last step: check the run's accounting, move the staged files into place, manifest last.

Shards, rejected records and metadata are written under ``OUT/.seqpack-staging/`` while the pipeline runs;
a previous dataset in ``OUT`` stays readable all that time. Only when the pipeline has finished and the
statistics add up is the dataset published:

1. the new manifest is written into the staging directory (the staged dataset is complete);
2. the old ``manifest.json`` is deleted (from here on, readers refuse the directory);
3. the staged files are renamed into place;
4. ``manifest.json`` is written, atomically: the new dataset exists;
5. files of the old dataset that the new manifest does not list (and the old ``report.html``, which describes
   data that is gone), and the staging directory, are removed.

A crash before step 2 leaves the previous dataset; a crash between 2 and 4 leaves a directory that every
reader refuses (no manifest), and the next run cleans it up.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

from apache_beam.io.filesystems import FileSystems

import seqpack
from seqpack.faults import checkpoint
from seqpack.pipeline.build import META_DIR, SHARDS_META, STATS_META
from seqpack.pipeline.config import RunConfig, UsageError
from seqpack.schemas import MANIFEST_NAME, STATS_NAME, Manifest, ShardInfo, SplitInfo, TokenizerInfo
from seqpack.schemas import stats as stats_format
from seqpack.transforms.rejected import REJECTED_FILE
from seqpack.transforms.write import write_atomically

STAGING_NAME = ".seqpack-staging"
DATA_DIRS = ("train", "validation", "rejected", "tokenizer")
"""Directories whose files belong to the dataset; files there that the manifest does not list are removed."""
TOKENIZER_DIR = "tokenizer"
REPORT_NAME = "report.html"
"""``seqpack run --report`` writes the dataset's report here; a commit removes the previous dataset's."""


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


def save_tokenizer(tokenizer: Any, staging: str) -> None:
    """Save the (extended) tokenizer into the staged dataset's ``tokenizer/``."""
    import tempfile

    with tempfile.TemporaryDirectory() as local:
        tokenizer.save_pretrained(local)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as handle:
                write_atomically(FileSystems.join(staging, TOKENIZER_DIR, name), handle.read())


def _staged_tokenizer_files(staging: str) -> list[str]:
    pattern = FileSystems.join(staging, TOKENIZER_DIR, "*")
    return sorted(
        metadata.path[len(staging) :].lstrip("/") for metadata in FileSystems.match([pattern])[0].metadata_list
    )


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


def _move(staging: str, output: str, relative: str) -> None:
    destination = FileSystems.join(output, relative)
    if "://" not in destination:  # object stores have no directories to make
        os.makedirs(os.path.dirname(destination), exist_ok=True)
    FileSystems.rename([FileSystems.join(staging, relative)], [destination])


def _remove_unlisted(output: str, keep: set[str]) -> None:
    """Delete files in the dataset's data directories that the committed manifest does not list."""
    stale = []
    for directory in DATA_DIRS:
        pattern = FileSystems.join(output, directory, "*")
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            relative = metadata.path[len(output) :].lstrip("/")
            if relative not in keep:
                stale.append(metadata.path)
    if stale:
        FileSystems.delete(stale)


def build_manifest(config: RunConfig, tokenizer: TokenizerInfo, shards: list[dict[str, Any]]) -> Manifest:
    return Manifest(
        max_length=config.max_length,
        packing=config.packing,
        file_format=config.file_format,
        tokenizer=tokenizer,
        splits=_splits(shards),
        config=config.to_dict(),
        created_by=f"seqpack {seqpack.__version__}",
    )


def commit(config: RunConfig, tokenizer: TokenizerInfo, staging: str) -> tuple[Manifest, dict[str, Any]]:
    """Check the accounting identity, then publish the staged dataset with its manifest written last."""
    meta = FileSystems.join(staging, META_DIR)
    stats = stats_format.finalize(_read_json(FileSystems.join(meta, STATS_META)))
    stats_format.check_identity(stats)
    shards = _read_json(FileSystems.join(meta, SHARDS_META))
    manifest = build_manifest(config, tokenizer, shards)
    manifest_bytes = manifest.to_json().encode()
    write_atomically(FileSystems.join(staging, MANIFEST_NAME), manifest_bytes)
    write_atomically(FileSystems.join(staging, STATS_NAME), stats_format.to_json(stats).encode())

    old_manifest = FileSystems.join(config.output, MANIFEST_NAME)
    if FileSystems.exists(old_manifest):
        FileSystems.delete([old_manifest])
    files = [shard["path"] for shard in shards] + [STATS_NAME]
    if FileSystems.exists(FileSystems.join(staging, REJECTED_FILE)):
        files.append(REJECTED_FILE)
    files += _staged_tokenizer_files(staging)
    for index, relative in enumerate(files):
        _move(staging, config.output, relative)
        if index == 0:
            checkpoint("commit_moving")
    checkpoint("commit_manifest")
    _move(staging, config.output, MANIFEST_NAME)
    _remove_unlisted(config.output, set(files))
    old_report = FileSystems.join(config.output, REPORT_NAME)
    if FileSystems.exists(old_report):
        FileSystems.delete([old_report])
    FileSystems.delete([staging])
    return manifest, stats
