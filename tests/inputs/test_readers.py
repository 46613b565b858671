"""seqpack.inputs: every format round-trips with the right origins, and hostile input never crashes or vanishes."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import logging
import lzma
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from helpers import flat
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.inputs import (
    InputError,
    InputFile,
    Record,
    Rejected,
    detect_format,
    expand_inputs,
    iter_file_lists,
    iter_input_lists,
    streams,
)
from seqpack.schemas.rejected import RAW_PREFIX_BYTES, READ_REASONS
from seqpack.transforms.read import beam_match, beam_open

HOSTILE = Path(__file__).parent.parent / "data" / "hostile"
PAIRS = [
    {"source": "Hello", "target": "Bonjour"},
    {"source": "Thank you", "target": "Merci"},
    {"source": 'multi\nline, "quoted"', "target": "ligne\r\nsuivante"},
]


def read(path: Path | str, **kwargs: Any) -> list[Record | Rejected]:
    return flat(iter_file_lists(str(path), beam_open, **kwargs))


def summary(items: list[Record | Rejected]) -> list[tuple[str, str]]:
    """(origin, "record" or reason) per item, the shape most assertions need."""
    return [(i.origin, "record" if isinstance(i, Record) else i.reason) for i in items]


def expand(*patterns: str) -> list[InputFile]:
    return expand_inputs(list(patterns), match=beam_match, open_binary=beam_open)


# --- formats round-trip --------------------------------------------------------------------------------------


def test_jsonl_round_trips_with_line_origins(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n")
    items = read(path)
    assert items == [Record(p, f"{path}:{n}") for n, p in enumerate(PAIRS, 1)]


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_compressed_jsonl_is_decompressed_by_suffix(tmp_path: Path, suffix: str, compress: Any) -> None:
    path = tmp_path / f"pairs.jsonl{suffix}"
    path.write_bytes(compress("".join(json.dumps(p) + "\n" for p in PAIRS).encode()))
    assert [i.fields for i in read(path)] == PAIRS
    assert read(path)[1].origin == f"{path}:2"


def test_zstd_jsonl(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "pairs.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(json.dumps(PAIRS[0]).encode() + b"\n"))
    assert read(path) == [Record(PAIRS[0], f"{path}:1")]


def test_json_array_round_trips_with_element_origins(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS, indent=2))
    assert read(path) == [Record(p, f"{path}:{n}") for n, p in enumerate(PAIRS, 1)]


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text("\n" + "\n".join(json.dumps(p) for p in PAIRS))
    assert read(path) == [Record(p, f"{path}:{n}") for n, p in enumerate(PAIRS, 2)]


def test_csv_round_trips_with_the_line_where_each_row_starts(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, ["source", "target"])
        writer.writeheader()
        writer.writerows(PAIRS)
    # header line 1, then rows at lines 2 and 3; the third row starts on line 4 (its fields span lines)
    assert read(path) == [Record(PAIRS[0], f"{path}:2"), Record(PAIRS[1], f"{path}:3"), Record(PAIRS[2], f"{path}:4")]


def test_tsv_values_are_strings_and_quotes_are_literal(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b'source\ttarget\tn\n"He said\t"hi\t3\n')
    assert read(path) == [Record({"source": '"He said', "target": '"hi', "n": "3"}, f"{path}:2")]


def test_parquet_is_read_across_row_groups_with_row_origins(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    rows = [{"source": f"s{i}", "target": f"t{i}"} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=700)
    assert pq.ParquetFile(path).num_row_groups == 4
    items = read(path)
    assert items == [Record(r, f"{path}:{n}") for n, r in enumerate(rows, 1)]


@pytest.mark.parametrize("kind", ["file", "stream"])
def test_arrow_file_and_stream_formats(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "pairs.arrow"
    table = pa.Table.from_pylist(PAIRS)
    if kind == "file":
        feather.write_feather(table, path, compression="uncompressed")
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    assert read(path) == [Record(p, f"{path}:{n}") for n, p in enumerate(PAIRS, 1)]


def test_saved_hf_dataset_expands_to_its_arrow_files(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    directory = tmp_path / "saved"
    datasets.Dataset.from_dict({"source": ["a", "b"], "target": ["x", "y"]}).save_to_disk(str(directory))
    [input_file] = expand(str(directory))
    assert input_file.fmt == "arrow" and input_file.label == str(directory)
    items = flat(iter_input_lists(input_file, beam_open))
    assert items == [
        Record({"source": "a", "target": "x"}, f"{directory}:1"),
        Record({"source": "b", "target": "y"}, f"{directory}:2"),
    ]


def test_saved_hf_dataset_dict_expands_every_split_with_split_origins(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    directory = tmp_path / "saved_dict"
    train = datasets.Dataset.from_dict({"source": ["a", "b", "c"], "target": ["x", "y", "z"]})
    datasets.DatasetDict({"train": train, "test": train.select([2])}).save_to_disk(
        str(directory), num_shards={"train": 2, "test": 1}
    )
    files = expand(str(directory) + "/")
    assert [(f.split, f.path.rsplit("/", 1)[1]) for f in files] == [
        ("test", "data-00000-of-00001.arrow"),
        ("train", "data-00000-of-00002.arrow"),
        ("train", "data-00001-of-00002.arrow"),
    ]
    origins = [i.origin for f in files for i in flat(iter_input_lists(f, beam_open))]
    assert origins == [
        f"{directory}[test]:1",
        f"{directory}[train]/data-00000-of-00002.arrow:1",
        f"{directory}[train]/data-00000-of-00002.arrow:2",
        f"{directory}[train]/data-00001-of-00002.arrow:1",
    ]


# --- hostile input -------------------------------------------------------------------------------------------

EXPECTED = json.loads((HOSTILE / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_corpus(name: str) -> None:
    items = read(HOSTILE / name, label=name)
    got = [
        [int(i.origin.rpartition(":")[2]) if ":" in i.origin else None, "record" if isinstance(i, Record) else i.reason]
        for i in items
    ]
    assert got == EXPECTED[name]
    assert all(isinstance(i, Record) or (i.reason in READ_REASONS and i.detail) for i in items)


def test_hostile_corpus_covers_every_fixture() -> None:
    fixtures = {p.name for p in HOSTILE.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".tsv")}
    assert fixtures - {"expected.json"} == set(EXPECTED)


def test_rejected_jsonl_lines_keep_their_exact_bytes() -> None:
    lines = (HOSTILE / "invalid_utf8.jsonl").read_bytes().split(b"\n")
    for item in read(HOSTILE / "invalid_utf8.jsonl"):
        if isinstance(item, Rejected):
            assert item.raw == lines[int(item.origin.rpartition(":")[2]) - 1]


def test_wrong_types_and_nulls_pass_through_for_the_renderer_to_judge() -> None:
    items = read(HOSTILE / "wrong_types.jsonl") + read(HOSTILE / "nulls_and_empty.jsonl")
    fields = [i.fields for i in items]
    assert fields[0] == {"source": 1, "target": ["x"]}
    assert fields[3] == {"source": None, "target": None} and fields[4] == {} and fields[5]["target"] == ""


def test_bom_and_crlf_are_invisible_in_fields() -> None:
    assert [i.fields for i in read(HOSTILE / "bom_crlf.jsonl")] == [
        {"source": "a", "target": "b"},
        {"source": "c", "target": "d"},
    ]
    assert [i.fields for i in read(HOSTILE / "bom_crlf.csv")] == [
        {"source": "a, with comma", "target": "b"},
        {"source": 'say "hi"', "target": "c"},
    ]


def _big_line_file(tmp_path: Path, line_bytes: int) -> Path:
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as out:
        out.write(b'{"source": "before"}\n')
        out.write(b'{"source": "' + b"x" * line_bytes + b'"}\n')
        out.write(b'{"source": "after"}\n')
    return path


def test_record_over_the_size_cap_is_rejected_with_a_prefix_and_reading_goes_on(tmp_path: Path) -> None:
    path = _big_line_file(tmp_path, 3 << 20)
    items = read(path, max_record_bytes=1 << 20)
    assert summary(items) == [(f"{path}:1", "record"), (f"{path}:2", "record_too_large"), (f"{path}:3", "record")]
    assert items[1].raw == (b'{"source": "' + b"x" * (3 << 20))[: RAW_PREFIX_BYTES]
    assert "3,145,742 bytes" in items[1].detail
    assert items[2].fields == {"source": "after"}


def test_a_huge_record_never_sits_in_memory_whole(tmp_path: Path) -> None:
    path = _big_line_file(tmp_path, 40 << 20)
    tracemalloc.start()
    try:
        items = read(path, max_record_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [i.reason for i in items if isinstance(i, Rejected)] == ["record_too_large"]
    assert peak < 8 << 20, f"peak {peak:,} bytes while reading a 40 MiB line"


def test_record_just_under_the_cap_is_parsed(tmp_path: Path) -> None:
    path = _big_line_file(tmp_path, (1 << 20) - 20)
    assert [s for _, s in summary(read(path, max_record_bytes=1 << 20))] == ["record"] * 3


def test_csv_row_run_on_by_an_unclosed_quote_stays_bounded_and_reading_resumes(tmp_path: Path) -> None:
    path = tmp_path / "runon.csv"
    body = b'source,target\na,"never closed\n' + b"filler line\n" * 200 + b"b,c\n"
    path.write_bytes(body)
    items = read(path, max_record_bytes=1000)
    assert summary(items)[0] == (f"{path}:2", "record_too_large")
    assert items[-1] == Record({"source": "b", "target": "c"}, f"{path}:203")
    assert all(isinstance(i, Rejected) for i in items[:-1])


def test_json_array_element_over_the_cap_is_stepped_over_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b'[{"source": "a"}, {"source": "' + b"x" * (3 << 20) + b'"}, {"source": "b"}]')
    items = read(path, max_record_bytes=1 << 20)
    assert summary(items) == [(f"{path}:1", "record"), (f"{path}:2", "record_too_large"), (f"{path}:3", "record")]
    assert items[1].raw == (b'{"source": "' + b"x" * (3 << 20))[: RAW_PREFIX_BYTES]
    assert f"{(3 << 20) + 14:,} bytes, more than max_record_bytes" in items[1].detail


def test_a_huge_json_array_element_never_sits_in_memory_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as out:
        out.write(b'[{"source": "a"}, {"source": "' + b"x" * (40 << 20) + b'"}, {"source": "b"}]')
    tracemalloc.start()
    try:
        items = read(path, max_record_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [s for _, s in summary(items)] == ["record", "record_too_large", "record"]
    assert peak < 16 << 20, f"peak {peak:,} bytes while stepping over a 40 MiB element"


def test_json_array_element_over_the_cap_that_fits_a_read_is_skipped_alone(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b'[{"source": "' + b"x" * 3000 + b'"}, {"source": "b"}]')
    items = read(path, max_record_bytes=1000)
    assert summary(items) == [(f"{path}:1", "record_too_large"), (f"{path}:2", "record")]


def test_corrupt_parquet_is_one_unreadable_file_rejection(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 100 + b"PAR1")
    [item] = read(path)
    assert isinstance(item, Rejected) and item.reason == "unreadable_file" and item.origin == str(path)
    assert "before any record" in item.detail


def test_truncated_parquet_is_rejected_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS * 100), path)
    path.write_bytes(path.read_bytes()[:-100])
    assert summary(read(path)) == [(str(path), "unreadable_file")]


def test_parquet_with_the_wrong_schema_passes_its_columns_through(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"question": ["q"], "n": [3], "tags": [["a", "b"]], "missing": [None]}), path)
    assert read(path) == [Record({"question": "q", "n": 3, "tags": ["a", "b"], "missing": None}, f"{path}:1")]


def test_empty_parquet_and_arrow_files_yield_nothing(tmp_path: Path) -> None:
    empty = pa.table({"source": pa.array([], pa.string())})
    pq.write_table(empty, tmp_path / "e.parquet")
    feather.write_feather(empty, tmp_path / "e.arrow")
    assert read(tmp_path / "e.parquet") == [] and read(tmp_path / "e.arrow") == []


def test_garbage_arrow_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "junk.arrow"
    path.write_bytes(b"not arrow at all" * 10)
    assert summary(read(path)) == [(str(path), "unreadable_file")]


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", lambda data: bz2.compress(data, 1))])
def test_a_truncated_compressed_file_keeps_the_records_before_the_damage_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, compress: Any
) -> None:
    """Through the pipeline's own opener: Beam's decompression would end the stream quietly at the cut."""
    monkeypatch.setattr(streams, "READ_CHUNK", 4096)  # so records are read before the damaged part
    path = tmp_path / f"cut.jsonl{suffix}"
    data = compress("".join(json.dumps({"n": i}) + "\n" for i in range(20000)).encode())
    path.write_bytes(data[: len(data) // 2])
    items = flat(iter_file_lists(str(path), beam_open))
    assert isinstance(items[-1], Rejected) and items[-1].reason == "unreadable_file"
    assert all(isinstance(i, Record) for i in items[:-1]) and len(items) > 100
    assert f"after {len(items) - 1:,} records" in items[-1].detail


def test_file_that_vanished_after_listing_is_rejected(tmp_path: Path) -> None:
    assert summary(read(tmp_path / "gone.jsonl")) == [(str(tmp_path / "gone.jsonl"), "unreadable_file")]


def test_max_record_bytes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        read(HOSTILE / "empty.jsonl", max_record_bytes=0)


# --- fuzzing -------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None)


@FUZZ
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    chunk=st.integers(1, 64),
    max_bytes=st.sampled_from([8, 30, 1 << 20]),
)
def test_fuzz_every_nonblank_line_is_one_record_or_one_rejection(
    lines: list[bytes], chunk: int, max_bytes: int
) -> None:
    """Arbitrary bytes, split at arbitrary chunk boundaries: the counts add up and raw is the line's bytes."""
    items = _read_bytes(b"\n".join(lines), "jsonl", chunk, max_record_bytes=max_bytes)
    # a line over the cap is rejected unread, even one of only blanks: it is never silently skipped
    counted = [n for n, line in enumerate(lines, 1) if line.rstrip(b"\r").strip() or len(line) > max_bytes]
    assert [int(i.origin.split(":")[1]) for i in items] == counted
    for item, number in zip(items, counted, strict=True):
        line = lines[number - 1]
        if len(line) > max_bytes:
            assert isinstance(item, Rejected) and item.reason == "record_too_large" and item.raw == line
        elif isinstance(item, Record):
            assert json.loads(line.decode("utf-8")) == item.fields
        else:
            assert item.reason in READ_REASONS and item.raw == line.removesuffix(b"\r")


