"""What the report shows, read from the dataset: the statistics (every generation's added up), a few rejected
records per reason, figures per block from the shards' small ``seq_lens`` column, and a few decoded blocks.

Shards are read through :class:`seqpack.dataset.ShardSet`, so the report gets the same checks and errors as the
loader and ``seqpack inspect``.

    stats = read_stats("out/", manifest)          # every generation's stats.json added up
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
from seqpack.schemas import REJECTED_FILE, Manifest, RejectedLine
from seqpack.tools.blocks import BlockView, decoded_blocks, load_dataset_tokenizer
from seqpack.tools.stats import generation_stats, total_stats

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
    """A few raw rejected records per reason, read from the start of each generation's ``rejected.jsonl``."""

    by_reason: dict[str, list[RejectedLine]] = field(default_factory=dict)
    truncated_scan: bool = False
    paths: list[str] = field(default_factory=list)
    """The files that hold every rejected record (one per generation that rejected any), relative to the dataset
    directory."""


def rejected_samples(
    url: str, manifest: Manifest, reasons: Iterable[str], *, per_reason: int = EXAMPLES_PER_REASON
) -> RejectedSamples:
    """Up to ``per_reason`` raw records per reason, oldest generation first, reading at most
    ``REJECTED_SCAN_BYTES`` in all."""
    location = Location.of(url)
    candidates = [g.path_of(REJECTED_FILE) for g in manifest.generations]
    samples = RejectedSamples({reason: [] for reason in reasons})
    if not samples.by_reason:
        return samples
    samples.paths = [path for path in candidates if location.fs.exists(location.path(path))]
    budget = REJECTED_SCAN_BYTES
    for path in samples.paths:
        budget = _scan_rejected(location, path, samples, per_reason, budget)
        if budget <= 0 or _enough(samples, per_reason):
            break
    return samples


def _enough(samples: RejectedSamples, per_reason: int) -> bool:
    return all(len(found) >= per_reason for found in samples.by_reason.values())


def _scan_rejected(location: Location, path: str, samples: RejectedSamples, per_reason: int, budget: int) -> int:
    """Take samples from one ``rejected.jsonl``; return the bytes left to read."""
    with location.fs.open(location.path(path), "rb") as handle:
        for line in handle:
            budget -= len(line)
            if budget < 0:
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
            if _enough(samples, per_reason):
                break
    return budget


def read_stats(url: str, manifest: Manifest) -> dict[str, Any]:
    """The dataset's statistics: every generation's ``stats.json``, checked field by field and added up
    (``DatasetFormatError`` if one is missing or damaged)."""
    return total_stats(generation_stats(url, manifest).values())


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
