"""``--dedup exact`` across generations: key files (format and writers) and the drop of what earlier generations
hold, under TestPipeline pinned to the FnApiRunner."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from seqpack.schemas import DatasetFormatError
from seqpack.schemas.dedup_keys import KEY_BYTES, decode_keys, encode_keys, partition_of
from seqpack.schemas.layout import DEDUP_PARTITIONS, dedup_key_file, is_dedup_key_file
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.dedup import (
    DROPPED_REASON,
    KEYS_TAG,
    DropExactDuplicates,
    WriteKeyFiles,
    content_key,
    read_key_file,
    write_key_files,
)
from seqpack.transforms.render import RenderedPair


def pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=FnApiRunner())


def pair(i: int, origin: str) -> RenderedPair:
    return RenderedPair(f"source {i} = ", f"target {i}", origin)


def key_files_of(directory: Path) -> dict[str, bytes]:
    return {f"dedup/{p.name}": p.read_bytes() for p in sorted((directory / "dedup").glob("*"))}


def test_a_key_file_is_its_keys_sorted_once_each_16_bytes_apiece() -> None:
    keys = [os.urandom(KEY_BYTES) for _ in range(500)]
    data = encode_keys(keys + keys[:50])
    assert len(data) == KEY_BYTES * len(keys)
    assert list(decode_keys(data, where="k")) == sorted(keys), "bytewise order, duplicates removed"
    assert encode_keys(reversed(keys)) == data
    with pytest.raises(DatasetFormatError, match="k is damaged.*--rebuild"):
        list(decode_keys(data[:-1], where="k"))
    with pytest.raises(ValueError, match="16 bytes"):
        encode_keys([b"short"])


def test_partitions_spread_keys_and_names_are_recognised() -> None:
    keys = [os.urandom(KEY_BYTES) for _ in range(4000)]
    used = {partition_of(key) for key in keys}
    assert used == set(range(DEDUP_PARTITIONS))
    assert is_dedup_key_file("v000002/" + dedup_key_file(3))
    assert not is_dedup_key_file("v000002/" + dedup_key_file(3) + ".tmp-abc")
    assert not is_dedup_key_file("v000002/stats.json")


def test_the_job_and_a_driver_write_the_same_key_files(tmp_path: Path) -> None:
    """``WriteKeyFiles`` (workers) and ``write_key_files`` (a driver, as compaction does) agree byte for byte, and
    ``read_key_file`` reads back every key."""
    keys = [os.urandom(KEY_BYTES) for _ in range(300)]
    with pipeline() as p:
        written = p | beam.Create(keys) | WriteKeyFiles(str(tmp_path / "job"))
        assert_that(written.names | beam.Map(is_dedup_key_file), equal_to([True] * len({*map(partition_of, keys)})))
    names = write_key_files(reversed(keys), str(tmp_path / "driver"))
    assert key_files_of(tmp_path / "job") == key_files_of(tmp_path / "driver")
    assert sorted(key_files_of(tmp_path / "driver")) == names
    read = [key for name in names for key in read_key_file(str(tmp_path / "driver" / name))]
    assert sorted(read) == sorted(keys)
    assert sum(len(data) for data in key_files_of(tmp_path / "job").values()) == KEY_BYTES * len(keys)


def test_a_damaged_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "keys-00000.bin"
    path.write_bytes(b"x" * (KEY_BYTES * 3 + 5))
    with pytest.raises(DatasetFormatError, match=f"{path} is damaged: 53 bytes"):
        list(read_key_file(str(path)))


def run_dedup(elements: list[RenderedPair], earlier: list[str], *, kept: list[RenderedPair], dropped: int) -> None:
    """Check that ``DropExactDuplicates`` keeps ``kept``, outputs exactly their keys and counts ``dropped``."""
    with pipeline() as p:
        out = p | beam.Create(elements) | DropExactDuplicates(earlier)
        assert_that(out.kept, equal_to(kept), label="kept")
        assert_that(out[KEYS_TAG], equal_to([content_key(k) for k in kept]), label="keys of the kept records")
        counts = out[STATS_TAG] | beam.CombineGlobally(MergeStats()) | beam.Map(
            lambda stats: (stats["examples_dropped"], stats["dropped_by_reason"]))
        assert_that(counts, equal_to([(dropped, {DROPPED_REASON: dropped} if dropped else {})]), label="counted")


def test_records_an_earlier_generation_holds_are_dropped_and_counted(tmp_path: Path) -> None:
    earlier_pairs = [pair(i, f"old.jsonl:{i}") for i in range(10)]
    names = write_key_files([content_key(p) for p in earlier_pairs], str(tmp_path))
    new = [pair(i, f"b.jsonl:{i}") for i in range(5, 15)] + [pair(12, "a.jsonl:1"), pair(3, "a.jsonl:2")]
    kept = [pair(i, f"b.jsonl:{i}") for i in range(10, 15) if i != 12] + [pair(12, "a.jsonl:1")]
    run_dedup(new, [str(tmp_path / name) for name in names], kept=kept, dropped=len(new) - len(kept))


def test_without_earlier_generations_dedup_is_unchanged() -> None:
    run_dedup([pair(1, "b:1"), pair(1, "a:9"), pair(2, "a:3")], [], kept=[pair(1, "a:9"), pair(2, "a:3")], dropped=1)


def test_the_format_doc_gives_the_partition_function() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "format.md").read_text()
    assert f'`int.from_bytes(k[:4], "big") % {DEDUP_PARTITIONS}`' in doc
    key = bytes(range(16))
    assert partition_of(key) == int.from_bytes(key[:4], "big") % DEDUP_PARTITIONS