@FUZZ
@given(values=st.lists(json_values, max_size=12), chunk=st.integers(1, 64), crlf=st.booleans())
def test_fuzz_json_values_in_lines_and_arrays(values: list[Any], chunk: int, crlf: bool) -> None:
    """Objects become records equal to the value, anything else not_an_object; read through tiny chunks."""
    expected = ["record" if isinstance(v, dict) else "not_an_object" for v in values]
    jsonl = ("\r\n" if crlf else "\n").join(json.dumps(v) for v in values).encode()
    array = json.dumps(values, indent=1 if crlf else None).encode()
    for fmt, data in (("jsonl", jsonl), ("json", array)):
        items = _read_bytes(data, fmt, chunk)
        assert [s for _, s in summary(items)] == expected, fmt
        assert [i.fields for i in items if isinstance(i, Record)] == [v for v in values if isinstance(v, dict)]


@FUZZ
@given(
    sizes=st.lists(st.integers(0, 120), max_size=12),
    chunk=st.integers(1, 64),
    max_bytes=st.sampled_from([40, 80]),
)
def test_fuzz_json_array_size_cap(sizes: list[int], chunk: int, max_bytes: int) -> None:
    """Elements over the cap are rejected alone, whether or not they outgrow a read; every other element
    arrives intact and in order."""
    values = [{"s": "x" * n} for n in sizes]
    items = _read_bytes(json.dumps(values).encode(), "json", chunk, max_record_bytes=max_bytes)
    assert [int(i.origin.rpartition(":")[2]) for i in items] == list(range(1, len(values) + 1))
    for value, item in zip(values, items, strict=True):
        if isinstance(item, Record):
            assert len(json.dumps(value)) <= max_bytes and item.fields == value
        else:
            assert len(json.dumps(value)) > max_bytes and item.reason == "record_too_large"
            assert item.raw == json.dumps(value).encode()[: RAW_PREFIX_BYTES]


