"""Shards sized apart from buckets (``--shard-bytes``): consecutive buckets of a split share one shard file.

A bucket bounds a worker's memory (``--bucket-tokens``); a shard is what a reader opens and a store lists, and
10¹² tokens in 4M-token shards would be 250,000 files. So shard ``j`` of a split holds its buckets
``[j·G, (j+1)·G)``, where ``G = buckets_per_shard(...)`` follows from the configuration and the split's number of
buckets alone (never from the workers): as many buckets as fit in ``--shard-bytes``, but few enough that a split
of at least ``MIN_SHARDS`` buckets makes that many shards, written by as many workers at once.

A bucket of a split with ``G == 1`` is written directly as its shard, where it was packed. With ``G > 1`` each
packed bucket is written as a *part* to the run's staging directory (an uncompressed Arrow IPC stream) and
only its small ``ShardPart`` description travels on; a ``GroupByKey`` on (split, shard) gathers the descriptions,
and one writer streams the parts, in bucket order, into the shard file, cutting row groups at
``--row-group-size`` rows across part boundaries. Memory stays one bucket when packing and one record batch
plus one row group when assembling; both shuffles feed the same steps, so they write the same bytes. A shard's
rows are its buckets' seeded block orders one after the other: buckets are random key ranges, so every part is
already a random sample of the split.

Parts are removed with the staging directory at commit, not once read: a retried shard writer reads them again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.schemas.columns import ShardWriter, shard_schema
from seqpack.transforms.audit_shards import ShardAudit, audit_stats, blocks_of_batch
from seqpack.transforms.bundle_stats import STATS_TAG, StatsDoFn
from seqpack.transforms.pack import ShardBlocks
from seqpack.transforms.write import (
    EXTENSIONS,
    ShardFormat,
    WriteShardDoFn,
    atomic_output,
    shard_description,
    shard_name,
    table_of,
)

SHARD_BYTES_PER_TOKEN = 3
"""Estimated bytes of a zstd Parquet shard per real token, to turn ``--shard-bytes`` into buckets per shard.
Measured: 2.8 B/token (32k vocabulary) and 3.0 (128k) for Zipf-distributed ids packed into 2,048-token blocks,
2.1 for the demo data (a 500-token vocabulary); Arrow IPC within 10 % of Parquet. Shards land within a factor of
about 1.5 of ``--shard-bytes``, never the point: their number is."""
PARTS_TAG = "parts"
"""The packed buckets written as parts of a shard of several (``WritePackedDoFn``'s tagged output)."""
PARTS_DIR = "_parts"
"""Under the run's staging directory: one Arrow IPC stream per packed bucket, while shards are assembled."""


MIN_SHARDS = 8
"""A split of at least this many buckets is cut into at least this many shards. One writer encodes a shard, so a
split in one shard ends with one core compressing Parquet while the others wait (3 s of a 17 s run on 1.5 M
gettext pairs, 2 cores); in eight, eight workers write at once, and a loader has whole files to spread over its
ranks. Splits of more than ``MIN_SHARDS`` times ``--shard-bytes`` get shards of ``--shard-bytes`` as before."""


def buckets_per_shard(shard_bytes: int, bucket_tokens: int, buckets: int, min_shards: int = MIN_SHARDS) -> int:
    """How many consecutive buckets of a split of ``buckets`` share a shard: as many as fit in ``shard_bytes``,
    at least one, and few enough for ``min_shards`` shards where the split has that many buckets.

        >>> buckets_per_shard(256 << 20, 1 << 22, 1000)   # 4M-token buckets, 256 MiB shards
        21
        >>> buckets_per_shard(256 << 20, 1 << 22, 100)    # 9 shards of 12 buckets (~150 MB), not 5 of 21
        12
        >>> buckets_per_shard(256 << 20, 1 << 22, 13)     # 13 shards of one bucket, not one of 13
        1
    """
    fit = max(1, shard_bytes // (bucket_tokens * SHARD_BYTES_PER_TOKEN))
    return max(1, min(fit, buckets // max(1, min_shards)))


@dataclass(frozen=True)
class ShardSizing:
    """``--shard-bytes`` and ``--bucket-tokens``: what decides, with a split's number of buckets, its shards."""

    shard_bytes: int
    bucket_tokens: int
    min_shards: int = MIN_SHARDS

    def per_shard(self, buckets: int) -> int:
        return buckets_per_shard(self.shard_bytes, self.bucket_tokens, buckets, self.min_shards)


def shard_of(bucket: int, buckets: int, per_shard: int) -> tuple[int, int]:
    """(shard index, shard count) of bucket ``bucket`` of ``buckets``, ``per_shard`` buckets to a shard."""
    return bucket // per_shard, -(-buckets // per_shard)


def shard_buckets(shard: int, buckets: int, per_shard: int) -> range:
    """The buckets shard ``shard`` holds, in the order its rows are written."""
    return range(shard * per_shard, min((shard + 1) * per_shard, buckets))


@dataclass(frozen=True)
class ShardPart:
    """One packed bucket written to staging, as part ``bucket`` of shard ``shard`` of ``shards``."""

    split: str
    shard: int
    shards: int
    bucket: int
    buckets: int
    path: str
    rows: int
    examples: int
    tokens: int


def part_path(staging: str, split: str, bucket: int, buckets: int) -> str:
    """A part's name follows from its bucket, so a retried bundle writes the same file again."""
    return FileSystems.join(staging, PARTS_DIR, split, f"bucket-{bucket:07d}-of-{buckets:07d}.arrow")


class WritePackedDoFn(WriteShardDoFn):
    """``ShardBlocks`` in. A split of one bucket per shard: the bucket written as its shard, the shard's description
    out (``WriteShardDoFn``). Else: written to staging as an Arrow IPC stream, ``((split, shard), ShardPart)`` out
    under ``PARTS_TAG``."""

    def __init__(self, shard_format: ShardFormat, root: str, staging: str, sizing: ShardSizing,
                 audit: ShardAudit | None = None) -> None:
        super().__init__(shard_format, root, audit)
        self.staging = staging
        self.sizing = sizing

    def process(self, packed: ShardBlocks) -> Iterator[Any]:
        per_shard = self.sizing.per_shard(packed.count)
        if per_shard == 1:
            yield from super().process(packed)
        else:
            yield beam.pvalue.TaggedOutput(PARTS_TAG, self.write_part(packed, per_shard))

    def write_part(self, packed: ShardBlocks, per_shard: int) -> tuple[tuple[str, int], ShardPart]:
        path = part_path(self.staging, packed.split, packed.index, packed.count)
        schema = shard_schema(self.shard_format.with_sources)
        with atomic_output(path) as out, pa.ipc.new_stream(pa.PythonFile(out, mode="w"), schema) as writer:
            table = table_of(packed.blocks, with_sources=self.shard_format.with_sources)
            for batch in table.to_batches(max_chunksize=self.shard_format.row_group_size):
                writer.write_batch(batch)
        self.count_blocks(packed, self.shard_format.sources)
        shard, shards = shard_of(packed.index, packed.count, per_shard)
        blocks = packed.blocks
        return (packed.split, shard), ShardPart(
            packed.split, shard, shards, packed.index, packed.count, path, blocks.rows, blocks.examples,
            blocks.real_tokens,
        )


class _Hashed:
    """A writable file that also hashes and counts what goes through it (the shard's sha256 and size)."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self.out.write(view)
        return len(view)

    def flush(self) -> None:
        self.out.flush()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """The Parquet writer closes its sink when done; the file underneath is closed by its own ``with``."""
        self._closed = True


def _read_part(path: str) -> Iterator[pa.RecordBatch]:
    """A part's record batches, one at a time (read into memory of their own, never mapped)."""
    if "://" in path:
        source: Any = pa.PythonFile(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), mode="r")
    else:
        source = pa.OSFile(path)
    with source, pa.ipc.open_stream(source) as reader:
        yield from reader


class AssembleShardDoFn(StatsDoFn):
    """``((split, shard), parts)`` in, the parts streamed in bucket order into one shard file under ``root``,
    the shard's description dict out. With ``audit``, each record batch is audited as it is written (the rows as
    the file holds them, so the places' rows are the file's)."""

    def __init__(self, shard_format: ShardFormat, root: str, sizing: ShardSizing, audit: ShardAudit | None = None
                 ) -> None:
        self.shard_format = shard_format
        self.root = root
        self.sizing = sizing
        self.audit = audit

    def process(self, grouped: tuple[tuple[str, int], Iterable[ShardPart]]) -> Iterator[dict[str, Any]]:
        (split, shard), unordered = grouped
        parts = sorted(unordered, key=lambda part: part.bucket)
        expected = list(shard_buckets(shard, parts[0].buckets, self.sizing.per_shard(parts[0].buckets)))
        if [part.bucket for part in parts] != expected:
            raise RuntimeError(
                f"shard {shard} of {split} got the parts of buckets {[p.bucket for p in parts]}, expected {expected}: "
                "a bug in seqpack (the run commits nothing); please report it with the run's configuration"
            )
        cfg = self.shard_format
        name = shard_name(split, shard, parts[0].shards, cfg.file_format)
        audited, row = [], 0
        with atomic_output(FileSystems.join(self.root, name), fault_point="write_shard") as out:
            hashed = _Hashed(out)
            with ShardWriter(pa.PythonFile(hashed, mode="w"), cfg.file_format, cfg.row_group_size,
                             schema=shard_schema(cfg.with_sources)) as writer:
                for part in parts:
                    for batch in _read_part(part.path):
                        writer.write(batch)
                        if self.audit is not None:
                            audited.append(audit_stats(self.audit, blocks_of_batch(batch), split=split, shard=name,
                                                       first_row=row))
                        row += batch.num_rows
        for partial in audited:  # counted once the shard is whole: a retried writer starts afresh
            self.add_stats(partial)
        yield shard_description(
            split, name, rows=sum(p.rows for p in parts), examples=sum(p.examples for p in parts),
            tokens=sum(p.tokens for p in parts), size=hashed.size, sha256=hashed.sha256.hexdigest(),
        )


class WriteShards(beam.PTransform):
    """``ShardBlocks`` (one per bucket) in; shard files written under ``root``; ``{"shards": descriptions,
    STATS_TAG: statistics}`` out. ``sizing`` decides each split's buckets per shard (``buckets_per_shard``). With
    ``audit``, the writers audit the blocks they write (``transforms.audit_shards``); the shards' bytes are the
    same either way."""

    def __init__(self, shard_format: ShardFormat, *, root: str, staging: str, sizing: ShardSizing,
                 audit: ShardAudit | None = None) -> None:
        super().__init__()
        if shard_format.file_format not in EXTENSIONS:
            raise ValueError(f"file format must be one of {', '.join(EXTENSIONS)}, got {shard_format.file_format!r}")
        self.shard_format = shard_format
        self.root = root
        self.staging = staging
        self.sizing = sizing
        self.audit = audit

    def expand(self, packed: beam.PCollection) -> dict[str, beam.PCollection]:
        written = packed | "WritePacked" >> beam.ParDo(
            WritePackedDoFn(self.shard_format, self.root, self.staging, self.sizing, self.audit)
        ).with_outputs(STATS_TAG, PARTS_TAG, main="shards")
        assembled = (
            written[PARTS_TAG]
            | "GroupParts" >> beam.GroupByKey()
            | "AssembleShards" >> beam.ParDo(
                AssembleShardDoFn(self.shard_format, self.root, self.sizing, self.audit)
            ).with_outputs(STATS_TAG, main="shards")
        )
        shards = (written.shards, assembled.shards) | "AllShards" >> beam.Flatten()
        stats = (written[STATS_TAG], assembled[STATS_TAG]) | "WriteStats" >> beam.Flatten()
        return {"shards": shards, STATS_TAG: stats}
