"""A bad element of a JSON array is rejected alone and reading goes on with the next one; no element ever
disappears from the counts, whatever the chunk boundaries (issue 13, item 2)."""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

from helpers import dataset_file, flat
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from seqpack.cli.main import main
from seqpack.inputs import Record, Rejected, iter_file_lists, json_array, streams
from seqpack.schemas.rejected import RAW_PREFIX_BYTES
from seqpack.transforms.read import beam_open

MAX_BYTES = 8000
"""Above the deep element's size: the size cap decides before anything else."""
DEEP = b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}"
"""Deeper than the JSON parser's recursion limit: it raises instead of returning a value."""
BAD_ELEMENTS: list[tuple[bytes, str]] = [
    (b'{"source": "bad", "target": }', "invalid_json"),
    (b'{"source" "x"}', "invalid_json"),
    (b'{"a": [1}', "invalid_json"),  # a wrong closer
    (b'{"a": 1}}', "invalid_json"),  # a stray closer after a whole value
    (b'{"a": 1} x', "invalid_json"),  # something after a whole value
    (b'{"a": 1} {"b": 2}', "invalid_json"),  # a missing comma: both are one bad element
    (b'{"a": "x\\q", "b": "]"}', "invalid_json"),  # a bad escape; brackets and commas inside strings
    (b'{"a": "\\"],", "b": tru}', "invalid_json"),  # an escaped quote before the error
    (b"{'a': 1}", "invalid_json"),
    (b'{"a": 1,}', "invalid_json"),
    (b"", "invalid_json"),  # nothing between two commas
    (b'{"s": "' + b"x" * MAX_BYTES + b'"}', "record_too_large"),
    (b'{"s": "' + b"x" * MAX_BYTES + b'", }', "record_too_large"),  # too large and invalid
    (DEEP, "json_too_deep"),
    (b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}", "json_too_deep"),  # parses, then is too deep
    (b'{"s": "\xff"}', "invalid_utf8"),
    (b"[1, 2]", "not_an_object"),
]
SEPARATORS = [b",", b", ", b",\n  ", b"\r\n,\t"]


def read(data: bytes, chunk: int = 1 << 20, **kwargs: Any) -> list[Record | Rejected]:
    """The items of ``data`` as a .json file, read ``chunk`` bytes at a time (every boundary gets hit)."""
    original = streams.READ_CHUNK
    streams.READ_CHUNK = chunk
    try:
        return flat(iter_file_lists("f.json", lambda _: io.BytesIO(data), **kwargs))
    finally:
        streams.READ_CHUNK = original


def outcome(item: Record | Rejected) -> tuple[int, str]:
    return int(item.origin.rpartition(":")[2]), "record" if isinstance(item, Record) else item.reason


def squeezed(data: bytes) -> bytes:
    return b"".join(data.split())


good_elements = st.builds(
    lambda source, n: {"source": source, "n": n},
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20),
    st.integers(-(10**6), 10**6),
)


@settings(max_examples=200, deadline=None)
@given(
    elements=st.lists(st.one_of(good_elements, st.sampled_from(range(len(BAD_ELEMENTS)))), max_size=12),
    separators=st.lists(st.sampled_from(SEPARATORS), min_size=12, max_size=12),
    chunk=st.sampled_from([1, 2, 3, 7, 16, 64, 1 << 20]),
    close=st.sampled_from([b"]", b"\n]\n"]),
)
def test_every_element_comes_out_once_with_its_number(
    elements: list[Any], separators: list[bytes], chunk: int, close: bytes
) -> None:
    """Good elements among corrupt ones: each good one is a Record, each bad one exactly one Rejected (with its
    own bytes), all numbered as in the file, whatever the chunk size."""
    texts = [BAD_ELEMENTS[e][0] if isinstance(e, int) else json.dumps(e).encode() for e in elements]
    assume(texts != [b""])  # that is '[]', an empty array
    data = b"[" + b"".join(sep + text for sep, text in zip([b""] + separators, texts, strict=False)) + close
    items = read(data, chunk, max_record_bytes=MAX_BYTES)
    expected = [(n, BAD_ELEMENTS[e][1] if isinstance(e, int) else "record") for n, e in enumerate(elements, 1)]
    assert [outcome(item) for item in items] == expected
    starts = _starts(data, texts)
    for element, text, item, start in zip(elements, texts, items, starts, strict=True):
        if isinstance(item, Record):
            assert item.fields == element
        else:
            assert squeezed(item.raw) == squeezed(text)[: RAW_PREFIX_BYTES] and item.detail
            assert not re.search(r"bytes [\d,]+ to", item.detail) or f"bytes {start:,} to " in item.detail


def _starts(data: bytes, texts: list[bytes]) -> list[int]:
    """The byte offset of each element in ``data``: after the ',' (or '[') and any whitespace before it."""
    starts, at = [], 1
    for number, text in enumerate(texts):
        if number:
            at = data.index(b",", at) + 1
        while data[at : at + 1] in (b" ", b"\t", b"\n", b"\r"):
            at += 1
        assert data.startswith(text, at)
        starts.append(at)
        at += len(text)
    return starts


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=6),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
        max_leaves=10,
    ),
    cuts=st.lists(st.integers(0, 200), max_size=6),
    end=st.sampled_from([",", "]"]),
)
def test_the_element_scanner_finds_the_end_of_any_value_in_pieces(value: Any, cuts: list[int], end: str) -> None:
    """The scanner that steps over a bad element, fed a valid value (escapes, brackets and commas inside
    strings) in arbitrary pieces, stops exactly at the ',' or ']' after it."""
    text = json.dumps(value) + " " + end + '{"after": 1}'
    scan = json_array._ElementEnd()
    pieces = [text[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(text)], strict=True)]
    buffer, consumed, index = "", 0, 0
    for piece in pieces:
        buffer += piece
        found, index = scan.find(buffer, index)
        if found >= 0:
            assert consumed + found == len(json.dumps(value)) + 1
            return
        consumed += index
        buffer, index = buffer[index:], 0
    raise AssertionError("the end was not found")