text_cells = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@FUZZ
@given(rows=st.lists(st.tuples(text_cells, text_cells), max_size=10), chunk=st.integers(1, 64))
def test_fuzz_csv_round_trips_with_start_lines(rows: list[tuple[str, str]], chunk: int) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["source", "target"])
    starts = []
    for row in rows:
        starts.append(out.getvalue().count("\n") + 1)
        writer.writerow(row)
    items = _read_bytes(out.getvalue().encode(), "csv", chunk)
    assert items == [Record({"source": s, "target": t}, f"f:{n}") for (s, t), n in zip(rows, starts, strict=True)]


def _read_bytes(data: bytes, fmt: str, chunk: int, **kwargs: Any) -> list[Record | Rejected]:
    original = streams.READ_CHUNK
    streams.READ_CHUNK = chunk  # exercise every chunk boundary: split lines, numbers, UTF-8 sequences
    try:
        return flat(iter_file_lists("f", lambda _: io.BytesIO(data), fmt, **kwargs))
    finally:
        streams.READ_CHUNK = original


# --- formats and inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("gs://b/a.NDJSON.gz", "jsonl"),
        ("a.json.zst", "json"),
        ("a.parquet", "parquet"),
        ("s3://b/x.arrow", "arrow"),
        ("a.csv.bz2", "csv"),
        ("a.tsv.xz", "tsv"),
    ],
)
def test_detect_format(path: str, fmt: str) -> None:
    assert detect_format(path) == fmt


