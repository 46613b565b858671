"""Shards sized apart from buckets (``--shard-bytes``): consecutive buckets of a split share one shard file.

A bucket bounds a worker's memory (``--bucket-tokens``); a shard is what a reader opens and a store lists, and
10¹² tokens in 4M-token shards would be 250,000 files. So shard ``j`` of a split holds its buckets
``[j·G, (j+1)·G)``, where ``G = buckets_per_shard(...)`` follows from the configuration alone.

With ``G == 1`` every packed bucket is written directly as its shard (``write.WriteShardDoFn``). With ``G > 1``
each packed bucket is written as a *part* to the run's staging directory (an uncompressed Arrow IPC stream) and
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
from seqpack.transforms.bundle_stats import STATS_TAG
from seqpack.transforms.pack import ShardBlocks
from seqpack.transforms.write import (
    EXTENSIONS,
    BlockStatsDoFn,
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
PARTS_DIR = "_parts"
"""Under the run's staging directory: one Arrow IPC stream per packed bucket, while shards are assembled."""


def buckets_per_shard(shard_bytes: int, bucket_tokens: int) -> int:
    """How many consecutive buckets share a shard: at least one, and as many as fit in ``shard_bytes``.

        >>> buckets_per_shard(256 << 20, 1 << 22)   # 4M-token buckets, 256 MiB shards
        21
    """
    return max(1, shard_bytes // (bucket_tokens * SHARD_BYTES_PER_TOKEN))


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


class WritePartDoFn(BlockStatsDoFn):
    """``ShardBlocks`` in, written to staging as an Arrow IPC stream; ``((split, shard), ShardPart)`` out."""

    def __init__(self, shard_format: ShardFormat, staging: str, per_shard: int) -> None:
        self.shard_format = shard_format
        self.staging = staging
        self.per_shard = per_shard

    def process(self, packed: ShardBlocks) -> Iterator[tuple[tuple[str, int], ShardPart]]:
        path = part_path(self.staging, packed.split, packed.index, packed.count)
        schema = shard_schema(self.shard_format.with_sources)
        with atomic_output(path) as out, pa.ipc.new_stream(pa.PythonFile(out, mode="w"), schema) as writer:
            table = table_of(packed.blocks, with_sources=self.shard_format.with_sources)
            for batch in table.to_batches(max_chunksize=self.shard_format.row_group_size):
                writer.write_batch(batch)
        self.count_blocks(packed, self.shard_format.sources)
        shard, shards = shard_of(packed.index, packed.count, self.per_shard)
        blocks = packed.blocks
        yield (packed.split, shard), ShardPart(
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


class AssembleShardDoFn(beam.DoFn):
    """``((split, shard), parts)`` in, the parts streamed in bucket order into one shard file under ``root``,
    the shard's description dict out."""

    def __init__(self, shard_format: ShardFormat, root: str, per_shard: int) -> None:
        self.shard_format = shard_format
        self.root = root
        self.per_shard = per_shard

    def process(self, grouped: tuple[tuple[str, int], Iterable[ShardPart]]) -> Iterator[dict[str, Any]]:
        (split, shard), unordered = grouped
        parts = sorted(unordered, key=lambda part: part.bucket)
        expected = list(shard_buckets(shard, parts[0].buckets, self.per_shard))
        if [part.bucket for part in parts] != expected:
            raise RuntimeError(
                f"shard {shard} of {split} got the parts of buckets {[p.bucket for p in parts]}, expected {expected}: "
                "a bug in seqpack (the run commits nothing); please report it with the run's configuration"
            )
        cfg = self.shard_format
        name = shard_name(split, shard, parts[0].shards, cfg.file_format)
        with atomic_output(FileSystems.join(self.root, name), fault_point="write_shard") as out:
            hashed = _Hashed(out)
            with ShardWriter(pa.PythonFile(hashed, mode="w"), cfg.file_format, cfg.row_group_size,
                             schema=shard_schema(cfg.with_sources)) as writer:
                for part in parts:
                    for batch in _read_part(part.path):
                        writer.write(batch)
        yield shard_description(
            split, name, rows=sum(p.rows for p in parts), examples=sum(p.examples for p in parts),
            tokens=sum(p.tokens for p in parts), size=hashed.size, sha256=hashed.sha256.hexdigest(),
        )


class WriteShards(beam.PTransform):
    """``ShardBlocks`` (one per bucket) in; shard files written under ``root``; ``{"shards": descriptions,
    STATS_TAG: statistics}`` out. ``per_shard`` buckets go to a shard (``buckets_per_shard``)."""

    def __init__(self, shard_format: ShardFormat, *, root: str, staging: str, per_shard: int) -> None:
        super().__init__()
        if shard_format.file_format not in EXTENSIONS:
            raise ValueError(f"file format must be one of {', '.join(EXTENSIONS)}, got {shard_format.file_format!r}")
        self.shard_format = shard_format
        self.root = root
        self.staging = staging
        self.per_shard = per_shard

    def expand(self, packed: beam.PCollection) -> dict[str, beam.PCollection]:
        if self.per_shard == 1:
            direct = packed | "WriteWhole" >> beam.ParDo(WriteShardDoFn(self.shard_format, self.root)).with_outputs(
                STATS_TAG, main="shards"
            )
            return {"shards": direct.shards, STATS_TAG: direct[STATS_TAG]}
        parts = packed | "WriteParts" >> beam.ParDo(
            WritePartDoFn(self.shard_format, self.staging, self.per_shard)
        ).with_outputs(STATS_TAG, main="parts")
        shards = (
            parts.parts
            | "GroupParts" >> beam.GroupByKey()
            | "AssembleShards" >> beam.ParDo(AssembleShardDoFn(self.shard_format, self.root, self.per_shard))
        )
        return {"shards": shards, STATS_TAG: parts[STATS_TAG]}
