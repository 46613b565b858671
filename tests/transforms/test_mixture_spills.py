"""A mixture's examples through the shuffle: source ids kept in spill files, counted per source in their
descriptions, pairs and conversations packed together, and the weighting's plan applied by both shuffles alike."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from seqpack import IGNORE_INDEX
from seqpack.example_columns import ExampleBuffer, ExampleColumns
from seqpack.mixing import MixturePlan, SourcePlan
from seqpack.packing import pack_columns
from seqpack.transforms.pack import PackOptions, ShardBlocks, ShuffleAndPack
from seqpack.transforms.shuffle import (
    SpillFile,
    read_bucket,
    read_spill_range,
    source_counts,
    spill_path,
    write_spill,
)


def source_columns(source_id: int, count: int, *, chat: bool, seed: int) -> ExampleColumns:
    """``count`` examples of one source: pairs (a masked prefix) or conversations (a per-token mask)."""
    rng = np.random.default_rng(seed)
    buffer = ExampleBuffer()
    for i in range(count):
        ids = np.arange(int(rng.integers(3, 12)), dtype=np.int32) + 1000 * i
        trained = (np.arange(len(ids)) % 3 == 2) if chat else None
        # example i of every source has the same key (the source breaks the tie); within a source keys differ
        key = hashlib.blake2b(str(i).encode(), digest_size=16).digest()
        buffer.add(key, ids, 0 if chat else 2, trained)
    return buffer.build().with_source(source_id)


def spill(columns: ExampleColumns, spill_dir: Path, split: str = "train") -> SpillFile:
    path = spill_path(str(spill_dir), split)
    write_spill(path, columns)
    return SpillFile(split, path, len(columns), columns.tokens, source_counts(columns))


def test_spill_files_keep_source_ids_and_count_them(tmp_path: Path) -> None:
    columns = ExampleColumns.concat([source_columns(0, 5, chat=False, seed=1), source_columns(2, 3, chat=False,
                                                                                              seed=2)])
    described = spill(columns.sorted_by_key(), tmp_path)
    back = read_spill_range(described.path, 0, None, with_trained=False)
    assert sorted(back.source.tolist()) == [0] * 5 + [2] * 3 and back.source.dtype == np.int16
    assert described.by_source == ((0, 5, int(columns.lengths[:5].sum())), (2, 3, int(columns.lengths[5:].sum())))
    plain = replace(columns, source=None)
    assert source_counts(plain) == () and read_spill_range(spill(plain.sorted_by_key(), tmp_path).path, 0, None,
                                                           with_trained=False).source is None


def test_pairs_read_with_conversations_get_the_mask_their_prefix_means(tmp_path: Path) -> None:
    pairs = source_columns(0, 6, chat=False, seed=3)
    chats = source_columns(1, 4, chat=True, seed=4)
    spills = [spill(pairs, tmp_path), spill(chats, tmp_path)]
    mixed = read_bucket(("train", 0, 1), spills, with_trained=True)
    assert mixed.trained is not None and len(mixed) == 10
    alone = pack_columns(pairs, strategy="none", max_length=32, pad_id=0)
    as_mask = pack_columns(pairs.with_trained_mask(), strategy="none", max_length=32, pad_id=0)
    assert np.array_equal(alone.labels, as_mask.labels) and (alone.labels != IGNORE_INDEX).any()
    packed = pack_columns(mixed, strategy="bfd", max_length=32, pad_id=0)
    assert sorted(packed.source_ids.tolist()) == [0] * 6 + [1] * 4  # aligned with seq_lens
    assert len(packed.source_ids) == len(packed.seq_lens)


def twice_the_second_source(first: ExampleColumns, second: ExampleColumns) -> MixturePlan:
    """A weighting's plan: each example of source 1 twice, those of source 0 once."""
    def once(source: int, columns: ExampleColumns, repeats: int) -> SourcePlan:
        return SourcePlan(source, f"s{source}", 0.5, float(repeats * len(columns)), len(columns), columns.tokens,
                          int(columns.lengths.max()), repeats)

    return MixturePlan(0, "examples", {("train", 0): once(0, first, 1), ("train", 1): once(1, second, 2)})


def _packed(spills: list[SpillFile], options: PackOptions, shuffle: str, out: Path,
            plan: MixturePlan | None = None) -> list[tuple]:
    """Every shard's arrays, as the workers saw them (saved to ``out``: DoFns run on copies)."""
    out.mkdir()

    def save(shard: ShardBlocks) -> None:
        b = shard.blocks
        empty = np.empty(0, np.int16)  # a bucket whose key range holds no example
        arrays = (b.input_ids, b.labels, b.seq_lens, empty if b.source_ids is None else b.source_ids)
        (out / f"{shard.index}.pickle").write_bytes(pickle.dumps((shard.index, *(a.tobytes() for a in arrays))))

    with BeamTestPipeline(runner=FnApiRunner()) as p:
        mixture = None if plan is None else p | "Plan" >> beam.Create([plan])
        p | beam.Create(spills) | ShuffleAndPack(options, shuffle=shuffle, plan=mixture) | beam.Map(save)
    return sorted(pickle.loads(path.read_bytes()) for path in out.iterdir())


def test_both_shuffles_pack_a_mixture_and_apply_its_repeats_alike(tmp_path: Path) -> None:
    pairs, chats = source_columns(0, 40, chat=False, seed=5), source_columns(1, 30, chat=True, seed=6)
    spills = [spill(part, tmp_path / "spill") for part in (pairs.slice(0, 20), pairs.slice(20, 40), chats)]
    options = PackOptions(max_length=32, packing="bfd", bucket_tokens=128, seed=0, pad_id=0, with_trained=True,
                          mask_boundaries=True)
    plan = twice_the_second_source(pairs, chats)
    by_spill = _packed(spills, options, "spill", tmp_path / "by-spill", plan)
    assert by_spill == _packed(spills, options, "runner", tmp_path / "by-runner", plan)
    written = np.concatenate([np.frombuffer(shard[4], np.int16) for shard in by_spill])
    assert np.bincount(written).tolist() == [40, 60]
