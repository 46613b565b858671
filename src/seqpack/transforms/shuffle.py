"""The global shuffle, all of it: key-sorted spill files, and buckets that are key ranges of them.

The keys themselves are ``seqpack.keys``. Spill files take the shuffle through the filesystem instead of
through the runner: ``--shuffle spill``, the default on the local runner, which would otherwise hold every
shuffled byte in its driver process. On distributed runners each bucket reading a slice of every spill file
costs *buckets × spill files* requests, which grows with the square of the data; there ``--shuffle runner``
(``transforms.shuffle_runner``) reads each spill file once and lets the runner's shuffle move the buckets.

Tokenization writes its examples, sorted by their seeded 16-byte key, into Arrow IPC files under the run's
staging directory and passes on only a small ``SpillFile`` description. A bucket is a range of keys, so the
packing step reads from every spill file just the contiguous slice of its bucket. The examples never travel
through the runner's data plane (on the local runner every shuffle is held by the driver process) and are
never pickled.

Retries are safe: a retried bundle writes new files under new names, and only the descriptions that its
successful attempt emitted are read; the staging directory, leftovers included, is removed at commit.

Layout of a spill file: columns ``key_hi``/``key_lo`` (uint64), ``ids`` (list<int32>), ``n_masked`` (int32),
``trained`` (list<bool>, null for pairs), ``source_id`` (int16, null outside mixtures); record batches of at most
``SPILL_BATCH_ROWS`` rows; the schema metadata lists each batch's first and last ``key_hi``, so a reader fetches
only the batches of its range.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.example_columns import ExampleColumns, empty_columns
from seqpack.schemas.columns import list_array

SPILL_DIR = "_spill"
SPILL_BATCH_ROWS = 16_384
SPILL_TOKENS = 1 << 23
"""A tokenize worker spills when it holds this many tokens (32 MiB of ids): its memory stays bounded."""
_RANGES_KEY = b"seqpack.batch_key_ranges"

SPILL_SCHEMA = pa.schema(
    [
        pa.field("key_hi", pa.uint64(), nullable=False),
        pa.field("key_lo", pa.uint64(), nullable=False),
        pa.field("ids", pa.list_(pa.int32()), nullable=False),
        pa.field("n_masked", pa.int32(), nullable=False),
        pa.field("trained", pa.list_(pa.bool_())),
        pa.field("source_id", pa.int16()),
    ]
)


@dataclass(frozen=True)
class SpillFile:
    """What the pipeline passes on instead of the examples themselves."""

    split: str
    path: str
    examples: int
    tokens: int
    by_source: tuple[tuple[int, int, int], ...] = ()
    """In a mixture: ``(source_id, examples, tokens)`` for each source with examples in the file, so the totals
    per (split, source) that the weighting needs (``seqpack.mixing``) follow from the descriptions alone."""


def source_counts(columns: ExampleColumns) -> tuple[tuple[int, int, int], ...]:
    """``SpillFile.by_source`` of ``columns``: examples and tokens per source id (empty outside mixtures)."""
    if columns.source is None or not len(columns):
        return ()
    ids = columns.source.astype(np.int64)
    examples = np.bincount(ids)
    tokens = np.bincount(ids, weights=columns.lengths).astype(np.int64)
    return tuple((int(i), int(examples[i]), int(tokens[i])) for i in np.flatnonzero(examples))


def spill_path(spill_dir: str, split: str) -> str:
    return FileSystems.join(spill_dir, split, f"{uuid.uuid4().hex}.arrow")


def spill_batch(columns: ExampleColumns) -> pa.RecordBatch:
    """``columns`` as one record batch of ``SPILL_SCHEMA`` (a spill file's batch, or a runner-shuffle chunk)."""
    base = columns.offsets - columns.offsets[0]
    ids = columns.ids[columns.offsets[0] : columns.offsets[-1]]
    trained = (
        pa.nulls(len(columns), pa.list_(pa.bool_()))
        if columns.trained is None
        else list_array(base, columns.trained[columns.offsets[0] : columns.offsets[-1]], pa.bool_())
    )
    source = pa.nulls(len(columns), pa.int16()) if columns.source is None else pa.array(columns.source, pa.int16())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(columns.key_hi, pa.uint64()),
            pa.array(columns.key_lo, pa.uint64()),
            list_array(base, ids, pa.int32()),
            pa.array(columns.n_masked, pa.int32()),
            trained,
            source,
        ],
        schema=SPILL_SCHEMA,
    )


def write_spill(path: str, columns: ExampleColumns) -> None:
    """Write key-sorted ``columns`` as one spill file (uncompressed: it is read once, soon, nearby)."""
    cuts = list(range(0, len(columns), SPILL_BATCH_ROWS)) or [0]
    bounds = [(start, min(start + SPILL_BATCH_ROWS, len(columns))) for start in cuts]
    ranges = [
        [int(columns.key_hi[start]), int(columns.key_hi[stop - 1])] if stop > start else None
        for start, stop in bounds
    ]
    schema = SPILL_SCHEMA.with_metadata({_RANGES_KEY: json.dumps(ranges).encode()})
    with FileSystems.create(path) as out:
        sink = pa.PythonFile(out, mode="w")
        with pa.ipc.new_file(sink, schema) as writer:
            for start, stop in bounds:
                writer.write_batch(spill_batch(columns.slice(start, stop)))