ELEMENT_COUNT = 5000
GOOD = [json.dumps({"source": f"s{n}", "target": f"t{n}"}).encode() for n in range(1, ELEMENT_COUNT + 1)]


def _array_with(bad: bytes, at: int = 2) -> bytes:
    elements = [*GOOD[: at - 1], bad, *GOOD[at:]]
    return b"[" + b", ".join(elements) + b"]"


def test_the_issue_13_attack_every_other_element_is_read() -> None:
    """A 5,000-element array whose element 2 is invalid: 4,999 records and one rejection, not 1 and 1."""
    for bad, reason in [
        (b'{"source": "bad", "target": }', "invalid_json"),
        (b'{"source": "bad", "target": "' + b"x" * 20_000 + b'"}', "record_too_large"),
        (DEEP, "json_too_deep"),
    ]:
        items = read(_array_with(bad), 4096, max_record_bytes=10_000)
        assert [outcome(i) for i in items] == [(n, reason if n == 2 else "record") for n in range(1, 5001)]
        assert items[2].fields == {"source": "s3", "target": "t3"}
        assert items[-1].fields == {"source": f"s{ELEMENT_COUNT}", "target": f"t{ELEMENT_COUNT}"}


def test_many_bad_elements_keep_their_numbers_and_byte_offsets() -> None:
    """Thousands of bad elements in one read (the reader drops parsed text on the way): each is found where it is."""
    texts = [b'{"source": "bad", "target": }' if n % 3 else GOOD[n] for n in range(3000)]
    data = b"[" + b",\n".join(texts) + b"]"
    items = read(data)
    assert [outcome(i) for i in items] == [(n + 1, "invalid_json" if n % 3 else "record") for n in range(3000)]
    for item, start, text in zip(items, _starts(data, texts), texts, strict=True):
        if isinstance(item, Rejected):
            assert f"at byte {start + len(text) - 1:,} (element" in item.detail
            assert f"bytes {start:,} to {start + len(text):,})" in item.detail


def test_a_string_that_runs_to_the_end_of_the_file_rejects_every_element_it_seems_to_hold() -> None:
    """A missing quote turns every later string inside out, so no element can be told apart: the rest is
    rejected with its byte range, one rejection per element it seems to hold, so the counts still add up."""
    data = _array_with(b'{"source": "bad, "target": "t2"}')
    for chunk in (7, 4096, 1 << 20):
        items = read(data, chunk)
        assert [i.origin for i in items] == [f"f.json:{n}" for n in range(1, ELEMENT_COUNT + 1)]
        assert isinstance(items[0], Record) and all(isinstance(i, Rejected) for i in items[1:])
        first, start = items[1], data.index(b'{"source": "bad')
        assert first.raw == data[start:][: RAW_PREFIX_BYTES]
        assert f"bytes {start} to {len(data):,}" in first.detail and f"{ELEMENT_COUNT - 1:,} elements" in first.detail
        assert all(i.raw == b"" and "element 2's rejection" in i.detail for i in items[2:])


def test_a_truncated_file_rejects_only_the_cut_element() -> None:
    """The last element is cut by the end of the file: nested objects in it are not taken for elements."""
    chat = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hel'
    for cut in (chat, chat[:-3], b'{"source": "a", "target'):
        data = b"[" + b", ".join([*GOOD[:3], cut])
        items = read(data, 16)
        assert [outcome(i) for i in items] == [(1, "record"), (2, "record"), (3, "record"), (4, "invalid_json")]
        assert items[-1].raw == cut and "truncated" in items[-1].detail


def test_stepping_over_a_huge_bad_element_keeps_memory_bounded(tmp_path: Path) -> None:
    """Too large and never closed: the reader streams past it to the end of the file."""
    path = tmp_path / "big.json"
    with open(path, "wb") as out:
        out.write(b'[{"source": "a"}, {"source": "' + b"x" * (40 << 20) + b'", ' + b'"y": [[' * 1000)
    tracemalloc.start()
    try:
        items = flat(iter_file_lists(str(path), beam_open, max_record_bytes=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [outcome(i) for i in items] == [(1, "record"), (2, "record_too_large")]
    assert len(items[1].raw) == RAW_PREFIX_BYTES
    assert peak < 16 << 20, f"peak {peak:,} bytes while stepping over a 40 MiB element"


def test_the_run_accounts_for_every_element(tmp_path: Path, tokenizer_dir: Path) -> None:
    """Through the CLI: records_read counts all 5,000 elements, and each is written or rejected."""
    data = tmp_path / "pairs.json"
    data.write_bytes(_array_with(b'{"source": "bad", "target": }'))
    output = tmp_path / "out"
    args = ["run", "-q", "-i", str(data), "-o", str(output), "-t", str(tokenizer_dir), "--max-length", "256"]
    assert main([*args, "--direct_running_mode=in_memory"]) == 0
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["records_read"] == ELEMENT_COUNT and stats["records_rejected"] == 1
    written = sum(stats["examples_by_split"].values())
    assert written + stats["records_rejected"] + stats["examples_dropped"] == ELEMENT_COUNT
    [rejected] = [json.loads(line) for line in dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()]
    assert (rejected["line"], rejected["reason"], rejected["raw"]) == (
        2,
        "invalid_json",
        '{"source": "bad", "target": }',
    )