@pytest.mark.parametrize(("path", "message"), [("a.txt", "unsupported file type"), ("a.parquet.gz", "decompress")])
def test_detect_format_explains_what_it_cannot_read(path: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        detect_format(path)


def test_glob_matching_nothing_is_a_one_line_error_naming_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.jsonl")
    with pytest.raises(InputError) as error:
        expand(pattern)
    assert pattern in str(error.value) and "\n" not in str(error.value)


def test_missing_path_and_no_inputs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no file or directory"):
        expand(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="no input"):
        expand()


def test_unsupported_file_is_an_up_front_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "a.jsonl").write_text("{}")
    with pytest.raises(InputError, match="unsupported"):
        expand(str(tmp_path / "notes.txt"))
    with pytest.raises(InputError, match="narrow the glob"):
        expand(str(tmp_path / "*"))


def test_glob_and_directory_results_are_sorted_deduplicated_and_skip_markers(tmp_path: Path) -> None:
    for name in ["b.jsonl", "a.csv", "c.parquet", "_SUCCESS", ".a.csv.crc", "notes.txt"]:
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jsonl").write_text("")
    files = expand(str(tmp_path / "*.jsonl"), str(tmp_path), str(tmp_path / "b.jsonl"))
    assert [(Path(f.path).name, f.fmt) for f in files] == [
        ("a.csv", "csv"),
        ("b.jsonl", "jsonl"),
        ("c.parquet", "parquet"),
    ]
    # Beam's local filesystem matches '**' to one directory or more, never to none: b.jsonl is not matched
    assert [Path(f.path).name for f in expand(str(tmp_path / "**" / "*.jsonl"))] == ["d.jsonl"]


