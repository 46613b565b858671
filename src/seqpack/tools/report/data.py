"""What the report shows, read from the dataset: the run's statistics, a few rejected records per reason, figures
per block from the shards' small ``seq_lens`` column, and a few decoded blocks.

Shards are read through :class:`seqpack.dataset.ShardSet`, so the report gets the same checks and errors as the
loader and ``seqpack inspect``.

    stats = read_stats("out/", manifest)
    blocks = block_stats("out/", manifest)        # samples row groups evenly past MAX_UNITS
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from seqpack.dataset import Location, ShardSet
from seqpack.schemas import REJECTED_FILE, STATS_NAME, DatasetFormatError, Manifest, RejectedLine
from seqpack.schemas import stats as stats_format
from seqpack.tools.blocks import BlockView, decoded_blocks, load_dataset_tokenizer

EXAMPLES_PER_REASON = 3
REJECTED_SCAN_BYTES = 64 << 20
"""Read at most this much of rejected.jsonl looking for examples: a huge file must not make the report slow."""
MAX_UNITS = 2000
"""Row groups whose ``seq_lens`` are read for the block plots; a larger dataset is sampled evenly."""


@dataclass(frozen=True)
class BlockStats:
    """Per-block figures from the shards' ``seq_lens`` (a small column: a few ints per block)."""

    segment_lengths: np.ndarray
    examples_per_block: np.ndarray
    fill: np.ndarray
    units_read: int
    units_total: int


def _evenly(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included; all of them if fewer."""
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]


def block_stats(url: str, manifest: Manifest, *, max_units: int = MAX_UNITS) -> BlockStats:
    """Segment lengths, examples per block and fill over every split, sampling row groups evenly past
    ``max_units`` so a terabyte dataset reports in seconds."""
    splits = [ShardSet.open(url, split=split) for split in sorted(manifest.splits)]
    try:
        units = [(shards, unit) for shards in splits for unit in range(shards.num_units)]
        picked = [units[i] for i in _evenly(len(units), max_units)]
        arrays = [
            shards.read_unit(unit, columns=["seq_lens"]).column("seq_lens").combine_chunks() for shards, unit in picked
        ]
    finally:
        for shards in splits:
            shards.close()
    if not arrays:
        empty = np.zeros(0, dtype=np.int64)
        return BlockStats(empty, empty, np.zeros(0), 0, len(units))
    lists = pa.concat_arrays(arrays)
    lengths = lists.flatten().to_numpy().astype(np.int64)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(lengths)])
    real = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
    block_length = real if manifest.packing == "none" else np.full_like(real, manifest.max_length)
    fill = np.divide(real, block_length, out=np.zeros(len(real)), where=block_length > 0)
    return BlockStats(lengths, np.diff(offsets), fill, len(picked), len(units))


@dataclass
class RejectedSamples:
    """A few raw rejected records per reason, read from the start of ``rejected.jsonl``."""

    by_reason: dict[str, list[RejectedLine]] = field(default_factory=dict)
    truncated_scan: bool = False
    path: str = REJECTED_FILE
    """The file, relative to the dataset directory."""


def rejected_samples(
    url: str, manifest: Manifest, reasons: Iterable[str], *, per_reason: int = EXAMPLES_PER_REASON
) -> RejectedSamples:
    location = Location.of(url)
    path = location.path(manifest.path_of(REJECTED_FILE))
    samples = RejectedSamples({reason: [] for reason in reasons}, path=manifest.path_of(REJECTED_FILE))
    if not samples.by_reason or not location.fs.exists(path):
        return samples
    read = 0
    with location.fs.open(path, "rb") as handle:
        for line in handle:
            read += len(line)
            if read > REJECTED_SCAN_BYTES:
                samples.truncated_scan = True
                break
            try:
                entry = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(entry, dict):
                continue
            found = samples.by_reason.setdefault(str(entry.get("reason")), [])
            if len(found) < per_reason:
                found.append(entry)
            if all(len(found) >= per_reason for found in samples.by_reason.values()):
                break
    return samples


def read_stats(url: str, manifest: Manifest) -> dict[str, Any]:
    """The dataset's ``stats.json``, checked field by field (``DatasetFormatError`` if missing or damaged)."""
    location = Location.of(url)
    relative = manifest.path_of(STATS_NAME)
    path = location.path(relative)
    if not location.fs.isfile(path):
        raise DatasetFormatError(f"{location.name(relative)} is missing: the report needs the run's statistics")
    with location.fs.open(path, "rb") as handle:
        return stats_format.parse(handle.read(), location.name(relative))


def sample_blocks(url: str, manifest: Manifest, *, split: str, count: int, tokenizer: str | None) -> list[BlockView]:
    """``count`` blocks spread evenly over ``split``, decoded; raises ``InspectError`` when they cannot be."""
    if count <= 0 or split not in manifest.splits:
        return []
    loaded = load_dataset_tokenizer(url, manifest, tokenizer)
    shards = ShardSet.open(url, split=split)
    try:
        return list(decoded_blocks(shards, _evenly(shards.num_rows, count), loaded.decode))
    finally:
        shards.close()
