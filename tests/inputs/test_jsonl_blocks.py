"""JSON lines parsed a block at a time give exactly what the line-by-line reference parser gives.

The block parser reads plain objects in place and hands every other line to the reference parser; these tests
feed both the same bytes, cut into arbitrary chunks and blocks, and compare every record and rejection
(fields, origin, reason, raw bytes and detail).
"""

from __future__ import annotations

import io
import json

import pytest
from helpers import flat
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.inputs import DEFAULT_MAX_RECORD_BYTES, Record, Rejected, iter_file_lists, jsonl

LABEL = "data.jsonl"

# Lines chosen to sit on every edge between "a plain object" and "anything else".
ODD_LINES = [
    b"",
    b"   ",
    b"\t",
    b"\r",
    b"\x0b",
    b" {\"a\": 1}",  # leading whitespace
    b"{\"a\": 1}   ",  # trailing JSON whitespace
    b"{\"a\": 1}\r",
    b"{\"a\": 1}\xc2\xa0",  # a no-break space is not JSON whitespace: extra data
    b"{\"a\": 1} {\"a\": 2}",  # two objects on one line
    b"{\"a\": 1},{\"b\": 2}",
    b"{\"a\": [1",  # an object cut over two lines ...
    b"2]}",  # ... that a parser reading across lines would join
    b"[1, 2]",
    b"\"text\"",
    b"42",
    b"null",
    b"{\"a\": 1, \"a\": 2}",  # duplicate keys: the last one wins, as in json.loads
    b"{\"n\": 1.0, \"m\": 1e400, \"k\": 123456789012345678901234567890}",
    b"{\"n\": " + b"9" * 5000 + b"}",  # an integer too long to convert
    b"{\"emoji\": \"\\ud83d\\ude00\"}",  # a surrogate pair: valid
    b"{\"bad\": \"\\ud800\"}",  # a lone surrogate
    b"{\"key\\udc00\": 1}",
    b"{\"ctl\": \"a\x01b\tc\"}",  # raw control characters, accepted as sloppy writers leave them
    b"{\"nul\": \"a\\u0000b\"}",  # an escaped NUL is text
    b"{\"nul\": \"a\x00b\"}",  # a raw NUL byte is not
    b"{\"bad\": \"\xff\xfe\"}",  # invalid UTF-8
    b"{\"text\": \"caf\xc3\xa9 \xe2\x80\xa8 \xe4\xb8\xad\"}",  # multi-byte characters, U+2028 inside a string
    b"{" * 150 + b"}" * 150,  # invalid and deep
    b"{\"d\": " + b"[" * 120 + b"]" * 120 + b"}",  # valid but too deep
    b"{\"d\": " + b"[" * 60 + b"]" * 60 + b", \"e\": \"" + b"[" * 80 + b"\"}",  # many brackets, shallow
    b"{\"a\": {\"b\": [1, {\"c\": null}]}, \"t\": true, \"f\": false}",
    b"{}",
    b"{",
    b"}",
]


def plain_line(fields: dict) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
lines = st.lists(
    st.one_of(
        st.sampled_from(ODD_LINES),
        st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(plain_line),
        st.builds(
            lambda s, t: plain_line({"source": s, "target": t}), st.text(max_size=20), st.text(max_size=20)
        ),
    ),
    max_size=30,
)


def reference(data: bytes, max_bytes: int, first_line: int = 1) -> list[Record | Rejected]:
    return list(jsonl._jsonl_lines((data,), LABEL, max_bytes, first_line))


def by_blocks(chunks: list[bytes], max_bytes: int, first_line: int = 1) -> list[Record | Rejected]:
    lists = list(jsonl.jsonl_from_chunks(iter(chunks), LABEL, max_bytes, first_line))
    assert all(isinstance(items, list) and items for items in lists)
    return [item for items in lists for item in items]


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(
    body=lines,
    final_newline=st.booleans(),
    crlf=st.booleans(),
    points=st.lists(st.integers(0, 10_000), max_size=6),
    block_bytes=st.integers(1, 300),
    max_bytes=st.sampled_from([40, 200, 1 << 20]),
    first_line=st.integers(1, 1000),
)
@settings(max_examples=300, deadline=None)
def test_blocks_give_exactly_what_the_line_parser_gives(
    body: list[bytes],
    final_newline: bool,
    crlf: bool,
    points: list[int],
    block_bytes: int,
    max_bytes: int,
    first_line: int,
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    data = newline.join(body) + (newline if final_newline else b"")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonl, "_LINE_BLOCK_BYTES", block_bytes)  # many blocks out of a few lines
        assert by_blocks(cut(data, points), max_bytes, first_line) == reference(data, max_bytes, first_line)


def test_every_odd_line_in_one_block_matches_the_reference() -> None:
    data = b"\n".join([*ODD_LINES, plain_line({"source": "s", "target": "t"})] * 3) + b"\n"
    items = by_blocks([data], 1 << 20)
    assert items == reference(data, 1 << 20)
    reasons = {item.reason for item in items if isinstance(item, Rejected)}
    assert reasons == {
        "invalid_json", "not_an_object", "lone_surrogate", "nul_byte", "invalid_utf8", "json_too_deep"
    }
    objects = 13  # the lines of ODD_LINES that are objects (some after a detour through the line parser), and one
    assert sum(isinstance(item, Record) for item in items) == 3 * objects


def test_a_line_longer_than_the_cap_is_rejected_and_reading_goes_on() -> None:
    long_line = plain_line({"source": "x" * 5000, "target": "y"})
    good = plain_line({"source": "a", "target": "b"})
    data = b"\n".join([good, long_line, good, good]) + b"\n"
    chunks = cut(data, list(range(0, len(data), 100)))  # the long line arrives over many chunks
    items = by_blocks(chunks, 1000)
    assert items == reference(data, 1000)
    assert [type(item).__name__ for item in items] == ["Record", "Rejected", "Record", "Record"]
    assert items[1].reason == "record_too_large" and items[1].origin == f"{LABEL}:2"
    assert [item.origin for item in items[2:]] == [f"{LABEL}:3", f"{LABEL}:4"]


def test_whole_files_read_by_blocks_match_line_by_line_reading() -> None:
    rows = [plain_line({"source": f"s{i}", "target": "t" * (i % 50)}) for i in range(20_000)]
    rows[777] = b"{broken"
    rows[15_000] = b""
    data = b"\xef\xbb\xbf" + b"\n".join(rows)
    items = flat(iter_file_lists("f.jsonl", lambda _: io.BytesIO(data), "jsonl", label=LABEL))
    assert items == reference(data[3:], DEFAULT_MAX_RECORD_BYTES)
    assert len(items) == 19_999 and items[777].reason == "invalid_json"
    assert items[-1].origin == f"{LABEL}:20000"


def test_a_read_failure_keeps_the_records_before_it() -> None:
    """Lists are handed on whole: a file that fails mid-way still yields every record read before it."""
    good = b"".join(plain_line({"source": str(i), "target": "t"}) + b"\n" for i in range(3000))

    class Failing(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            chunk = super().read(size)
            if not chunk:
                raise OSError("disk on fire")
            return chunk

    items = flat(iter_file_lists("f.jsonl", lambda _: Failing(good), "jsonl", label=LABEL))
    assert sum(isinstance(item, Record) for item in items) == 3000
    assert items[-1].reason == "unreadable_file" and "after 3,000 records" in items[-1].detail
