"""The runner's shuffle: cutting spill files into bucket chunks, and packing what a GroupByKey gathers.

Its contract is the spill path's output, byte for byte: the same rows in every bucket, in the same order, and
the same packed blocks, whatever the number of files, buckets, duplicates or empty buckets.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from helpers import spill_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.config import RunConfig
from seqpack.example_columns import ExampleBuffer, ExampleColumns
from seqpack.pipeline.build import pack_options
from seqpack.transforms.pack import ShardBlocks, ShuffleAndPack
from seqpack.transforms.shuffle import (
    MAX_BUCKETS,
    SpillFile,
    bucket_bounds,
    bucket_count,
    bucket_of,
    read_bucket,
)
from seqpack.transforms.shuffle_runner import cut_into_buckets, decode_chunks, encode_chunk

KEY_HI = st.integers(min_value=0, max_value=2**64 - 1)


def _columns(key_his: list[int], *, trained: bool = False, seed: int = 0) -> ExampleColumns:
    """Examples with the given ``key_hi`` (``key_lo`` and ids follow from the row), sorted by key."""
    rng = np.random.default_rng(seed)
    buffer = ExampleBuffer()
    for row, hi in enumerate(key_his):
        ids = np.arange(1 + row % 5, dtype=np.int32) + 100 * row
        mask = rng.random(len(ids)) < 0.5 if trained else None
        buffer.add(hi.to_bytes(8, "big") + row.to_bytes(8, "big"), ids, row % 3, mask)
    return buffer.build()


@settings(max_examples=200, deadline=None)
@given(st.lists(KEY_HI, max_size=60), st.integers(min_value=1, max_value=300))
def test_cutting_gives_each_bucket_its_key_range_every_row_once(key_his: list[int], count: int) -> None:
    columns = _columns(key_his)
    chunks = list(cut_into_buckets(columns, "train", count))
    assert all(len(part) for _, part in chunks)
    for (split, index, total), part in chunks:
        low, high = bucket_bounds(index, total)
        assert split == "train" and total == count
        assert (part.key_hi >= np.uint64(low)).all() and (high is None or (part.key_hi < np.uint64(high)).all())
        start, stop = columns.key_range(low, high)  # the rows the spill path reads for this bucket
        assert part.key_lo.tolist() == columns.key_lo[start:stop].tolist()
    regrouped = ExampleColumns.concat([part for _, part in chunks]) if chunks else columns
    assert regrouped.key_lo.tolist() == columns.key_lo.tolist()  # every row once, in key order
    assert regrouped.ids.tolist() == columns.ids.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(KEY_HI, min_size=1, max_size=40), st.integers(min_value=1, max_value=MAX_BUCKETS - 1))
def test_bucket_of_is_exact_against_the_bounds(key_his: list[int], count: int) -> None:
    extremes = [0, 1, 2**64 - 1, *(bucket_bounds(i, count)[0] + d for i in (0, count // 2, count - 1) for d in (-1, 0))]
    keys = [k for k in key_his + extremes if 0 <= k < 2**64]
    found = bucket_of(np.array(keys, dtype=np.uint64), count).tolist()
    assert found == [key * count >> 64 for key in keys]  # Python integers: no overflow
    for key, index in zip(keys, found, strict=True):
        low, high = bucket_bounds(index, count)
        assert low <= key and (high is None or key < high)


def test_bucket_of_refuses_counts_it_cannot_compute_exactly() -> None:
    with pytest.raises(ValueError, match="bucket count"):
        bucket_of(np.array([1], dtype=np.uint64), MAX_BUCKETS)


@pytest.mark.parametrize("trained", [False, True])
def test_a_chunk_decodes_to_the_columns_it_encodes(trained: bool) -> None:
    columns = _columns([5, 1, 2**63, 7, 7], trained=trained)
    part = columns.slice(1, 4)  # a slice: offsets that do not start at 0
    back = decode_chunks([b"", encode_chunk(part), b""], with_trained=trained)
    for name in ("key_hi", "key_lo", "offsets", "ids", "n_masked"):
        assert getattr(back, name).tolist() == getattr(part, name).tolist() == getattr(
            part.take(np.arange(len(part))), name).tolist(), name
    assert (back.trained is None) == (not trained)
    if trained:
        assert back.trained.tolist() == part.trained.tolist()
    empty = decode_chunks([b""], with_trained=trained)
    assert len(empty) == 0 and (empty.trained is None) == (not trained)


def test_chunks_in_any_order_decode_to_key_order() -> None:
    columns = _columns(list(range(0, 2**64 - 1, 2**58)))
    chunks = [encode_chunk(columns.slice(a, b)) for a, b in ((0, 10), (10, 40), (40, len(columns)))]
    back = decode_chunks(reversed(chunks), with_trained=False)
    assert back.key_hi.tolist() == columns.key_hi.tolist() and back.ids.tolist() == columns.ids.tolist()


def _shard_bytes(shard: ShardBlocks) -> tuple:
    blocks = shard.blocks
    arrays = (blocks.row_offsets, blocks.input_ids, blocks.labels, blocks.attention_mask, blocks.position_ids,
              blocks.seq_len_offsets, blocks.seq_lens)
    return (shard.split, shard.index, shard.count, shard.pieces_whole, *(a.tobytes() for a in arrays))


def _save(shard: ShardBlocks, directory: str) -> None:
    with open(Path(directory) / f"{shard.split}-{shard.index}.pickle", "wb") as out:
        pickle.dump(_shard_bytes(shard), out)


def _packed(spills: list[SpillFile], config: RunConfig, shuffle: str, out: Path) -> list[tuple]:
    """Every shard's bytes, as the pipeline's workers saw them (saved to ``out``: DoFns run on copies)."""
    out.mkdir()
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        shards = p | beam.Create(spills) | ShuffleAndPack(pack_options(config, pad_id=0), shuffle=shuffle)
        shards | beam.Map(_save, str(out))
    return sorted(pickle.loads(path.read_bytes()) for path in out.iterdir())


def test_runner_and_spill_shuffles_pack_the_same_blocks(tmp_path: Path) -> None:
    """Many files and buckets, exact duplicates (equal keys), and a key range that holds no example."""
    config = RunConfig(inputs=["x"], output="o", tokenizer="t", max_length=32, bucket_tokens=64)
    rng = np.random.default_rng(3)
    examples = []
    for i in range(120):
        key = bytes([rng.integers(0, 128)]) + rng.bytes(15)  # the upper half of the keys is empty
        examples.append((key, np.arange(int(rng.integers(3, 12)), dtype=np.int32) + 1000 * i))
    examples += examples[:15]  # exact duplicates: same key, same content
    train = spill_examples(tmp_path / "spill", examples, files=7, split="train")
    validation = spill_examples(tmp_path / "spill", examples[:20], files=2, split="validation")
    count = bucket_count(sum(s.tokens for s in train), config.bucket_tokens)
    assert count > 4 and len(read_bucket(("train", count - 1, count), train, with_trained=False)) == 0
    spill = _packed(train + validation, config, "spill", tmp_path / "by-spill")
    runner = _packed(train + validation, config, "runner", tmp_path / "by-runner")
    assert [s[:3] for s in runner] == [("train", i, count) for i in range(count)] + [
        ("validation", i, s[2]) for i, s in enumerate(s for s in runner if s[0] == "validation")]
    assert sum(s[3] for s in runner if s[0] == "train") == len(examples)
    assert runner == spill