def test_directory_without_readable_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"holds no file .*\(it holds notes.txt\)"):
        expand(str(tmp_path))


def test_a_directory_says_which_files_it_skips_and_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ["a.jsonl", "README.md", "notes.txt", "data.jsonl.txt", "schema.yaml", "_SUCCESS", ".a.crc"]:
        (tmp_path / name).write_text("")
    with caplog.at_level(logging.WARNING, logger="seqpack"):
        files = expand(str(tmp_path))
    assert [Path(f.path).name for f in files] == ["a.jsonl"]
    [record] = [r for r in caplog.records if r.name == "seqpack"]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert f"skipped 4 files in {tmp_path} that are not in a format seqpack reads" in message
    assert "(README.md, data.jsonl.txt, notes.txt, ... (4 in all))" in message
    assert ".jsonl" in message and "rename" in message
    assert "_SUCCESS" not in message and ".a.crc" not in message  # markers stay silent


def test_a_directory_of_readable_files_skips_nothing_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "_SUCCESS").write_text("")
    with caplog.at_level(logging.WARNING, logger="seqpack"):
        expand(str(tmp_path))
    assert not [r for r in caplog.records if r.name == "seqpack"]


def test_glob_into_a_saved_dataset_asks_for_the_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"source": ["a"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(InputError, match="pass the dataset's directory"):
        expand(str(tmp_path / "ds" / "*"))


def test_dataset_metadata_cannot_point_outside_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../../etc/passwd"}]}))
    (tmp_path / "dataset_info.json").write_text("{}")
    with pytest.raises(InputError, match="not a plain file name"):
        expand(str(tmp_path))
