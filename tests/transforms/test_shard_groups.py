"""``--shard-bytes``: buckets grouped into shards, and shards streamed from parts with the units of a whole write."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.schemas.columns import BLOCK_SCHEMA, ShardWriter, blocks_to_table, serialize_shard
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.pack import ShardBlocks
from seqpack.transforms.shard_groups import (
    MIN_SHARDS,
    SHARD_BYTES_PER_TOKEN,
    ShardSizing,
    WriteShards,
    buckets_per_shard,
    shard_buckets,
    shard_of,
)
from seqpack.transforms.write import ShardFormat, shard_name, table_of


@given(buckets=st.integers(1, 300), per_shard=st.integers(1, 40))
def test_every_bucket_lands_in_exactly_one_shard_in_consecutive_runs(buckets: int, per_shard: int) -> None:
    shards = -(-buckets // per_shard)
    held = [list(shard_buckets(j, buckets, per_shard)) for j in range(shards)]
    assert [b for group in held for b in group] == list(range(buckets)), "each bucket once, in order"
    assert all(group for group in held), "no shard without a bucket"
    assert all(len(group) == per_shard for group in held[:-1])
    for bucket in range(buckets):
        shard, count = shard_of(bucket, buckets, per_shard)
        assert count == shards and bucket in held[shard]


def test_buckets_per_shard_follows_the_estimate_and_never_drops_below_one() -> None:
    bucket, many = 1 << 22, 10**6
    assert buckets_per_shard(256 << 20, bucket, many) == (256 << 20) // (bucket * SHARD_BYTES_PER_TOKEN) > 1
    assert buckets_per_shard(bucket * SHARD_BYTES_PER_TOKEN, bucket, many) == 1
    assert buckets_per_shard(bucket * SHARD_BYTES_PER_TOKEN * 2 - 1, bucket, many) == 1
    assert buckets_per_shard(1, bucket, many) == 1
    assert buckets_per_shard(1, bucket, 0) == buckets_per_shard(256 << 20, bucket, 0) == 1


@given(buckets=st.integers(0, 2000), fit=st.integers(1, 40))
def test_a_split_of_enough_buckets_makes_at_least_min_shards_shards(buckets: int, fit: int) -> None:
    """Every shard is written by one worker: a split of at least ``MIN_SHARDS`` buckets is written by at least
    that many, and shards still hold as many buckets as ``--shard-bytes`` allows when the split is large."""
    per_shard = buckets_per_shard(fit * 1000 * SHARD_BYTES_PER_TOKEN, 1000, buckets)
    shards = -(-buckets // per_shard)
    assert 1 <= per_shard <= fit
    assert shards >= min(buckets, MIN_SHARDS)
    if buckets >= fit * MIN_SHARDS:
        assert per_shard == fit


def random_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 200, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = int(offsets[-1])
    return blocks_to_table(
        row_offsets=offsets, input_ids=rng.integers(0, 5000, tokens), labels=rng.integers(-100, 5000, tokens),
        attention_mask=np.ones(tokens), position_ids=np.arange(tokens), seq_len_offsets=np.arange(rows + 1),
        seq_lens=lengths,
    )


def streamed(parts: list[pa.Table], file_format: str, row_group_size: int, *, batch_rows: int) -> bytes:
    sink = io.BytesIO()
    with ShardWriter(sink, file_format, row_group_size) as writer:
        for part in parts:
            for batch in part.to_batches(max_chunksize=batch_rows):
                writer.write(batch)
    return sink.getvalue()


def units(data: bytes, file_format: str) -> list[pa.Table]:
    if file_format == "parquet":
        reader = pq.ParquetFile(io.BytesIO(data))
        return [reader.read_row_group(i) for i in range(reader.num_row_groups)]
    ipc = pa.ipc.open_file(io.BytesIO(data))
    return [pa.Table.from_batches([ipc.get_batch(i)]) for i in range(ipc.num_record_batches)]


@pytest.mark.parametrize("file_format", ["parquet", "arrow"])
@settings(max_examples=40, deadline=None)
@given(part_rows=st.lists(st.integers(0, 90), max_size=6), row_group_size=st.integers(1, 40),
       batch_rows=st.integers(1, 50))
def test_a_shard_streamed_from_parts_has_the_rows_and_units_of_the_whole_table(
    file_format: str, part_rows: list[int], row_group_size: int, batch_rows: int
) -> None:
    parts = [random_table(rows, seed) for seed, rows in enumerate(part_rows)]
    whole = pa.concat_tables([BLOCK_SCHEMA.empty_table(), *parts]).combine_chunks()
    data = streamed(parts, file_format, row_group_size, batch_rows=batch_rows)
    got = units(data, file_format)
    sizes = [unit.num_rows for unit in got]
    assert pa.concat_tables([BLOCK_SCHEMA.empty_table(), *got]).equals(whole)
    assert sizes == [unit.num_rows for unit in units(serialize_shard(whole, file_format, row_group_size), file_format)]
    if whole.num_rows:
        assert all(size == row_group_size for size in sizes[:-1]) and 0 < sizes[-1] <= row_group_size
    if file_format == "parquet":  # Arrow IPC pads a sliced buffer differently: the same batches, other padding
        assert data == serialize_shard(whole, file_format, row_group_size)


def pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=FnApiRunner())


def blocks_of(table: pa.Table, pieces: int):  # noqa: ANN201 - a small PackedBlocks stand-in built from a table
    from seqpack.packing import PackedBlocks

    columns = {name: table.column(name).combine_chunks() for name in BLOCK_SCHEMA.names}
    ids = columns["input_ids"]
    offsets = np.asarray(ids.offsets)
    flat = {name: np.asarray(columns[name].values) for name in ("input_ids", "labels", "attention_mask",
                                                                 "position_ids")}
    return PackedBlocks(
        row_offsets=offsets.astype(np.int64), input_ids=flat["input_ids"], labels=flat["labels"],
        attention_mask=flat["attention_mask"], position_ids=flat["position_ids"],
        seq_len_offsets=np.asarray(columns["seq_lens"].offsets).astype(np.int64),
        seq_lens=np.asarray(columns["seq_lens"].values),
    ), pieces


def write(tmp_path: Path, buckets: list[ShardBlocks], *, per_shard: int, file_format: str) -> tuple[list, dict]:
    """Run ``WriteShards``; its shard descriptions and merged statistics, kept through a file."""
    root, staging = tmp_path / f"out-{per_shard}", tmp_path / f"staging-{per_shard}"
    kept = tmp_path / f"written-{per_shard}.pkl"
    shard_format = ShardFormat(file_format=file_format, row_group_size=7)
    with pipeline() as p:
        # min_shards=1: shards of exactly per_shard buckets, however few buckets there are
        sizing = ShardSizing(per_shard * SHARD_BYTES_PER_TOKEN, 1, min_shards=1)
        written = p | beam.Create(buckets) | WriteShards(shard_format, root=str(root), staging=str(staging),
                                                          sizing=sizing)
        stats = written[STATS_TAG] | beam.CombineGlobally(MergeStats())
        shards = written["shards"] | "List" >> beam.combiners.ToList()
        _ = stats | "Keep" >> beam.Map(lambda merged, found: kept.write_bytes(pickle.dumps((found, merged))),
                                       found=beam.pvalue.AsSingleton(shards))
    return pickle.loads(kept.read_bytes())


@pytest.mark.parametrize("file_format", ["parquet", "arrow"])
def test_write_shards_groups_buckets_into_fewer_files_with_the_same_rows_and_statistics(
    tmp_path: Path, file_format: str
) -> None:
    rows = [13, 0, 5, 0, 0, 0, 21, 9]  # buckets 3..5: a shard of empty buckets when three go to a shard
    tables = [random_table(n, seed) for seed, n in enumerate(rows)]
    buckets = []
    for index, table in enumerate(tables):
        blocks, pieces = blocks_of(table, pieces=index + 1)
        buckets.append(ShardBlocks("train", index, len(rows), blocks, pieces))
    one, one_stats = write(tmp_path, buckets, per_shard=1, file_format=file_format)
    three, three_stats = write(tmp_path, buckets, per_shard=3, file_format=file_format)
    assert one_stats == three_stats, "the statistics count buckets, however they are grouped"
    assert sorted(s["path"] for s in three) == [shard_name("train", j, 3, file_format) for j in range(3)]
    by_path = {s["path"]: s for s in three}
    for j in range(3):
        description = by_path[shard_name("train", j, 3, file_format)]
        data = (tmp_path / "out-3" / description["path"]).read_bytes()
        assert (description["bytes"], description["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        members = [tables[b] for b in shard_buckets(j, len(rows), 3)]
        whole = pa.concat_tables([BLOCK_SCHEMA.empty_table(), *members]).combine_chunks()
        assert pa.concat_tables([BLOCK_SCHEMA.empty_table(), *units(data, file_format)]).equals(whole)
        assert description["rows"] == whole.num_rows
        assert description["tokens"] == sum(
            buckets[b].blocks.real_tokens for b in shard_buckets(j, len(rows), 3)
        )
        if file_format == "parquet":
            assert data == serialize_shard(whole, file_format, 7)
    assert sum(s["rows"] for s in one) == sum(s["rows"] for s in three) == sum(rows)
    empty_bucket = (tmp_path / "out-1" / shard_name("train", 3, 8, file_format)).read_bytes()
    assert (tmp_path / "out-3" / shard_name("train", 1, 3, file_format)).read_bytes() == empty_bucket
    assert empty_bucket == serialize_shard(table_of(buckets[3].blocks), file_format, 7)
