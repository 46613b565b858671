"""JSON lines: one object per line, parsed a block of lines at a time, or only the lines of one byte range.

Blank lines are skipped and are not records; a line is numbered as in the whole file, so origins read
``file:line`` whichever range read it. A line over ``max_record_bytes`` is rejected without being held whole.

    >>> for items in iter_jsonl(open("pairs.jsonl", "rb"), "pairs.jsonl", 64 << 20):
    ...     print(len(items))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from seqpack.inputs.json_values import DECODER, SURROGATE_ESCAPE, brackets, record_from_json
from seqpack.inputs.records import DEFAULT_MAX_RECORD_BYTES, InputFile, Item, OpenBinary, Record, Rejected
from seqpack.inputs.streams import (
    NUL,
    in_lists,
    iter_lines,
    prepend,
    range_chunks,
    text_chunks,
    too_large,
    unreadable_detail,
    without_bom,
)
from seqpack.schemas.rejected import MAX_JSON_DEPTH


def iter_jsonl(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """JSON lines: one object per line; blank lines are skipped and are not records."""
    return jsonl_from_chunks(text_chunks(stream), label, max_bytes)


def jsonl_from_chunks(
    chunks: Iterable[bytes], label: str, max_bytes: int, first_line: int = 1
) -> Iterator[list[Item]]:
    """JSON lines a block of whole lines at a time (``_jsonl_block``); once a line outgrows ``max_bytes`` before
    its end is seen, the rest goes line by line (``_jsonl_lines``), which never holds such a line whole."""
    number = first_line
    chunks = iter(chunks)
    for block in _line_blocks(chunks, max_bytes):
        if isinstance(block, _LongLine):
            yield from in_lists(_jsonl_lines(prepend(block.head, chunks), label, max_bytes, number))
            return
        items = _jsonl_block(block, label, max_bytes, number)
        if items:  # a block of blank lines has none
            yield items
        number += block.count(b"\n")


class _LongLine(NamedTuple):
    head: bytes
    """The unfinished last line read so far, already longer than ``max_bytes``."""


_LINE_BLOCK_BYTES = 64 << 10
"""JSON lines are parsed this many bytes of lines at a time: few enough records alive at once that Python's
garbage collector stays cheap (1 MB blocks cost a third more per record), enough to spread the per-block work."""


def _line_blocks(chunks: Iterator[bytes], max_bytes: int) -> Iterator[bytes | _LongLine]:
    """The stream cut into blocks of whole lines (the last one may lack its ``\\n``), ``_LINE_BLOCK_BYTES`` each;
    a ``_LongLine`` (and nothing after it) when an unfinished line grows past ``max_bytes``."""
    carry: list[bytes] = []
    carried = 0
    for chunk in chunks:
        end = chunk.rfind(b"\n") + 1
        if not end:
            carry.append(chunk)
            carried += len(chunk)
            if carried > max_bytes:
                yield _LongLine(b"".join(carry))
                return
            continue
        yield from _cut_at_lines(b"".join([*carry, chunk[:end]]) if carry else chunk[:end], _LINE_BLOCK_BYTES)
        carry, carried = ([chunk[end:]], len(chunk) - end) if end < len(chunk) else ([], 0)
    if carry:
        yield b"".join(carry)


def _cut_at_lines(block: bytes, size: int) -> Iterator[bytes]:
    """``block`` (whole lines) in pieces of whole lines of about ``size`` bytes."""
    start = 0
    while len(block) - start > size:
        cut = block.find(b"\n", start + size) + 1
        if not cut:
            break
        yield block[start:cut]
        start = cut
    if start < len(block):
        yield block[start:]


_SCAN_JSON = DECODER.scan_once
_JSON_WHITESPACE = " \t\n\r"


def _jsonl_block(block: bytes, label: str, max_bytes: int, first_line: int) -> list[Item]:
    """The records of a block of whole lines: each line that is a plain JSON object is parsed in place in the
    decoded block; any other line (blank, invalid, odd) goes through the line-by-line parser, so every
    record and rejection is exactly the one ``_jsonl_lines`` gives, at a fraction of the cost per line."""
    if len(block) > max_bytes or NUL in block:
        return list(_jsonl_lines((block,), label, max_bytes, first_line))
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return list(_jsonl_lines((block,), label, max_bytes, first_line))
    lines = text.split("\n")
    if block.endswith(b"\n"):
        lines.pop()
    # The record checks of ``record_from_json`` are needed only in a block with a surrogate escape, and on a
    # line with enough brackets to nest too deeply.
    surrogates = SURROGATE_ESCAPE.search(text) is not None
    raw_lines: list[bytes] | None = None
    items: list[Item] = []
    for index, line in enumerate(lines, first_line):
        value = _plain_object(line)
        if value is None or surrogates or (len(line) > MAX_JSON_DEPTH and brackets(line) > MAX_JSON_DEPTH):
            if raw_lines is None:
                raw_lines = block.split(b"\n")
            data = raw_lines[index - first_line]
            data = data[:-1] if data.endswith(b"\r") else data
            origin = f"{label}:{index}"
            if value is not None:
                items.append(record_from_json(value, line, origin, lambda data=data: data))
            elif data.strip():
                items.append(parse_json_line(data, origin))
            continue
        items.append(Record(value, f"{label}:{index}"))
    return items


def _plain_object(line: str) -> dict[str, Any] | None:
    """``line`` parsed as ``DECODER.decode`` would, if it is one JSON object starting at its first character
    with nothing but JSON whitespace after it; None for anything else (the caller parses it the slow way)."""
    if not line.startswith("{"):
        return None
    try:
        value, end = _SCAN_JSON(line, 0)
    except (ValueError, StopIteration, RecursionError):
        return None
    if end != len(line) and line[end:].strip(_JSON_WHITESPACE):
        return None
    return value


def _jsonl_lines(chunks: Iterable[bytes], label: str, max_bytes: int, first_line: int) -> Iterator[Item]:
    """JSON lines one line at a time: the reference parser, and the one for lines over ``max_bytes``."""
    for line in iter_lines(chunks, max_bytes, first_line):
        origin = f"{label}:{line.number}"
        if line.too_large:
            yield too_large(line, origin, max_bytes)
            continue
        data = line.data[:-1] if line.data.endswith(b"\r") else line.data
        if data.strip():
            yield parse_json_line(data, origin)


def parse_json_line(data: bytes, origin: str) -> Item:
    """One JSONL line (a ``\\r`` already removed) to a record or a rejection."""
    if NUL in data:
        return Rejected("nul_byte", origin, data, f"NUL byte at offset {data.index(NUL)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected("invalid_utf8", origin, data, f"{error.reason} at byte {error.start}")
    try:
        value = DECODER.decode(text)
    except RecursionError:
        return Rejected("json_too_deep", origin, data, "nests too deeply for the JSON parser")
    except ValueError as error:  # json.JSONDecodeError, or an integer too long to convert
        return Rejected("invalid_json", origin, data, str(error))
    return record_from_json(value, text, origin, lambda: data)


def iter_jsonl_range(
    input_file: InputFile, open_binary: OpenBinary, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[list[Item]]:
    """The records of one byte range of a JSON lines file, numbered as in the whole file."""
    if input_file.fmt != "jsonl":
        raise ValueError(f"byte ranges are only read from JSON lines files, not {input_file.fmt}")
    count = 0
    try:
        stream = open_binary(input_file.path)
        try:
            stream.seek(input_file.start)
            chunks = range_chunks(stream, input_file.stop - input_file.start)
            if input_file.start == 0:
                chunks = without_bom(chunks)
            for items in jsonl_from_chunks(chunks, input_file.label, max_record_bytes, input_file.first_line):
                count += len(items)
                yield items
        finally:
            stream.close()
    except Exception as error:  # noqa: BLE001 - as in iter_file: a bad file is one accounted rejection
        where = f"{input_file.label}:{input_file.first_line}"
        yield [Rejected("unreadable_file", where, b"", unreadable_detail("jsonl", count, error))]