def _open(path: str) -> pa.NativeFile:
    if "://" not in path:
        return pa.memory_map(path)
    return pa.PythonFile(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), mode="r")


def batch_columns(batch: pa.RecordBatch) -> ExampleColumns:
    """A record batch of ``SPILL_SCHEMA`` back as columns (sharing its memory where Arrow allows)."""
    ids = batch.column("ids")
    offsets = np.asarray(ids.offsets, dtype=np.int64)
    trained = batch.column("trained")
    source = batch.column("source_id")
    return ExampleColumns(
        key_hi=np.asarray(batch.column("key_hi")),
        key_lo=np.asarray(batch.column("key_lo")),
        offsets=offsets - offsets[0],
        ids=np.asarray(ids.values)[offsets[0] : offsets[-1]],
        n_masked=np.asarray(batch.column("n_masked")),
        trained=None
        if trained.null_count == len(trained) or not len(trained)
        else np.asarray(trained.values.to_numpy(zero_copy_only=False))[offsets[0] : offsets[-1]],
        source=None if source.null_count == len(source) or not len(source) else np.asarray(source),
    )


def read_spill_range(path: str, low: int, high: int | None, *, with_trained: bool) -> ExampleColumns:
    """The examples of a spill file with ``low <= key_hi < high`` (``high=None``: no upper bound), in key
    order. Only the record batches that overlap the range are read; ``with_trained`` gives an empty result the
    per-token mask column that conversations carry (a non-empty batch has it when its examples do)."""
    parts = []
    with _open(path) as source:
        reader = pa.ipc.open_file(source)
        ranges = json.loads(reader.schema.metadata[_RANGES_KEY])
        for index, key_range in enumerate(ranges):
            if key_range is None or key_range[1] < low or (high is not None and key_range[0] >= high):
                continue
            columns = batch_columns(reader.get_batch(index))
            if with_trained:  # a mixture of pairs and conversations: pairs get the mask conversations have
                columns = columns.with_trained_mask()
            start, stop = columns.key_range(low, high)
            parts.append(columns.slice(start, stop))
        # concat copies every column: the result does not point into the file, which closes on return
        return ExampleColumns.concat(parts) if parts else empty_columns(with_trained)


# --- buckets: key ranges of about --bucket-tokens tokens, each read from every spill file of its split -------

SPLIT_CODES = {"train": 0, "validation": 1}
Bucket = tuple[str, int, int]
"""(split, index, count)."""


def bucket_count(tokens: int, bucket_tokens: int) -> int:
    """How many buckets (and shards) a split of ``tokens`` tokens gets: each holds about ``bucket_tokens``."""
    return max(1, -(-tokens // bucket_tokens))


def bucket_bounds(index: int, count: int) -> tuple[int, int | None]:
    """The ``key_hi`` range ``[low, high)`` of bucket ``index`` of ``count``; ``high`` is None for the last."""
    low = -(-(index << 64) // count)
    high = None if index == count - 1 else -(-((index + 1) << 64) // count)
    return low, high


MAX_BUCKETS = 1 << 31
"""``bucket_of`` is exact below this many buckets per split (2³¹ buckets of 4M tokens: 10¹⁶ tokens)."""


def bucket_of(key_hi: np.ndarray, count: int) -> np.ndarray:
    """The bucket of each ``key_hi`` among ``count``: ``floor(key_hi * count / 2**64)``, the ``i`` with
    ``bucket_bounds(i)[0] <= key_hi < bucket_bounds(i + 1)[0]``, exactly, in uint64 arithmetic.

    Cost per row, not per bucket: a spill file is cut in time linear in its rows however many buckets there are.
    With ``key_hi = a * 2**32 + b``, ``key_hi * count >> 64 = (a * count + (b * count >> 32)) >> 32``, and neither
    product overflows while ``count < 2**31``."""
    if not 0 < count < MAX_BUCKETS:
        raise ValueError(f"bucket count {count} is outside 1..{MAX_BUCKETS - 1}")
    keys = np.asarray(key_hi, dtype=np.uint64)
    c = np.uint64(count)
    high, low = keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF)
    return ((high * c + ((low * c) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def read_bucket(bucket: Bucket, spills: Sequence[SpillFile], *, with_trained: bool, in_key_order: bool = True
                ) -> ExampleColumns:
    """Every example of the bucket, from every spill file of its split, in key order; with ``in_key_order``
    False as read, for packing through ``ExampleColumns.key_order`` (which moves the tokens once, not twice)."""
    split, index, count = bucket
    low, high = bucket_bounds(index, count)
    parts = [
        read_spill_range(spill.path, low, high, with_trained=with_trained)
        for spill in sorted(spills, key=lambda s: s.path)
        if spill.split == split
    ]
    if not parts:
        return empty_columns(with_trained)
    examples = ExampleColumns.concat(parts)
    return examples.sorted_by_key() if in_key_order else examples


def block_order(seed: int, split: str, index: int) -> Callable[[int], np.ndarray]:
    """The seeded random order of a shard's blocks (bucket ``index`` of ``split``), given their number, so that
    long and short examples do not sit in blocks sorted by how best-fit placed them (``pack_columns``'
    ``row_order``: the blocks are laid out in it, not shuffled after)."""
    def permutation(blocks: int) -> np.ndarray:
        return np.random.default_rng([seed, SPLIT_CODES[split], index]).permutation(blocks)

    return permutation
