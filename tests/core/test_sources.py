"""A mixture's contract pieces alone: source configs, the stats' per-source block, the manifest's sources and the
shard schema, with older files (no sources) read as before."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.example_columns import ExampleBuffer
from seqpack.schemas import DatasetFormatError, Manifest, TokenizerInfo
from seqpack.schemas import stats as stats_format
from seqpack.schemas.columns import BLOCK_SCHEMA, SOURCE_ID, blocks_to_table, shard_schema
from seqpack.schemas.manifest import schema_description
from seqpack.sources import SourceConfig


def mixture(**options: object) -> RunConfig:
    sources = (SourceConfig(name="code", inputs=("c/*.jsonl",), template="alpaca", weight=0.3),
               SourceConfig(name="chat", inputs=("d/*.jsonl",), template="chat", min_target_tokens=2))
    return RunConfig(**{"inputs": [], "output": "o", "tokenizer": "t", "sources": sources, **options})


def test_a_mixture_is_each_source_as_a_run_of_its_own() -> None:
    config = mixture(max_length=512, seed=4)
    config.validate()
    assert config.inputs == ["c/*.jsonl", "d/*.jsonl"]
    code, chat = config.per_source()
    assert (code.template, code.inputs, code.max_length, code.seed, code.sources) == (
        "alpaca", ["c/*.jsonl"], 512, 4, ())
    assert (chat.train_on, chat.min_target_tokens) == ("assistant", 2)
    assert RunConfig(**json.loads(json.dumps(config.to_dict()))).sources == config.sources, "as a manifest has it"
    assert RunConfig(inputs=["x"], output="o", tokenizer="t").per_source()[0].inputs == ["x"]


@pytest.mark.parametrize(("options", "message"), [
    ({"inputs": ["z"]}, "not --input"),
    ({"template": "alpaca"}, "not --template"),
    ({"weight_by": "bytes"}, "--weight-by must be one of tokens, examples"),
    ({"mix_total_tokens": 0}, "--mix-total-tokens must be positive"),
    ({"max_length": 4}, "--max-length must be at least 8"),
])
def test_a_bad_mixture_says_what_to_change(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        mixture(**options).validate()


def test_stats_merge_per_source_and_older_files_parse() -> None:
    part = stats_format.for_source({**stats_format.empty_stats(), "records_read": 3, "examples_by_split": {
        "train": 2, "validation": 1}}, "code")
    merged = stats_format.merge_stats([part, part, stats_format.empty_stats()])
    assert merged["sources"]["code"]["records_read"] == 6 and merged["sources"]["code"]["examples_written"] == 6
    assert "sources" not in stats_format.merge_stats([stats_format.empty_stats()]), "no mixture, no block"
    older = stats_format.to_json(stats_format.finalize(stats_format.empty_stats()))
    assert "sources" not in stats_format.parse(older, "stats.json")
    bad = json.loads(older) | {"sources": {"code": {"records_read": -1}}}
    with pytest.raises(DatasetFormatError, match="sources is not a mapping"):
        stats_format.parse(json.dumps(bad), "stats.json")


def _manifest(sources: list[dict]) -> Manifest:
    tokenizer = TokenizerInfo(name="t", vocab_size=10, pad_id=0, bos_id=None, eos_id=1, fingerprint="f")
    return Manifest(max_length=8, packing="bfd", file_format="parquet", tokenizer=tokenizer, splits={}, config={},
                    created_by="test", sources=sources, schema=schema_description(bool(sources)))


def test_the_manifest_lists_sources_and_reads_older_versions() -> None:
    sources = [{"id": 0, "name": "code", "weight": 0.3}, {"id": 1, "name": "chat", "weight": 0.7}]
    manifest = Manifest.from_json(_manifest(sources).to_json())
    assert manifest.source_names == ["code", "chat"] and manifest.schema[-1]["name"] == SOURCE_ID
    older = json.loads(_manifest([]).to_json())
    older.pop("sources")
    older["format_version"] = 2
    assert Manifest.from_json(json.dumps(older)).sources == []
    for broken in ([{"id": 1, "name": "code"}], [{"id": 0, "name": "a"}, {"id": 1, "name": "a"}]):
        with pytest.raises(DatasetFormatError, match="ids 0, 1"):
            Manifest.from_json(json.dumps(json.loads(_manifest(sources).to_json()) | {"sources": broken}))
    without_column = json.loads(_manifest(sources).to_json()) | {"schema": schema_description(False)}
    with pytest.raises(DatasetFormatError, match="schema"):
        Manifest.from_json(json.dumps(without_column))


def test_the_source_column_only_in_a_mixture_aligned_with_seq_lens() -> None:
    arrays = {"row_offsets": np.array([0, 4]), "input_ids": np.arange(4), "labels": np.arange(4),
              "attention_mask": np.ones(4), "position_ids": np.array([0, 1, 0, 1]),
              "seq_len_offsets": np.array([0, 2]), "seq_lens": np.array([2, 2])}
    assert blocks_to_table(**arrays).schema == BLOCK_SCHEMA == shard_schema(False)
    table = blocks_to_table(**arrays, source_ids=np.array([1, 0]))
    assert table.schema == shard_schema(True) and table.column(SOURCE_ID).to_pylist() == [[1, 0]]


def test_equal_keys_of_two_sources_sort_by_source() -> None:
    buffer = ExampleBuffer()
    for ids in ([7, 8], [5, 6, 9]):
        buffer.add(bytes(16), np.array(ids, np.int32))
    columns = buffer.build(sort=False)
    tagged = replace(columns, source=np.array([1, 0], np.int16))
    assert tagged.sorted_by_key().source.tolist() == [0, 1]
    assert tagged.take(np.array([1, 0])).sorted_by_key().example_ids(0).tolist() == [5, 6, 9]


def test_a_unit_whose_source_ids_do_not_match_its_examples_is_corrupt() -> None:
    from seqpack.dataset.shards import _unit_problem

    arrays = {"row_offsets": np.array([0, 4]), "input_ids": np.arange(4), "labels": np.arange(4),
              "attention_mask": np.ones(4), "position_ids": np.array([0, 1, 0, 1]),
              "seq_len_offsets": np.array([0, 2]), "seq_lens": np.array([2, 2])}
    unit = blocks_to_table(**arrays, source_ids=np.array([1, 0]))
    assert _unit_problem(unit) is None
    one_example = {**arrays, "seq_len_offsets": np.array([0, 1]), "seq_lens": np.array([4])}
    one_id = blocks_to_table(**one_example, source_ids=np.array([1])).column(SOURCE_ID)
    assert _unit_problem(unit.set_column(5, SOURCE_ID, one_id)) == f"rows of {SOURCE_ID} and seq_lens differ in length"
