"""Opening and checking datasets: every kind of bad directory or shard is refused with an error naming it."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shardgen import blocks_table, examples_in, make_examples, pack, write_dataset

from seqpack.dataset import ShardSet, data_files, ipc_batch_rows, open_manifest, verify_dataset
from seqpack.schemas import MANIFEST_NAME, DatasetFormatError

SHARD = "train/part-00000-of-00003.parquet"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    write_dataset(
        str(tmp_path), {"train": make_examples(90, seed=2), "validation": make_examples(8, seed=3)}, rows_per_shard=8
    )
    return tmp_path


def rewrite_manifest(root: Path, edit, *, consistent: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Edit the manifest; ``consistent``: its one generation lists the same (edited) shards, as a careful liar's."""
    raw = json.loads((root / MANIFEST_NAME).read_text())
    edit(raw)
    if consistent and len(raw["generations"]) == 1:
        raw["generations"][0]["splits"] = raw["splits"]
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
    def edit(raw: dict) -> None:  # a consistent lie: the generation lists the same path
        for listing in (raw, raw["generations"][0]):
            listing["splits"]["train"]["shards"][0].update(path=bad)

    rewrite_manifest(dataset, edit)
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
    def edit(raw: dict) -> None:  # a consistent manifest: the split's total agrees
        raw["splits"]["train"]["shards"][0]["rows"] += 1
        raw["splits"]["train"]["rows"] += 1

    rewrite_manifest(dataset, edit)
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: 8 rows, the manifest says 9"):
        ShardSet.open(str(dataset))
    with pytest.raises(DatasetFormatError, match=rf"{SHARD}: 8 rows, the manifest says 9"):
        verify_dataset(str(dataset))


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


@pytest.mark.parametrize("file_format", ["parquet", "arrow"])
def test_a_unit_read_with_some_columns_holds_those_columns_of_the_whole_unit(tmp_path: Path, file_format: str) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(30, seed=6)}, file_format=file_format, row_group_size=4)
    shards = ShardSet.open(str(tmp_path))
    for unit in range(shards.num_units):
        whole = shards.read_unit(unit)
        assert shards.read_unit(unit, columns=["seq_lens"]).equals(whole.select(["seq_lens"]))
        assert shards.read_unit(unit, columns=["labels", "input_ids"]).equals(whole.select(["labels", "input_ids"]))


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


def test_data_files_gives_hugging_face_datasets_only_the_committed_shards(tmp_path: Path) -> None:
    """A glob of the directory also takes the shards a crashed or running commit left; data_files does not."""
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    manifest = write_dataset(str(out), {"train": make_examples(90, seed=2)}, rows_per_shard=8, revision=2)
    write_dataset(str(tmp_path / "crashed"), {"train": make_examples(40, seed=9)}, rows_per_shard=8, revision=3)
    shutil.move(tmp_path / "crashed" / "v000003", out / "v000003")  # a later commit, killed before its manifest
    files = data_files(str(out))
    assert files == [f"{out}/{shard.path}" for shard in manifest.splits["train"].shards]
    assert len(list(out.glob("*/train/*.parquet"))) > len(files)
    loaded = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    expected = pq.read_table(files).to_pylist()
    assert loaded.column_names == ["input_ids", "labels", "attention_mask", "position_ids", "seq_lens"]
    assert len(loaded) == len(expected) == manifest.splits["train"].rows
    for got, want in zip(loaded, expected, strict=True):
        assert got == want
        assert np.sum(got["attention_mask"]) == sum(got["seq_lens"])
    with pytest.raises(DatasetFormatError, match="no split 'test'; it has train"):
        data_files(str(out), "test")


def test_data_files_keeps_the_url_the_user_gave() -> None:
    write_dataset("memory://seqpack-data-files/out", {"train": make_examples(20, seed=1)}, revision=1)
    assert data_files("memory://seqpack-data-files/out/", "train") == [
        "memory://seqpack-data-files/out/v000001/train/part-00000-of-00001.parquet"
    ]


# ------------------------------------------------------------------------ manifests that cannot be true


def test_manifest_json_that_is_a_directory_is_refused(dataset: Path) -> None:
    (dataset / MANIFEST_NAME).unlink()
    (dataset / MANIFEST_NAME).mkdir()
    (dataset / MANIFEST_NAME / "x").write_text("{}")
    for check in (open_manifest, verify_dataset, ShardSet.open, data_files):
        with pytest.raises(DatasetFormatError, match="manifest.json is a directory, not a file"):
            check(str(dataset))


