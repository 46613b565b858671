"""Write packed blocks as shards: deterministic names and bytes, temporary name first, renamed when whole."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from seqpack import IGNORE_INDEX
from seqpack.faults import checkpoint
from seqpack.packing import PackedBlocks
from seqpack.schemas import blocks_to_table, serialize_shard
from seqpack.schemas import stats as stats_format
from seqpack.transforms.bundle_stats import StatsDoFn
from seqpack.transforms.pack import ShardBlocks

EXTENSIONS = {"parquet": "parquet", "arrow": "arrow"}


def shard_name(split: str, index: int, count: int, file_format: str) -> str:
    return f"{split}/part-{index:05d}-of-{count:05d}.{EXTENSIONS[file_format]}"


def table_of(blocks: PackedBlocks, *, with_sources: bool = False) -> pa.Table:
    """The shard table of ``blocks``; ``with_sources`` (a mixture): with the ``source_id`` column, empty for a
    bucket that holds no example (every shard of a mixture has the column)."""
    if with_sources and blocks.source_ids is None:
        if blocks.examples:
            raise ValueError("a mixture's blocks lack their examples' source ids")
        blocks = replace(blocks, source_ids=np.empty(0, np.int16))
    return blocks_to_table(
        row_offsets=blocks.row_offsets,
        input_ids=blocks.input_ids,
        labels=blocks.labels,
        attention_mask=blocks.attention_mask,
        position_ids=blocks.position_ids,
        seq_len_offsets=blocks.seq_len_offsets,
        seq_lens=blocks.seq_lens,
        source_ids=blocks.source_ids,
    )


OBJECT_STORES = ("gs", "s3")
"""Where one object write is atomic by itself: a reader sees the old object or the new one, never a torn one."""


@contextmanager
def atomic_output(path: str, *, fault_point: str | None = None) -> Iterator[IO[bytes]]:
    """A file to write ``path`` through: written under a unique temporary name, renamed once whole, so a retried
    or killed write never leaves a torn file.

    On object stores the object is written in place, in one upload: it becomes visible only when complete, and a
    rename there is a copy and a delete, which costs two more requests and can leave the temporary object
    behind. A retried bundle writes the same bytes under the same final name, so a shard is never doubled or mixed.
    """
    if FileSystems.get_scheme(path) in OBJECT_STORES:
        with FileSystems.create(path) as out:
            yield out
        if fault_point:
            checkpoint(fault_point)
        return
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as out:
        yield out
    if fault_point:
        checkpoint(fault_point)
    FileSystems.rename([temporary], [path])


def write_atomically(path: str, data: bytes, *, fault_point: str | None = None) -> None:
    """``data`` written to ``path`` through ``atomic_output``."""
    with atomic_output(path, fault_point=fault_point) as out:
        out.write(data)


def shard_description(split: str, name: str, *, rows: int, examples: int, tokens: int, size: int,
                      sha256: str) -> dict[str, Any]:
    """What a shard writer reports to the commit step (the manifest's ``ShardInfo``, plus the split)."""
    return {"split": split, "path": name, "rows": rows, "examples": examples, "tokens": tokens, "bytes": size,
            "sha256": sha256}


@dataclass(frozen=True)
class ShardFormat:
    """How shards are written: ``parquet`` or ``arrow``, and rows per row group (record batch)."""

    file_format: str = "parquet"
    row_group_size: int = 256
    sources: tuple[str, ...] = ()
    """A mixture's source names, by id: its shards get the ``source_id`` column (``schemas.columns.shard_schema``)
    and the write step counts tokens per source."""

    @property
    def with_sources(self) -> bool:
        return bool(self.sources)


class BlockStatsDoFn(StatsDoFn):
    """Counts what a bucket's packed blocks add to the run's statistics, wherever they are written."""

    def count_blocks(self, shard: ShardBlocks, sources: tuple[str, ...] = ()) -> None:
        """Count the blocks; in a mixture (``sources``: the names by id) the tokens of each source too."""
        blocks = shard.blocks
        if sources and blocks.source_ids is not None:
            count_sources(self.stats, blocks, sources)
        self.count("blocks", blocks.rows)
        self.count("block_tokens", len(blocks.input_ids))
        self.count("tokens_written", blocks.real_tokens)
        self.count("trained_tokens", int(np.count_nonzero(blocks.labels != IGNORE_INDEX)))
        self.count_keyed("blocks_by_split", shard.split, blocks.rows)
        self.count_keyed("pieces_written_by_split", shard.split, shard.pieces_whole)


def count_sources(stats: dict[str, Any], blocks: PackedBlocks, sources: tuple[str, ...]) -> None:
    """Add each source's written and trained tokens to ``stats["sources"]`` (``stats.source_stats``)."""
    real = blocks.attention_mask == 1  # each row's examples, in order, then its padding
    token_source = np.repeat(blocks.source_ids.astype(np.int64), blocks.seq_lens)
    written = np.bincount(token_source, minlength=len(sources))
    trained = np.bincount(token_source[blocks.labels[real] != IGNORE_INDEX], minlength=len(sources))
    for source_id in np.flatnonzero(written).tolist():
        counts = stats_format.source_stats(stats, sources[source_id])
        counts["tokens_written"] += int(written[source_id])
        counts["trained_tokens"] += int(trained[source_id])


class WriteShardDoFn(BlockStatsDoFn):
    """``ShardBlocks`` in, written as one whole shard file under ``root``, one shard description dict out
    (one bucket per shard; ``transforms.shard_groups`` writes shards of several)."""

    def __init__(self, shard_format: ShardFormat, root: str) -> None:
        self.shard_format = shard_format
        self.root = root

    def process(self, shard: ShardBlocks) -> Iterator[dict[str, Any]]:
        cfg = self.shard_format
        name = shard_name(shard.split, shard.index, shard.count, cfg.file_format)
        data = serialize_shard(table_of(shard.blocks, with_sources=cfg.with_sources), cfg.file_format,
                               cfg.row_group_size)
        write_atomically(FileSystems.join(self.root, name), data, fault_point="write_shard")
        self.count_blocks(shard, cfg.sources)
        blocks = shard.blocks
        yield shard_description(shard.split, name, rows=blocks.rows, examples=blocks.examples,
                                tokens=blocks.real_tokens, size=len(data), sha256=hashlib.sha256(data).hexdigest())
