"""Opening and checking datasets: every kind of bad directory or shard is refused with an error naming it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardgen import blocks_table, examples_in, make_examples, pack, write_dataset

from seqpack.dataset import ShardSet, ipc_batch_rows, open_manifest, verify_dataset
from seqpack.schemas import MANIFEST_NAME, DatasetFormatError

SHARD = "train/part-00000-of-00003.parquet"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write_dataset(
        str(tmp_path), {"train": make_examples(90, seed=2), "validation": make_examples(8, seed=3)}, rows_per_shard=8
    )
    return tmp_path


def rewrite_manifest(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((root / MANIFEST_NAME).read_text())
    edit(raw)
    (root / MANIFEST_NAME).write_text(json.dumps(raw))


def replace_shard(root: Path, relative: str, data: bytes) -> None:
    """Write new bytes for a shard and make the manifest agree on size and sha256 (a consistent lie)."""
    import hashlib

    (root / relative).write_bytes(data)

    def edit(raw: dict) -> None:
        for shard in raw["splits"]["train"]["shards"]:
            if shard["path"] == relative:
                shard["bytes"] = len(data)
                shard["sha256"] = hashlib.sha256(data).hexdigest()

    rewrite_manifest(root, edit)


# ------------------------------------------------------------------------------------------- manifest


def test_open_manifest_reads_what_was_written(dataset: Path) -> None:
    manifest = open_manifest(str(dataset))
    assert set(manifest.splits) == {"train", "validation"}
    assert manifest.splits["train"].shards[0].path == SHARD


def test_directory_without_manifest_is_refused_as_unfinished(dataset: Path) -> None:
    (dataset / MANIFEST_NAME).unlink()
    with pytest.raises(DatasetFormatError, match="no manifest.json: it is an unfinished run or not a seqpack"):
        open_manifest(str(dataset))


def test_directory_with_staging_is_reported_as_a_running_or_crashed_build(dataset: Path) -> None:
    (dataset / MANIFEST_NAME).unlink()
    (dataset / ".seqpack-staging").mkdir()
    with pytest.raises(DatasetFormatError, match="has not finished"):
        open_manifest(str(dataset))


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"nowhere does not exist"):
        open_manifest(str(tmp_path / "nowhere"))


def test_unknown_format_version_is_refused(dataset: Path) -> None:
    rewrite_manifest(dataset, lambda raw: raw.update(format_version=99))
    with pytest.raises(DatasetFormatError, match="format version 99"):
        open_manifest(str(dataset))


def test_manifest_with_another_schema_is_refused(dataset: Path) -> None:
    rewrite_manifest(dataset, lambda raw: raw["schema"][0].update(type="list<item: int64>"))
    with pytest.raises(DatasetFormatError, match="schema that does not match"):
        open_manifest(str(dataset))


def test_unknown_file_format_is_refused(dataset: Path) -> None:
    rewrite_manifest(dataset, lambda raw: raw.update(file_format="csv"))
    with pytest.raises(DatasetFormatError, match="file format 'csv'"):
        open_manifest(str(dataset))


@pytest.mark.parametrize("bad", ["../outside.parquet", "/etc/passwd", "train/../../x.parquet", "gs://b/x"])
def test_shard_paths_leaving_the_dataset_are_refused(dataset: Path, bad: str) -> None:
    rewrite_manifest(dataset, lambda raw: raw["splits"]["train"]["shards"][0].update(path=bad))
    with pytest.raises(DatasetFormatError, match="shard path"):
        open_manifest(str(dataset))


def test_unknown_split_lists_the_ones_there(dataset: Path) -> None:
    with pytest.raises(DatasetFormatError, match="no split 'test'; it has train, validation"):
        ShardSet.open(str(dataset), split="test")


# --------------------------------------------------------------------------------------------- verify


def test_verify_counts_what_it_checked(dataset: Path) -> None:
    manifest = open_manifest(str(dataset))
    summary = verify_dataset(str(dataset))
    shards = [s for split in manifest.splits.values() for s in split.shards]
    assert summary.shards == len(shards) == 4
    assert summary.bytes == sum(s.bytes for s in shards)
    assert summary.rows == sum(split.rows for split in manifest.splits.values())


def test_flipped_byte_is_caught_by_verify_and_named(dataset: Path) -> None:
    path = dataset / SHARD
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetFormatError, match=rf"(?s)1 of 4 shards.*{SHARD}: sha256 .* \(corrupt\)"):
        verify_dataset(str(dataset))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: sha256"):
        ShardSet.open(str(dataset), verify=True)


def test_truncated_shard_is_refused_on_open_and_by_verify(dataset: Path) -> None:
    path = dataset / SHARD
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: \d+ bytes, the manifest says \d+"):
        ShardSet.open(str(dataset))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: \d+ bytes.*truncated"):
        verify_dataset(str(dataset))


def test_truncated_shard_with_a_matching_manifest_fails_on_its_footer(dataset: Path) -> None:
    replace_shard(dataset, SHARD, (dataset / SHARD).read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: not a readable parquet file"):
        ShardSet.open(str(dataset))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: not a readable parquet file"):
        verify_dataset(str(dataset))


def test_missing_shard_is_named(dataset: Path) -> None:
    (dataset / SHARD).unlink()
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: missing"):
        ShardSet.open(str(dataset))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: missing"):
        verify_dataset(str(dataset))


def test_shard_with_a_wrong_schema_is_named_with_the_column(dataset: Path) -> None:
    table = pq.read_table(dataset / SHARD)
    wrong = table.set_column(0, "input_ids", table.column("input_ids").cast(pa.list_(pa.int64())))
    buffer = io.BytesIO()
    pq.write_table(wrong, buffer)
    replace_shard(dataset, SHARD, buffer.getvalue())
    message = rf"{SHARD}: column 'input_ids' has type list<\w+: int64>, expected list<item: int32>"
    with pytest.raises(DatasetFormatError, match=message):
        ShardSet.open(str(dataset))
    with pytest.raises(DatasetFormatError, match=message):
        verify_dataset(str(dataset))


def test_shard_with_other_rows_than_listed_is_refused(dataset: Path) -> None:
    rewrite_manifest(dataset, lambda raw: raw["splits"]["train"]["shards"][0].update(rows=3))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: 8 rows, the manifest says 3"):
        ShardSet.open(str(dataset))


# ------------------------------------------------------------------------------- filesystems, formats


def test_memory_filesystem_and_arrow_format_read_every_example() -> None:
    examples = make_examples(50, seed=5)
    write_dataset("memory://seqpack-io-test", {"train": examples}, file_format="arrow", row_group_size=3)
    shards = ShardSet.open("memory://seqpack-io-test")
    assert verify_dataset("memory://seqpack-io-test").shards == len(shards.shards)
    keys = []
    for unit in range(shards.num_units):
        for row in shards.read_unit(unit).to_pylist():
            keys += examples_in(row)
    assert sorted(keys) == sorted(e.key() for e in examples)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=8), st.sampled_from([None, "zstd"]))
def test_ipc_batch_rows_reads_lengths_from_metadata(lengths: list[int], compression: str | None) -> None:
    examples = make_examples(sum(lengths) + 1, seed=len(lengths))
    table = blocks_table(pack(examples, 64, "none"), 64, padded=False)
    buffer = io.BytesIO()
    with pa.ipc.new_file(buffer, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        start = 0
        for length in lengths:
            writer.write_table(table.slice(start, length))
            start += length
    reader = pa.ipc.open_file(pa.BufferReader(buffer.getvalue()))
    decoded = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    assert ipc_batch_rows(io.BytesIO(buffer.getvalue())) == decoded == [n for n in lengths if n]


def test_ipc_batch_rows_refuses_a_non_arrow_file() -> None:
    with pytest.raises(ValueError, match="magic"):
        ipc_batch_rows(io.BytesIO(b"PAR1" + b"\0" * 40))


def test_shards_load_with_hugging_face_datasets(dataset: Path) -> None:
    datasets = pytest.importorskip("datasets")
    files = sorted(str(p) for p in (dataset / "train").glob("*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    expected = pq.read_table(files).to_pylist()
    assert loaded.column_names == ["input_ids", "labels", "attention_mask", "position_ids", "seq_lens"]
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        assert got == want
        assert np.sum(got["attention_mask"]) == sum(got["seq_lens"])
