"""Byte ranges of JSON lines files: together they read every record exactly once, with its line number."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import flat
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.inputs import InputFile, Record, Rejected, iter_file_lists, iter_input_lists
from seqpack.inputs.ranges import can_split, line_starts, split_input
from seqpack.transforms.read import beam_open


def _items(files: list[InputFile]) -> list[tuple[str, str]]:
    out = []
    for unit in files:
        for item in flat(iter_input_lists(unit, beam_open)):
            kind = "record" if isinstance(item, Record) else f"rejected:{item.reason}"
            out.append((item.origin, kind))
    return sorted(out)


lines = st.lists(
    st.one_of(
        st.builds(lambda s, t: json.dumps({"source": s, "target": t}), st.text(max_size=30), st.text(max_size=30)),
        st.sampled_from(["", "   ", "{not json", "[1, 2]", "\r"]),
    ),
    max_size=40,
)


@given(lines, st.integers(1, 64), st.booleans(), st.booleans())
@settings(max_examples=60, deadline=None)
def test_ranges_read_what_the_whole_file_reads(
    tmp_path_factory, body: list[str], target: int, bom: bool, final_newline: bool
) -> None:
    path = tmp_path_factory.mktemp("ranges") / "data.jsonl"
    text = "\n".join(body) + ("\n" if final_newline else "")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    whole = InputFile(str(path), "jsonl", "data.jsonl")
    parts = split_input(whole, target_bytes=target)
    assert all(p.is_range for p in parts)
    assert parts[0].start == 0 and parts[-1].stop == path.stat().st_size
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert [p.part for p in parts] == [(i, len(parts)) for i in range(len(parts))]
    expected = sorted(
        (item.origin, "record" if isinstance(item, Record) else f"rejected:{item.reason}")
        for item in flat(iter_file_lists(str(path), beam_open, label="data.jsonl"))
    )
    assert _items(parts) == expected


def test_line_starts_are_line_beginnings_with_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    rows = [json.dumps({"source": "x" * i, "target": "y"}) for i in range(200)]
    path.write_text("\n".join(rows) + "\n")
    data = path.read_bytes()
    starts = line_starts(str(path), 500)
    assert starts[0] == (0, 1) and len(starts) > 5
    for offset, number in starts:
        assert offset == 0 or data[offset - 1 : offset] == b"\n"
        assert data[:offset].count(b"\n") + 1 == number


def test_only_local_uncompressed_json_lines_are_split(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"source": "a", "target": "b"}\n' * 100)
    assert can_split(InputFile(str(path), "jsonl", "a"))
    assert not can_split(InputFile("gs://bucket/a.jsonl", "jsonl", "a"))
    assert not can_split(InputFile(str(path) + ".gz", "jsonl", "a"))
    assert not can_split(InputFile(str(path), "csv", "a"))
    remote = InputFile("gs://bucket/a.jsonl", "jsonl", "a")
    assert split_input(remote) == [remote]


def test_a_utf16_file_is_not_split_and_stays_one_rejection(tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_bytes(('{"source": "a", "target": "b"}\n' * 50).encode("utf-16"))
    parts = split_input(InputFile(str(path), "jsonl", "wide.jsonl"), target_bytes=64)
    assert len(parts) == 1 and not parts[0].is_range
    items = flat(iter_input_lists(parts[0], beam_open))
    assert len(items) == 1 and isinstance(items[0], Rejected) and items[0].reason == "unreadable_file"
