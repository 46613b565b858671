"""ReadRecords on FnApiRunner: every record of every file arrives once, rejections on their own output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from seqpack.inputs import InputError, Record
from seqpack.transforms.read import ReadRecords, resolve_inputs


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(counter.committed for counter in counters)


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "a.jsonl").write_bytes(b'{"source": "a1", "target": "b1"}\nnot json\n\n{"source": "a2"}\n')
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"source": "g"}\n[1]\n'))
    (tmp_path / "c.csv").write_text("source,target\nc1,d1\nragged\n")
    pq.write_table(pa.Table.from_pylist([{"source": f"p{i}"} for i in range(3)]), tmp_path / "d.parquet")
    (tmp_path / "e.parquet").write_bytes(b"corrupt")
    return tmp_path


def test_read_records_emits_records_and_rejections(inputs: Path) -> None:
    files = resolve_inputs([str(inputs / "*.jsonl*"), str(inputs / "c.csv"), str(inputs / "*.parquet")])
    assert [Path(f.path).name for f in files] == ["a.jsonl", "b.jsonl.gz", "c.csv", "d.parquet", "e.parquet"]
    expected_records = [
        Record({"source": "a1", "target": "b1"}, f"{inputs}/a.jsonl:1"),
        Record({"source": "a2"}, f"{inputs}/a.jsonl:4"),
        Record({"source": "g"}, f"{inputs}/b.jsonl.gz:1"),
        Record({"source": "c1", "target": "d1"}, f"{inputs}/c.csv:2"),
        *(Record({"source": f"p{i}"}, f"{inputs}/d.parquet:{i + 1}") for i in range(3)),
    ]
    expected_rejected = [
        ("invalid_json", f"{inputs}/a.jsonl:2", b"not json"),
        ("not_an_object", f"{inputs}/b.jsonl.gz:2", b"[1]"),
        ("ragged_csv_row", f"{inputs}/c.csv:3", b"ragged"),
        ("unreadable_file", f"{inputs}/e.parquet", b""),
    ]
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
        read = pipeline | "Read" >> ReadRecords(files)
        assert_that(read.records | beam.FlatMap(list), equal_to(expected_records), label="Records")
        rejected = read.rejected | beam.Map(lambda r: (r.reason, r.origin, r.raw))
        assert_that(rejected, equal_to(expected_rejected), label="Rejected")
    assert _counter(pipeline.result, "records_read") == len(expected_records) + len(expected_rejected)
    assert _counter(pipeline.result, "records_rejected") == len(expected_rejected)


def test_read_records_applies_the_size_cap_and_unpacks_as_a_pair(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"source": "x" * 5000}) + "\n" + json.dumps({"source": "small"}) + "\n")
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
        records, rejected = pipeline | ReadRecords(resolve_inputs([str(path)]), max_record_bytes=1000)
        assert_that(records | beam.FlatMap(list), equal_to([Record({"source": "small"}, f"{path}:2")]), label="Records")
        assert_that(rejected | beam.Map(lambda r: r.reason), equal_to(["record_too_large"]), label="Rejected")


def test_resolve_inputs_fails_up_front_for_a_glob_matching_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.jsonl")])


def test_read_records_refuses_a_nonpositive_size_cap() -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        ReadRecords([], max_record_bytes=0)


def test_resolve_inputs_matches_a_bare_relative_glob(inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(inputs)
    assert [f.path for f in resolve_inputs(["*.jsonl", "c.csv"])] == ["a.jsonl", "c.csv"]
