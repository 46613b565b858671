"""Beam transforms under TestPipeline pinned to the FnApiRunner (never the Prism download)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from seqpack.pipeline.config import RunConfig
from seqpack.readers import Record
from seqpack.templates import make_template
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.pack import ShuffleAndPack, bucket_count
from seqpack.transforms.render import REJECTED_TAG, RenderDoFn
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


def test_tokenize_emits_keyed_examples_with_masked_source(tokenizer_dir: Path) -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer=str(tokenizer_dir), max_length=64)
    with pipeline() as p:
        out = (
            p
            | beam.Create([[("Hello world = ", "Hello", "f:1")]])
            | beam.ParDo(TokenizeDoFn(config)).with_outputs(REJECTED_TAG, STATS_TAG, main="examples")
        )

        def check(batch: tuple) -> list[tuple]:
            split, examples = batch
            return [
                (split, len(key), int(np.frombuffer(ids, np.int32)[0]), int(np.frombuffer(ids, np.int32)[-1]),
                 0 < mask < len(ids) // 4)
                for key, ids, mask in examples
            ]

        assert_that(out.examples | beam.FlatMap(check), equal_to([("train", 16, 1, 2, True)]))


def test_shuffle_and_pack_makes_one_shard_per_bucket_and_keeps_every_example() -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer="t", max_length=32, bucket_tokens=64)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(40):
        ids = np.arange(int(rng.integers(3, 12)), dtype=np.int32) + 1000 * i
        examples.append((i.to_bytes(16, "big")[::-1], ids.tobytes(), 1))
    total = sum(len(e[1]) // 4 for e in examples)
    batches = [("train", examples[i : i + 7]) for i in range(0, len(examples), 7)]
    with pipeline() as p:
        shards = p | beam.Create(batches) | ShuffleAndPack(config, pad_id=0)
        summary = shards | beam.Map(lambda s: (s.index, s.count, s.blocks.examples))
        counts = summary | beam.Map(lambda s: s[2]) | beam.CombineGlobally(sum)
        indices = summary | beam.Map(lambda s: (s[0], s[1]))
        n = bucket_count(total, 64)
        assert_that(counts, equal_to([40]), label="all examples")
        assert_that(indices, equal_to([(i, n) for i in range(n)]), label="every bucket")
