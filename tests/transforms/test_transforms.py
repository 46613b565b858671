"""Beam transforms under TestPipeline pinned to the FnApiRunner (never the Prism download)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from helpers import spill_examples
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.config import RunConfig
from seqpack.inputs import Record
from seqpack.keys import example_key, example_keys
from seqpack.pipeline.build import pack_options, tokenize_options
from seqpack.prompt_templates import make_template
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.pack import ShuffleAndPack
from seqpack.transforms.render import REJECTED_TAG, RenderDoFn
from seqpack.transforms.shuffle import SpillFile, bucket_count, read_bucket, read_spill_range
from seqpack.transforms.tokenize import TokenizeDoFn


def pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=FnApiRunner())


def test_render_splits_good_and_bad_records() -> None:
    records = [Record({"source": "a", "target": "b"}, "f:1"), Record({"source": "a"}, "f:2")]
    with pipeline() as p:
        out = (
            p
            | beam.Create([records])
            | beam.ParDo(RenderDoFn(make_template("plain"))).with_outputs(REJECTED_TAG, STATS_TAG, main="pairs")
        )
        assert_that(out.pairs, equal_to([[("a = ", "b", "f:1")]]), label="pairs")
        reasons = out[REJECTED_TAG] | beam.Map(lambda r: (r.reason, r.origin))
        assert_that(reasons, equal_to([("missing_field", "f:2")]), label="rejected")
        read = out[STATS_TAG] | beam.CombineGlobally(MergeStats()) | beam.Map(lambda s: s["records_read"])
        assert_that(read, equal_to([2]), label="stats")


def test_tokenize_spills_keyed_examples_with_masked_source(tokenizer_dir: Path, tmp_path: Path) -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer=str(tokenizer_dir), max_length=64)
    spill_dir = str(tmp_path / "spill")
    with pipeline() as p:
        out = (
            p
            | beam.Create([[("Hello world = ", "Hello", "f:1")]])
            | beam.ParDo(TokenizeDoFn(tokenize_options(config), spill_dir)).with_outputs(
                REJECTED_TAG, STATS_TAG, main="spills"
            )
        )

        def check(spill: SpillFile) -> list[tuple]:
            columns = read_spill_range(spill.path, 0, None, with_trained=False)
            ids = columns.example_ids(0)
            return [(spill.split, spill.examples, len(columns), int(ids[0]), int(ids[-1]),
                     0 < int(columns.n_masked[0]) < len(ids), spill.tokens == len(ids))]

        assert_that(out.spills | beam.FlatMap(check), equal_to([("train", 1, 1, 1, 2, True, True)]))


def test_shuffle_and_pack_makes_one_shard_per_bucket_and_keeps_every_example(tmp_path: Path) -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer="t", max_length=32, bucket_tokens=64)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(40):
        ids = np.arange(int(rng.integers(3, 12)), dtype=np.int32) + 1000 * i
        examples.append((rng.bytes(16), ids))
    total = sum(len(ids) for _, ids in examples)
    spills = spill_examples(tmp_path, examples, files=6)
    n = bucket_count(total, 64)
    assert n > 1
    with pipeline() as p:
        shards = p | beam.Create(spills) | ShuffleAndPack(pack_options(config, pad_id=0))
        summary = shards | beam.Map(lambda s: (s.index, s.count, s.blocks.examples))
        counts = summary | beam.Map(lambda s: s[2]) | beam.CombineGlobally(sum)
        indices = summary | beam.Map(lambda s: (s[0], s[1]))
        assert_that(counts, equal_to([40]), label="all examples")
        assert_that(indices, equal_to([(i, n) for i in range(n)]), label="every bucket")


def test_buckets_do_not_depend_on_how_examples_were_spread_over_files(tmp_path: Path) -> None:
    """The same examples spilled into 1 or 5 files give the same buckets, in the same order."""
    rng = np.random.default_rng(1)
    examples = [(rng.bytes(16), rng.integers(0, 100, int(rng.integers(1, 9))).astype(np.int32)) for _ in range(300)]
    one = spill_examples(tmp_path / "one", examples, files=1)
    five = spill_examples(tmp_path / "five", examples, files=5)
    for index in range(4):
        a = read_bucket(("train", index, 4), one, with_trained=False)
        b = read_bucket(("train", index, 4), five, with_trained=False)
        assert len(a) > 0
        assert a.key_hi.tolist() == b.key_hi.tolist() and a.ids.tolist() == b.ids.tolist()
        assert a.key_hi.tolist() == sorted(a.key_hi.tolist())
    sizes = [len(read_bucket(("train", i, 4), five, with_trained=False)) for i in range(4)]
    assert sum(sizes) == 300


def test_batch_keys_equal_one_by_one_keys_and_depend_on_every_input() -> None:
    ids = np.arange(30, dtype=np.int32)
    offsets = np.array([0, 4, 4 + 11, 30])
    masked = np.array([1, 0, 7], np.int32)
    bounds = zip(offsets[:-1], offsets[1:], masked, strict=True)
    one_by_one = b"".join(example_key(ids[a:b], int(m), 0, 5) for a, b, m in bounds)
    assert example_keys(ids, offsets, masked, 5) == one_by_one
    base = example_key(ids[:4], 1, 0, 5)
    variants = [example_key(ids[:4], 2, 0, 5), example_key(ids[:4], 1, 1, 5), example_key(ids[:4], 1, 0, 6),
                example_key(ids[1:5], 1, 0, 5), example_key(ids[:4], b"\x80", 0, 5), example_key(ids[:4], 1, 0, -5)]
    assert len({base, *variants}) == 1 + len(variants) and all(len(k) == 16 for k in variants)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=40), st.integers(0, 3))
@settings(max_examples=100, deadline=None)
def test_batch_keys_with_repeated_masks_equal_one_by_one_keys(shapes: list[tuple[int, int]], seed: int) -> None:
    """Examples that share a masked length share a started hash (copied for each): each key is still its own."""
    lengths = np.array([length for length, _ in shapes], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.random.default_rng(len(shapes)).integers(0, 50, int(offsets[-1])).astype(np.int32)
    masked = np.array([mask for _, mask in shapes], np.int32)
    one_by_one = b"".join(example_key(ids[a:b], int(m), 0, seed)
                          for a, b, m in zip(offsets[:-1], offsets[1:], masked, strict=True))
    assert example_keys(ids, offsets, masked, seed) == one_by_one
