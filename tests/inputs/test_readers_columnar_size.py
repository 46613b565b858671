"""--max-record-bytes holds for Parquet and Arrow rows too (issue 13, item 10): a huge cell is rejected, the
other rows of its batch are read, and the cell never comes into Python whole."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from helpers import flat

from seqpack.inputs import Record, Rejected, columnar, iter_file_lists
from seqpack.schemas.rejected import RAW_PREFIX_BYTES
from seqpack.transforms.read import beam_open

CAP = 1 << 20
HUGE = 20 << 20


def read(path: Path, **kwargs: Any) -> list[Record | Rejected]:
    return flat(iter_file_lists(str(path), beam_open, **kwargs))


def write(table: pa.Table, path: Path, kind: str) -> Path:
    if kind == "parquet":
        pq.write_table(table, path, row_group_size=3)
    elif kind == "arrow-file":
        feather.write_feather(table, path, compression="uncompressed", chunksize=3)
    else:
        with pa.ipc.new_stream(path, table.schema) as writer:
            writer.write_table(table, max_chunksize=3)
    return path


def pairs_with_a_huge_cell(row: int, rows: int = 7) -> pa.Table:
    sources = [f"s{n}" for n in range(1, rows + 1)]
    sources[row - 1] = "x" * HUGE
    return pa.table({"source": sources, "target": [f"t{n}" for n in range(1, rows + 1)]})


KINDS = [("parquet", "t.parquet"), ("arrow-file", "t.arrow"), ("arrow-stream", "t.arrow")]


@pytest.mark.parametrize(("kind", "name"), KINDS)
def test_a_huge_cell_is_rejected_and_the_other_rows_are_read(tmp_path: Path, kind: str, name: str) -> None:
    path = write(pairs_with_a_huge_cell(row=5), tmp_path / name, kind)
    items = read(path, max_record_bytes=CAP)
    assert [(i.origin, type(i).__name__) for i in items] == [
        (f"{path}:{n}", "Rejected" if n == 5 else "Record") for n in range(1, 8)
    ]
    assert items[5] == Record({"source": "s6", "target": "t6"}, f"{path}:6")
    rejected = items[4]
    assert isinstance(rejected, Rejected) and rejected.reason == "record_too_large"
    assert f"{HUGE + 2:,} bytes, more than max_record_bytes {CAP:,}" in rejected.detail
    assert len(rejected.raw) <= RAW_PREFIX_BYTES and rejected.raw.startswith(b'{"source": "xxxx')


def test_the_default_cap_applies(tmp_path: Path) -> None:
    path = write(pairs_with_a_huge_cell(row=1, rows=2), tmp_path / "t.parquet", "parquet")
    assert [type(i) for i in read(path, max_record_bytes=HUGE)] == [Rejected, Record]
    assert [type(i) for i in read(path, max_record_bytes=HUGE + 2)] == [Record, Record]


def test_nested_and_dictionary_cells_count_too(tmp_path: Path) -> None:
    """Chat messages (a list of structs) and dictionary-encoded text are measured by their text."""
    big = "y" * (2 * CAP)
    messages = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "q"}, {"role": "a", "content": big}]]
    table = pa.table(
        {
            "messages": messages + [[]],
            "tag": pa.array(["a", big, "a"]).dictionary_encode(),
            "n": [1, 2, 3],
        }
    )
    path = tmp_path / "chat.parquet"
    pq.write_table(table, path, use_dictionary=["tag"])
    items = read(path, max_record_bytes=CAP)
    assert [type(i) for i in items] == [Record, Rejected, Record]
    assert f"{4 * CAP + 1 + 4 + 1 + 8:,} bytes" in items[1].detail


def test_a_batch_larger_than_the_cap_with_rows_under_it_is_read_whole(tmp_path: Path) -> None:
    table = pa.table({"source": ["z" * 1000] * 50, "target": ["t"] * 50})
    path = write(table, tmp_path / "t.parquet", "parquet")
    assert all(isinstance(i, Record) for i in read(path, max_record_bytes=1100))
    assert [type(i) for i in read(path, max_record_bytes=1000)] == [Rejected] * 50


def test_the_huge_cell_never_comes_into_python_whole() -> None:
    """Measured on batches already in memory: reading a file through a Python stream makes Python bytes of it."""
    batches = pairs_with_a_huge_cell(row=2, rows=3).to_batches()
    tracemalloc.start()  # counts Python objects, not Arrow's buffers
    try:
        items = [item for items in columnar._iter_batches(batches, "t", CAP) for item in items]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [type(i) for i in items] == [Record, Rejected, Record]
    assert peak < 4 << 20, f"peak {peak:,} bytes of Python objects for a {HUGE:,}-byte cell"