def test_manifest_json_that_is_a_directory_on_an_object_store_is_refused() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/seqpack-manifest-dir/out/manifest.json/part", b"{}")
    with pytest.raises(DatasetFormatError, match="manifest.json is a directory, not a file"):
        verify_dataset("memory://seqpack-manifest-dir/out")


def test_seqpack_verify_refuses_a_manifest_directory(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seqpack.cli.main import main

    (dataset / MANIFEST_NAME).unlink()
    (dataset / MANIFEST_NAME).mkdir()
    assert main(["verify", str(dataset)]) != 0
    assert "manifest.json is a directory" in capsys.readouterr().err


def shard0(raw: dict) -> dict:
    return raw["splits"]["train"]["shards"][0]


def listed_twice(raw: dict) -> None:
    split = raw["splits"]["train"]
    split["shards"].append(dict(split["shards"][0]))
    for total in ("rows", "examples", "tokens"):
        split[total] += split["shards"][0][total]


def listed_in_two_splits(raw: dict) -> None:
    copy = dict(shard0(raw))
    raw["splits"]["validation"]["shards"].append(copy)
    for total in ("rows", "examples", "tokens"):
        raw["splits"]["validation"][total] += copy[total]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (listed_twice, rf"lists {SHARD} twice"),
        (listed_in_two_splits, rf"lists {SHARD} twice"),
        (lambda raw: shard0(raw).update(rows=-1), "rows is -1; it must be an integer from 0"),
        (lambda raw: shard0(raw).update(examples=-3), "examples is -3; it must be an integer from 0"),
        (lambda raw: shard0(raw).update(tokens=-5), "tokens is -5"),
        (lambda raw: shard0(raw).update(bytes=-1), "bytes is -1"),
        (lambda raw: shard0(raw).update(bytes=2**70), "bytes is 1180591620717411303424"),
        (lambda raw: shard0(raw).update(rows=True), "rows is True"),
        (lambda raw: shard0(raw).update(tokens=12.5), "tokens is 12.5"),
        (lambda raw: shard0(raw).update(tokens="12"), "tokens is '12'"),
        (lambda raw: shard0(raw).update(examples=10**6), "1,000,000 examples and .* rows <= examples <= tokens"),
        (lambda raw: shard0(raw).update(tokens=10**9), r"<= tokens <= rows \* max_length \(512\)"),
        (lambda raw: shard0(raw).update(rows=0), "has 0 rows"),
        (lambda raw: shard0(raw).update(sha256="abc"), "sha256 is 'abc', not 64 lowercase hex digits"),
        (lambda raw: shard0(raw).update(path=7), "not a string: 7"),
        (lambda raw: raw["splits"]["train"].update(rows=1), "split 'train' says 1 rows but its 3 shards add up"),
        (lambda raw: raw["splits"]["train"].update(tokens=-1), "split 'train' tokens is -1"),
        (lambda raw: raw["splits"]["validation"].update(examples=9), "'validation' says 9 examples but its 1"),
        (lambda raw: raw.update(max_length=0), "max_length is 0; it must be at least 1"),
        (lambda raw: raw.update(files=["v1/stats.json", "v1/stats.json"]), "lists v1/stats.json twice"),
    ],
)
def test_manifest_with_impossible_listing_is_refused_by_every_reader(
    dataset: Path, edit: Callable[[dict], None], message: str
) -> None:
    rewrite_manifest(dataset, edit)
    for check in (open_manifest, verify_dataset, ShardSet.open, data_files):
        with pytest.raises(DatasetFormatError, match=message):
            check(str(dataset))


def test_verify_counts_examples_and_tokens_in_the_files(dataset: Path) -> None:
    """A manifest that adds up but lies about a shard's examples and tokens: only the file can tell."""

    def edit(raw: dict) -> None:
        for key in ("examples", "tokens"):
            shard0(raw)[key] += 1
            raw["splits"]["train"][key] += 1

    manifest = open_manifest(str(dataset))
    shard = manifest.splits["train"].shards[0]
    rewrite_manifest(dataset, edit)
    ShardSet.open(str(dataset))  # the cheap open checks rows only
    message = rf"{SHARD}: {shard.examples} examples and {shard.tokens} tokens, the manifest says {shard.examples + 1}"
    with pytest.raises(DatasetFormatError, match=message):
        verify_dataset(str(dataset))
