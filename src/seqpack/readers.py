"""Read input files into records, one at a time, without ever letting bad input crash a run.

Every record of every file comes out as exactly one ``Record`` (parsed fields and where they came from) or one
``Rejected`` (a stable reason code from ``REASONS``, the raw bytes and a human detail). Nothing here imports
Beam: files are opened through an injected ``open_binary`` and listed through an injected ``match``, so the same
code reads local files in tests and ``gs://``/``s3://`` objects through Beam's ``FileSystems`` in a pipeline.

    >>> for item in iter_file("pairs.jsonl", open_local):
    ...     print(item.origin, item.fields if isinstance(item, Record) else item.reason)

Text formats (JSONL, JSON arrays, CSV/TSV) are streamed in chunks, so memory stays bounded by
``max_record_bytes`` plus a few read chunks whatever the file size; a longer record is rejected unparsed.
Parquet and Arrow are read a batch at a time; a row whose values come to more than ``max_record_bytes`` is
rejected too (sizes are computed a column at a time, and only for a batch larger than the cap).
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import itertools
import json
import logging
import lzma
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_MAX_RECORD_BYTES = 64 << 20
"""Records (lines, CSV rows, JSON array elements) above this size are rejected without being parsed."""
RAW_PREFIX_BYTES = 64 << 10
"""How much of an over-long record (or of an unparsable file remainder) ``Rejected.raw`` keeps."""
MAX_JSON_DEPTH = 100
"""JSON nested deeper than this is rejected. A fixed limit, well below Python's recursion limit, makes the
outcome the same on every worker whatever its stack depth, and keeps later steps (Beam coders, pickling)
from recursing deeply."""
READ_CHUNK = 1 << 20
BATCH_ROWS = 1024
"""Records handed on per list by the readers that go a record at a time (and Parquet/Arrow rows turned into
Python dicts at a time); JSON lines come a block of lines per list."""

REASONS: dict[str, str] = {
    "invalid_utf8": "the record's bytes are not valid UTF-8 (raw keeps the bytes as they are)",
    "nul_byte": "the record holds a NUL (0x00) byte, usually a sign of binary or UTF-16 data",
    "invalid_json": "the record is not valid JSON; the detail gives the parser's message and position",
    "json_too_deep": f"the JSON value nests deeper than {MAX_JSON_DEPTH} levels",
    "lone_surrogate": "a JSON string holds an unpaired surrogate escape such as \\ud800, which is not text",
    "not_an_object": "the JSON value is valid but not an object (e.g. a list or a string), so it has no fields",
    "ragged_csv_row": "the CSV/TSV row has a different number of fields than the header",
    "invalid_csv": "the csv module could not parse the row (e.g. a bare carriage return in an unquoted field)",
    "record_too_large": "the record is larger than max_record_bytes; raw keeps only its first 64 KiB",
    "unreadable_file": "the file (or its rest, after the records already read) could not be read or parsed: "
    "corrupt, truncated, of another format, or an I/O error; the detail says which and where",
}
"""Every reason code the reader produces, with what it means. Later steps add their own codes."""

FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".jsonlines": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".tsv": "tsv",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".lzma", ".deflate")
"""The suffixes Beam's ``CompressionTypes.AUTO`` decompresses."""
_SEEKABLE_FORMATS = ("parquet", "arrow")
_GLOB_CHARS = re.compile(r"[*?\[]")
_NUL = b"\x00"


class InputError(ValueError):
    """The inputs cannot be read at all (nothing matches, an unsupported format): stop before any work."""


@dataclass(slots=True)
class Record:
    """One parsed input record. ``origin`` is ``path:N`` (N: 1-based line for JSONL/CSV, row for
    Parquet/Arrow, element for a JSON array), unique and stable across runs, so it can order output.

    Not frozen: one is made per input record, and a frozen dataclass takes twice as long to build."""

    fields: dict[str, Any]
    origin: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record (or a whole file) that could not be read, kept raw so it can be fixed and replayed."""

    reason: str
    origin: str
    raw: bytes
    detail: str = ""


@dataclass(frozen=True)
class InputFile:
    """A file to read, resolved before the pipeline starts; ``label`` prefixes the origins of its records."""

    path: str
    fmt: str
    label: str
    split: str | None = None
    """The split name for a file of a saved Hugging Face ``DatasetDict``."""
    start: int = 0
    stop: int | None = None
    """Read only bytes ``start:stop`` (JSON lines only; see ``seqpack.ranges``); ``start`` begins a line."""
    first_line: int = 1
    """The line number of the line at ``start``, so that origins stay ``file:line``."""
    part: tuple[int, int] = (0, 1)
    """(index, count) of this byte range among its file's ranges."""

    def __post_init__(self) -> None:
        # The label ends up in origins, which Beam encodes as UTF-8 and rejected.jsonl writes as JSON.
        object.__setattr__(self, "label", printable_path(self.label))

    @property
    def is_range(self) -> bool:
        return self.stop is not None


Item = Record | Rejected
OpenBinary = Callable[[str], BinaryIO]
Match = Callable[[str], Sequence[str]]


# --- formats -------------------------------------------------------------------------------------------------


def printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text, for origins and messages: a byte of a file name that is not UTF-8 (which
    Python keeps as a surrogate escape, so the file still opens) is written ``\\xNN``, the same on every run.

        >>> printable_path(os.fsdecode(b"bad\\xffname.jsonl"))
        'bad\\\\xffname.jsonl'
    """
    if path.isascii():
        return path
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to (e.g. from JSON metadata)
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def detect_format(path: str) -> str:
    """The format of ``path`` from its extension, looking through a compression suffix (``a.jsonl.gz``)."""
    name = path.lower()
    compression = next((s for s in COMPRESSION_SUFFIXES if name.endswith(s)), "")
    stem = name[: len(name) - len(compression)]
    fmt = next((f for ext, f in FORMATS.items() if stem.endswith(ext)), None)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(
            f"{path}: unsupported file type; seqpack reads {known} (optionally {'/'.join(COMPRESSION_SUFFIXES)}"
            "-compressed) and Hugging Face datasets directories saved with save_to_disk"
        )
    if compression and fmt in _SEEKABLE_FORMATS:
        raise InputError(
            f"{path}: {fmt} files need random access and cannot be read through {compression} compression; "
            f"decompress it (they compress their own pages)"
        )
    return fmt


def iter_file(
    path: str,
    open_binary: OpenBinary,
    fmt: str | None = None,
    *,
    label: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[Item]:
    """Yield a ``Record`` or ``Rejected`` for every record of ``path``; never raise for bad content.

    A file that cannot be opened or parsed any further yields one ``Rejected("unreadable_file")`` whose
    origin is the bare label and whose detail says how many records came before the failure.
    """
    return itertools.chain.from_iterable(
        iter_file_lists(path, open_binary, fmt, label=label, max_record_bytes=max_record_bytes)
    )


def iter_file_lists(
    path: str,
    open_binary: OpenBinary,
    fmt: str | None = None,
    *,
    label: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[list[Item]]:
    """``iter_file``'s items, in file order, a list at a time (for a reader, a list costs less than an item)."""
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
    fmt = fmt or detect_format(path)
    label = printable_path(label or path)
    parse = _PARSERS.get(fmt)
    if parse is None:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(_PARSERS)}")
    count = 0
    try:
        stream = open_binary(path)
        try:
            for items in parse(stream, label, max_record_bytes):
                count += len(items)
                yield items
        finally:
            stream.close()
    # Any library on the way (filesystem, decompressor, pyarrow) may raise its own exception type; a bad file
    # must become one accounted rejection, not a failed run.
    except Exception as error:  # noqa: BLE001
        yield [Rejected("unreadable_file", label, b"", _unreadable_detail(fmt, count, error))]


def iter_input(input_file: InputFile, open_binary: OpenBinary, **kwargs: Any) -> Iterator[Item]:
    """``iter_file`` for a resolved ``InputFile`` (or the byte range of one that it names)."""
    return itertools.chain.from_iterable(iter_input_lists(input_file, open_binary, **kwargs))


def iter_input_lists(input_file: InputFile, open_binary: OpenBinary, **kwargs: Any) -> Iterator[list[Item]]:
    """``iter_input``'s items a list at a time, as ``iter_file_lists``."""
    if input_file.is_range:
        return _iter_jsonl_range(input_file, open_binary, **kwargs)
    return iter_file_lists(input_file.path, open_binary, input_file.fmt, label=input_file.label, **kwargs)


def _iter_jsonl_range(
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
            chunks = _range_chunks(stream, input_file.stop - input_file.start)
            if input_file.start == 0:
                chunks = _without_bom(chunks)
            for items in _jsonl_from_chunks(chunks, input_file.label, max_record_bytes, input_file.first_line):
                count += len(items)
                yield items
        finally:
            stream.close()
    except Exception as error:  # noqa: BLE001 - as in iter_file: a bad file is one accounted rejection
        where = f"{input_file.label}:{input_file.first_line}"
        yield [Rejected("unreadable_file", where, b"", _unreadable_detail("jsonl", count, error))]


def _range_chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    while length > 0:
        chunk = stream.read(min(READ_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


class _BadFile(Exception):
    """The file as a whole is unusable; the message says why and how to fix it."""


def _unreadable_detail(fmt: str, count: int, error: Exception) -> str:
    message = str(error) if isinstance(error, _BadFile) else f"{type(error).__name__}: {error}"
    where = f"after {count:,} records" if count else "before any record"
    return printable_path(f"cannot read this {fmt} file {where}: {message}")  # a message may quote the path


# --- byte streams and lines ----------------------------------------------------------------------------------


def _text_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The file's bytes in chunks, with a UTF-8 byte-order mark removed and UTF-16/32 files refused."""
    return _without_bom(iter(lambda: stream.read(READ_CHUNK), b""))


def _without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` with a UTF-8 byte-order mark removed from the start; UTF-16/32 (by their marks) refused."""
    first = next(chunks, b"")
    while 0 < len(first) < 4:  # a short read must not split the byte-order mark
        more = next(chunks, b"")
        if not more:
            break
        first += more
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _BadFile(
            "it is UTF-16/UTF-32 encoded (it starts with that byte-order mark); convert it to UTF-8, "
            "e.g. iconv -f UTF-16 -t UTF-8"
        )
    if first.startswith(codecs.BOM_UTF8):
        first = first[len(codecs.BOM_UTF8) :]
    if first:
        yield first
    yield from chunks


class _Line(NamedTuple):
    number: int
    """1-based physical line number."""
    data: bytes
    """The line without its ``\\n``; only the first ``RAW_PREFIX_BYTES`` when ``too_large``."""
    size: int
    too_large: bool


def _iter_lines(chunks: Iterable[bytes], max_bytes: int, first_line: int = 1) -> Iterator[_Line]:
    """Split a byte stream on ``\\n``; a line over ``max_bytes`` is never held whole, only its prefix."""
    number, pieces, size, cut = first_line, [], 0, False
    for chunk in chunks:
        *complete, tail = chunk.split(b"\n")
        for part in complete:
            yield _finish_line(number, pieces, part, size + len(part), max_bytes)
            number, pieces, size, cut = number + 1, [], 0, False
        size += len(tail)
        if tail and (not cut or len(pieces[0]) < RAW_PREFIX_BYTES):
            pieces.append(tail)
            if size > max_bytes:  # from now on keep only the prefix that Rejected.raw shows
                pieces, cut = [b"".join(pieces)[:RAW_PREFIX_BYTES]], True
    if size:
        yield _finish_line(number, pieces, b"", size, max_bytes)


def _finish_line(number: int, pieces: list[bytes], last: bytes, size: int, max_bytes: int) -> _Line:
    if size > max_bytes:
        return _Line(number, b"".join([*pieces, last[:RAW_PREFIX_BYTES]])[:RAW_PREFIX_BYTES], size, True)
    return _Line(number, b"".join([*pieces, last]) if pieces else last, size, False)


def _too_large(line: _Line, origin: str, max_bytes: int) -> Rejected:
    return Rejected(
        "record_too_large",
        origin,
        line.data,
        f"{line.size:,} bytes, more than max_record_bytes {max_bytes:,}; raw keeps the first "
        f"{len(line.data):,} bytes. Split the record or raise --max-record-bytes",
    )


# --- JSON values ---------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder(strict=False)
"""``strict=False`` accepts control characters inside strings, which sloppy writers leave; NUL is refused
separately as ``nul_byte``."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "a number")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``, checked without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) holds an unpaired surrogate, which cannot be encoded as UTF-8."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _record_from_json(value: Any, text: str, origin: str, raw: Callable[[], bytes]) -> Item:
    """Apply the checks every parsed JSON record passes: an object, not too deep, no lone surrogates."""
    if not isinstance(value, dict):
        return Rejected("not_an_object", origin, raw(), f"got {_json_type(value)}, expected an object")
    # the bracket count is a cheap bound: most records need no walk at all
    if _brackets(text) > MAX_JSON_DEPTH and _too_deep(value, MAX_JSON_DEPTH):
        return Rejected("json_too_deep", origin, raw(), f"nests deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        return Rejected("lone_surrogate", origin, raw(), "a string holds an unpaired \\uD800-\\uDFFF escape")
    return Record(value, origin)


def _parse_json_line(data: bytes, origin: str) -> Item:
    """One JSONL line (a ``\\r`` already removed) to a record or a rejection."""
    if _NUL in data:
        return Rejected("nul_byte", origin, data, f"NUL byte at offset {data.index(_NUL)}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected("invalid_utf8", origin, data, f"{error.reason} at byte {error.start}")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        return Rejected("json_too_deep", origin, data, "nests too deeply for the JSON parser")
    except ValueError as error:  # json.JSONDecodeError, or an integer too long to convert
        return Rejected("invalid_json", origin, data, str(error))
    return _record_from_json(value, text, origin, lambda: data)


def _iter_jsonl(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """JSON lines: one object per line; blank lines are skipped and are not records."""
    return _jsonl_from_chunks(_text_chunks(stream), label, max_bytes)


def _jsonl_from_chunks(
    chunks: Iterable[bytes], label: str, max_bytes: int, first_line: int = 1
) -> Iterator[list[Item]]:
    """JSON lines a block of whole lines at a time (``_jsonl_block``); once a line outgrows ``max_bytes`` before
    its end is seen, the rest goes line by line (``_jsonl_lines``), which never holds such a line whole."""
    number = first_line
    chunks = iter(chunks)
    for block in _line_blocks(chunks, max_bytes):
        if isinstance(block, _LongLine):
            yield from _in_lists(_jsonl_lines(_prepend(block.head, chunks), label, max_bytes, number))
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


_SCAN_JSON = _DECODER.scan_once
_JSON_WHITESPACE = " \t\n\r"


def _jsonl_block(block: bytes, label: str, max_bytes: int, first_line: int) -> list[Item]:
    """The records of a block of whole lines: each line that is a plain JSON object is parsed in place in the
    decoded block; any other line (blank, invalid, odd) goes through the line-by-line parser, so every
    record and rejection is exactly the one ``_jsonl_lines`` gives, at a fraction of the cost per line."""
    if len(block) > max_bytes or _NUL in block:
        return list(_jsonl_lines((block,), label, max_bytes, first_line))
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        return list(_jsonl_lines((block,), label, max_bytes, first_line))
    lines = text.split("\n")
    if block.endswith(b"\n"):
        lines.pop()
    # The record checks of ``_record_from_json`` are needed only in a block with a surrogate escape, and on a
    # line with enough brackets to nest too deeply.
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    raw_lines: list[bytes] | None = None
    items: list[Item] = []
    for index, line in enumerate(lines, first_line):
        value = _plain_object(line)
        if value is None or surrogates or (len(line) > MAX_JSON_DEPTH and _brackets(line) > MAX_JSON_DEPTH):
            if raw_lines is None:
                raw_lines = block.split(b"\n")
            data = raw_lines[index - first_line]
            data = data[:-1] if data.endswith(b"\r") else data
            origin = f"{label}:{index}"
            if value is not None:
                items.append(_record_from_json(value, line, origin, lambda data=data: data))
            elif data.strip():
                items.append(_parse_json_line(data, origin))
            continue
        items.append(Record(value, f"{label}:{index}"))
    return items


def _brackets(text: str) -> int:
    """An upper bound on how deeply ``text`` nests."""
    return text.count("[") + text.count("{")


def _plain_object(line: str) -> dict[str, Any] | None:
    """``line`` parsed as ``_DECODER.decode`` would, if it is one JSON object starting at its first character
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
    for line in _iter_lines(chunks, max_bytes, first_line):
        origin = f"{label}:{line.number}"
        if line.too_large:
            yield _too_large(line, origin, max_bytes)
            continue
        data = line.data[:-1] if line.data.endswith(b"\r") else line.data
        if data.strip():
            yield _parse_json_line(data, origin)


def _iter_json(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """A ``.json`` file: a JSON array of objects if it starts with ``[``, else JSON lines."""
    chunks = _text_chunks(stream)
    head = b""
    for chunk in chunks:
        head += chunk
        if head.strip():
            break
    rest = _prepend(head, chunks)
    if head.lstrip()[:1] == b"[":
        yield from _in_lists(_JsonArray(rest, label, max_bytes).items())
    else:
        yield from _jsonl_from_chunks(rest, label, max_bytes)


def _in_lists(items: Iterable[Item], size: int = BATCH_ROWS) -> Iterator[list[Item]]:
    """``items`` in lists of up to ``size``; the items before a failure still come out before it is raised."""
    batch: list[Item] = []
    try:
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    except Exception:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _prepend(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from chunks


# --- JSON arrays, streamed -----------------------------------------------------------------------------------

_NON_WHITESPACE = re.compile(r"[^ \t\n\r]")
_LOOKAHEAD = 64
"""Characters that must follow a parsed element (unless at end of file), so a number or literal cut by a
chunk boundary (``1.5e`` | ``10``) is never taken for a complete value."""
_TRUNCATED = "the file ends before the array is closed: is it truncated?"
_STRUCTURE = re.compile(r'["{}\[\],]')
_STRING_PART_END = re.compile(r'\\.|"', re.DOTALL)
"""Inside a string: an escape pair (so ``\\"`` does not end it) or the closing quote."""
_OPENER = {"]": "[", "}": "{"}
_FIRST_KEY = re.compile(r'\{\s*("(?:[^"\\]|\\.)*")\s*:')
_COUNT_TAIL = 256
_PARSED_KEPT = 16 << 10
"""How much parsed text may stay before a bad element: ``JSONDecodeError`` counts the lines before it, so a
file of many bad elements would take time quadratic in the read size."""
_TRACKED_DEPTH = 1 << 20
"""Bracket kinds kept while stepping over a bad element; deeper ones are only counted, so memory stays bounded."""


class _Failure(NamedTuple):
    reason: str
    detail: str
    at: int | None = None
    """Where in ``_JsonArray.text`` the parser stopped, if it says."""


class _Skipped(NamedTuple):
    """A bad element that was stepped over, and where it ended."""

    end: str
    """The ',' or ']' after it at the array's level, or '' when the file ended first."""
    raw: bytes
    """Its first ``RAW_PREFIX_BYTES``."""
    start: int
    stop: int
    """Its byte offsets in the text (after a byte-order mark)."""
    at: int | None
    """The byte offset where the parser stopped, if known."""
    starts: int
    """When the file ended inside it: how many elements the rest seems to hold (see ``_StartCount``)."""


class _ElementEnd:
    """Finds where an element that did not parse ends: at the first ',' or ']' outside any string and any
    bracket it opened. Strings (with their escapes) and brackets are tracked as the text arrives, in pieces;
    a closer pops back to its own kind of opener, so one stray or missing bracket does not swallow the rest."""

    def __init__(self) -> None:
        self.in_string = False
        self.open = bytearray()
        """The open brackets, one byte each, up to ``_TRACKED_DEPTH``; ``deeper`` counts the ones beyond."""
        self.deeper = 0

    def find(self, text: str, pos: int) -> tuple[int, int]:
        """(index of the ending ',' or ']' in ``text``, or -1; the index to go on from with more text)."""
        while True:
            if self.in_string:
                found = _STRING_PART_END.search(text, pos)
                if found is None:  # keep a final backslash: its escaped character is in the next piece
                    return -1, len(text) - 1 if text.endswith("\\") and len(text) > pos else len(text)
                pos = found.end()
                self.in_string = found.group() != '"'
                continue
            found = _STRUCTURE.search(text, pos)
            if found is None:
                return -1, len(text)
            char, pos = found.group(), found.end()
            if char == '"':
                self.in_string = True
            elif char in "[{":
                self._push(char)
            elif char == "," and not (self.open or self.deeper):
                return found.start(), found.start()
            elif char in "]}" and not self._pop(_OPENER[char]) and char == "]":
                return found.start(), found.start()  # the array's own ']'

    def _push(self, bracket: str) -> None:
        if len(self.open) < _TRACKED_DEPTH:
            self.open.append(ord(bracket))
        else:
            self.deeper += 1

    def _pop(self, bracket: str) -> bool:
        """Close the innermost ``bracket`` (and any other brackets opened inside it); False if none is open."""
        if self.deeper:
            self.deeper -= 1
            return True
        index = self.open.rfind(ord(bracket))
        if index < 0:
            return False
        del self.open[index:]
        return True


class _StartCount:
    """Counts where elements seem to start in text that cannot be parsed: ``, {"key":`` with the bad element's
    own first key (so the objects nested in a record are not counted), pieces at a time."""

    def __init__(self, first_key: str | None) -> None:
        key = re.escape(first_key) + r"\s*:" if first_key else ""
        self.pattern = re.compile(r",\s*\{\s*" + key)
        self.tail = ""
        self.count = 0

    def add(self, piece: str) -> None:
        joined = self.tail + piece
        self.count += sum(1 for found in self.pattern.finditer(joined) if found.end() > len(self.tail))
        self.tail = joined[-_COUNT_TAIL:]


class _JsonArray:
    """A JSON array parsed one element at a time with ``raw_decode``, so memory follows the largest element,
    not the file. An element that cannot be parsed (invalid, too deep, too large) is stepped over to the next
    ',' or ']' at the array's level (``_ElementEnd``) and rejected alone; reading goes on with the next one.
    Only when the file ends inside it (an unclosed string or bracket) is the rest rejected, one rejection per
    element it seems to hold, so no element disappears from the counts."""

    def __init__(self, chunks: Iterable[bytes], label: str, max_bytes: int) -> None:
        self._chunks = iter(chunks)
        # surrogateescape keeps invalid bytes as lone surrogates, so an element's exact bytes can be restored
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.text = ""
        self.pos = 0
        self.eof = False
        self.read_bytes = 0
        self._mark: tuple[str | None, int, int] = (None, 0, 0)
        """A known (text, position, byte offset), for ``_offset``."""
        self.gap = 0
        """Whitespace characters the last ``_peek`` passed over."""
        self.label = label
        self.max_bytes = max_bytes

    def _more(self, at_least: int) -> None:
        """Read at least ``at_least`` more characters (or to the end), dropping what is already parsed."""
        parts, added = [self.text[self.pos :]], 0
        while added < at_least and not self.eof:
            chunk = next(self._chunks, None)
            part = self._decoder.decode(chunk or b"", final=chunk is None)
            self.eof = chunk is None
            self.read_bytes += len(chunk or b"")
            parts.append(part)
            added += len(part)
        self.text, self.pos = "".join(parts), 0

    def _offset(self, pos: int) -> int:
        """The byte offset of ``text[pos]``, for messages. Only bad elements ask, and positions only move on, so
        each read is encoded at most twice however many bad elements it holds."""
        text, (mark_text, mark_pos, mark_offset) = self.text, self._mark
        if mark_text is text and mark_pos <= pos:
            offset = mark_offset + len(text[mark_pos:pos].encode("utf-8", "surrogateescape"))
        else:
            pending = len(self._decoder.getstate()[0])
            offset = self.read_bytes - pending - len(text[pos:].encode("utf-8", "surrogateescape"))
        self._mark = (text, pos, offset)
        return offset

    def _peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file), skipping whitespace."""
        start, self.gap = self.pos, 0
        while True:
            found = _NON_WHITESPACE.search(self.text, self.pos)
            if found:
                self.pos = found.start()
                self.gap += self.pos - start
                return self.text[self.pos]
            self.gap += len(self.text) - start
            self.pos = start = len(self.text)
            if self.eof:
                return ""
            self._more(READ_CHUNK)
            start = 0

    def _rest(self) -> bytes:
        if len(self.text) - self.pos < RAW_PREFIX_BYTES:
            self._more(RAW_PREFIX_BYTES)
        return self.text[self.pos : self.pos + RAW_PREFIX_BYTES].encode("utf-8", "surrogateescape")

    def items(self) -> Iterator[Item]:
        self._peek()
        self.pos += 1  # the opening "["
        number, end = 0, self._peek()
        while end != "]":
            number += 1
            found, end = self._next(number)
            yield from found
            if not end:
                return
            if end == ",":
                self.pos += 1
        self.pos += 1
        yield from self._trailing(number)

    def _next(self, number: int) -> tuple[Iterable[Item], str]:
        """The items of element ``number`` (more than one only if the file ends inside it), and what ends it:
        ',' or ']' (``pos`` is there), or '' when the file ends."""
        origin = f"{self.label}:{number}"
        element, head = self._element(), ""
        if not isinstance(element, _Failure):
            end = self._peek()
            if end in (",", "]"):
                return [self._check(*element, origin)], end
            if not end:  # a whole element, then the end of the file: nothing is lost but the ']'
                truncated = Rejected(
                    "invalid_json", self.label, b"", f"{_TRUNCATED} (it ends after element {number:,})"
                )
                return [self._check(*element, origin), truncated], ""
            found = f"expected ',' or ']' after the value, found {end!r}"
            element, head = _Failure("invalid_json", found, self.pos), element[1]
        skipped = self._skip(head, element.at)
        return self._rejections(element, skipped, number), skipped.end

    def _element(self) -> tuple[Any, str] | _Failure:
        """The next element and its text, or why it cannot be parsed (``pos`` stays at its start then)."""
        if not self._peek():
            return _Failure("invalid_json", _TRUNCATED)
        want = READ_CHUNK
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except RecursionError:
                return _Failure("json_too_deep", "the element nests too deeply for the JSON parser")
            except json.JSONDecodeError as error:
                unterminated = error.msg.startswith("Unterminated")  # reported where the string starts
                maybe_cut = unterminated or error.pos >= len(self.text) - _LOOKAHEAD
                if not maybe_cut or self.eof:
                    return _Failure("invalid_json", error.msg.removesuffix(" at").lower(), error.pos)
                if (len(self.text) if unterminated else error.pos) - self.pos > self.max_bytes:
                    return _Failure("record_too_large", "")
            except ValueError as error:  # an integer too long to convert
                return _Failure("invalid_json", str(error))
            else:
                if self.eof or len(self.text) - end >= _LOOKAHEAD:
                    return self._take(value, end)
            self._more(want)
            want *= 2

    def _take(self, value: Any, end: int) -> tuple[Any, str]:
        text = self.text[self.pos : end]
        self.pos = end
        return value, text

    def _skip(self, head: str = "", at: int | None = None) -> _Skipped:
        """Step over the element at ``pos`` (``head``: its start, already taken) to the ',' or ']' that ends it
        or to the end of the file, a read at a time: memory stays bounded whatever its size. ``at``: a position
        in the element to give the byte offset of."""
        start = self._offset(self.pos)
        at = None if at is None else self._offset(at)
        if head:
            start -= self.gap + len(head.encode("utf-8", "surrogateescape"))
            # the whitespace between the value and what follows it, if it is still in the buffer
            head += self.text[self.pos - self.gap : self.pos] if self.gap <= self.pos else ""
        key = _FIRST_KEY.match(head or self.text, 0 if head else self.pos)
        starts = _StartCount(key.group(1) if key else None)
        raw, kept = [head], len(head)
        if self.pos > _PARSED_KEPT:  # the parser's errors count lines from the buffer's start: keep it short
            self._more(0)
        scan, index = _ElementEnd(), self.pos
        while True:
            end, index = scan.find(self.text, index)
            if end < 0 and self.eof:
                index = len(self.text)
            piece = self.text[self.pos : index]
            starts.add(piece)
            if kept < RAW_PREFIX_BYTES:
                raw.append(piece[: RAW_PREFIX_BYTES - kept])
                kept += len(raw[-1])
            self.pos = index
            if end >= 0 or self.eof:
                data = "".join(raw).encode("utf-8", "surrogateescape")[:RAW_PREFIX_BYTES]
                stop = self._offset(index)
                return _Skipped(self.text[end] if end >= 0 else "", data, start, stop, at, starts.count + 1)
            self._more(READ_CHUNK)
            index = 0

    def _rejections(self, failure: _Failure, skipped: _Skipped, number: int) -> Iterator[Rejected]:
        """The rejection of a stepped-over element; when the file ended inside it, also one for every other
        element the rest seems to hold."""
        origin, where = f"{self.label}:{number}", f"bytes {skipped.start:,} to {skipped.stop:,}"
        if not skipped.end and skipped.start == skipped.stop:  # nothing after the last ','
            truncated = f"{_TRUNCATED} (it ends at byte {skipped.stop:,}, where element {number:,} should start)"
            yield Rejected(failure.reason, origin, b"", truncated)
            return
        reason, detail = self._why(failure, skipped)
        if skipped.end:
            yield Rejected(reason, origin, skipped.raw, f"{detail} (element {number:,}, {where}); reading goes on")
            return
        count = skipped.starts
        detail = (
            f"{detail}; the file ends inside element {number:,} ({where}, the end): a string or bracket in it is "
            "never closed. Is the file truncated, or is a quote or bracket missing?"
        )
        if count > 1:
            detail += (
                f" This rest seems to hold {count:,} elements (counted where one seems to start); each is "
                f"rejected, elements {number + 1:,} to {number + count - 1:,} with no raw of their own"
            )
        yield Rejected(reason, origin, skipped.raw, detail)
        for other in range(number + 1, number + count):
            yield Rejected(
                "invalid_json",
                f"{self.label}:{other}",
                b"",
                f"one of the {count:,} elements that seem to be in the unreadable end of this array ({where}); "
                f"element {number:,}'s rejection keeps the start of it",
            )

    def _why(self, failure: _Failure, skipped: _Skipped) -> tuple[str, str]:
        """Reason and detail of a stepped-over element. Its size decides first, so that the reason does not
        depend on whether the parser met an error or the size cap first (which follows the read sizes)."""
        size = skipped.stop - skipped.start
        if size > self.max_bytes:
            return "record_too_large", (
                f"{size:,} bytes, more than max_record_bytes {self.max_bytes:,}; raw keeps the first "
                f"{len(skipped.raw):,} bytes. Split the record or raise --max-record-bytes"
            )
        return failure.reason, failure.detail if skipped.at is None else f"{failure.detail} at byte {skipped.at:,}"

    def _check(self, value: Any, text: str, origin: str) -> Item:
        def raw() -> bytes:
            return text.encode("utf-8", "surrogateescape")

        if len(text) > self.max_bytes:
            return Rejected(
                "record_too_large",
                origin,
                raw()[:RAW_PREFIX_BYTES],
                f"{len(text):,} characters, more than max_record_bytes {self.max_bytes:,}; raw keeps the start",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            return Rejected("invalid_utf8", origin, raw(), f"invalid UTF-8 at character {error.start}")
        if "\x00" in text:
            return Rejected("nul_byte", origin, raw(), f"NUL byte at character {text.index(chr(0))}")
        return _record_from_json(value, text, origin, raw)

    def _trailing(self, count: int) -> Iterator[Rejected]:
        if self._peek():
            yield Rejected(
                "invalid_json", self.label, self._rest(), f"data after the closing ']' of {count:,} elements"
            )


# --- CSV and TSV ---------------------------------------------------------------------------------------------

_CSV_DIALECT: dict[str, Any] = {}
_TSV_DIALECT: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
"""TSV has no quoting (as IANA defines it): a stray ``"`` in a corpus must not swallow the lines after it."""


class _RowTooLarge(Exception):
    """Raised through ``csv.reader`` to abandon a row that outgrew ``max_record_bytes``."""


class _CsvSource:
    """Feeds ``csv.reader`` one text line at a time and remembers the raw lines of the row being parsed, so a
    row keeps its first line number and exact bytes, and a run-on row (an unclosed quote) stays bounded."""

    def __init__(self, lines: Iterator[_Line], max_bytes: int) -> None:
        self._lines = lines
        self._max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self.first_line = 0
        self.raw: list[bytes] = []
        self.size = 0
        self.bad_utf8 = ""

    def __iter__(self) -> _CsvSource:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if not self.raw:
            self.first_line = line.number
        self.raw.append(line.data)
        self.size += line.size + 1
        if line.too_large or self.size > self._max_bytes:
            raise _RowTooLarge
        try:
            text = line.data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.bad_utf8 = self.bad_utf8 or f"{error.reason} at byte {error.start} of line {line.number}"
            text = line.data.decode("utf-8", "surrogateescape")
        return text + "\n"

    def take(self) -> tuple[int, bytes, str]:
        """The finished row's first line, raw bytes (without the final line end) and UTF-8 problem, if any."""
        raw = b"\n".join(self.raw)
        taken = (self.first_line, raw[:-1] if raw.endswith(b"\r") else raw, self.bad_utf8)
        self._reset()
        return taken


def _iter_csv(stream: BinaryIO, label: str, max_bytes: int, *, dialect: dict[str, Any]) -> Iterator[Item]:
    """CSV/TSV with a header row; every value is a string. Origins name the line where a row starts."""
    # The csv module refuses fields over 128 KiB by default; rows are already capped at max_bytes.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    source = _CsvSource(_iter_lines(_text_chunks(stream), max_bytes), max_bytes)
    header: list[str] | None = None
    while True:  # a new csv.reader after each abandoned row resumes at the next line
        try:
            for row in csv.reader(source, **dialect):
                first, raw, bad_utf8 = source.take()
                if not raw.strip():
                    continue
                if header is None:
                    header = _csv_header(row, raw, bad_utf8, first)
                    continue
                yield _csv_record(header, row, raw, bad_utf8, f"{label}:{first}")
            return
        except (_RowTooLarge, csv.Error) as error:
            first, raw, _ = source.take()
            if header is None:
                raise _BadFile(f"the header row at line {first} cannot be read ({error or 'too large'})") from None
            yield _csv_failure(error, raw, f"{label}:{first}", max_bytes)


def _csv_header(row: list[str], raw: bytes, bad_utf8: str, line: int) -> list[str]:
    if bad_utf8 or _NUL in raw:
        raise _BadFile(f"the header row at line {line} is not UTF-8 text ({bad_utf8 or 'NUL byte'})")
    repeated = sorted({name for name in row if row.count(name) > 1})
    if repeated:
        raise _BadFile(f"the header repeats column(s) {repeated}; rename them so that no column is lost")
    return row


def _csv_record(header: list[str], row: list[str], raw: bytes, bad_utf8: str, origin: str) -> Item:
    if _NUL in raw:
        return Rejected("nul_byte", origin, raw, f"NUL byte at offset {raw.index(_NUL)} of the row")
    if bad_utf8:
        return Rejected("invalid_utf8", origin, raw, bad_utf8)
    if len(row) != len(header):
        return Rejected("ragged_csv_row", origin, raw, f"{len(row)} fields in the row, {len(header)} in the header")
    return Record(dict(zip(header, row, strict=True)), origin)


def _csv_failure(error: Exception, raw: bytes, origin: str, max_bytes: int) -> Rejected:
    if isinstance(error, csv.Error):
        return Rejected("invalid_csv", origin, raw, str(error))
    return Rejected(
        "record_too_large",
        origin,
        raw[:RAW_PREFIX_BYTES],
        f"the row is larger than max_record_bytes {max_bytes:,} (an unclosed quote makes a row run on); raw "
        "keeps its start and reading resumes at the next line",
    )


# --- Parquet and Arrow ---------------------------------------------------------------------------------------


def _iter_parquet(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """Parquet, a batch at a time (never the whole file); columns become fields whatever their types."""
    import pyarrow.parquet as pq

    yield from _iter_batches(pq.ParquetFile(stream).iter_batches(batch_size=BATCH_ROWS), label, max_bytes)


def _iter_arrow(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """Arrow IPC, file format (``ARROW1`` magic, Feather v2) or stream format (what ``datasets`` writes)."""
    magic = stream.read(6)
    stream.seek(0)
    if magic == b"ARROW1":
        reader = pa.ipc.open_file(stream)
        yield from _iter_batches((reader.get_batch(i) for i in range(reader.num_record_batches)), label, max_bytes)
    else:
        yield from _iter_batches(pa.ipc.open_stream(stream), label, max_bytes)


def _iter_batches(batches: Iterable[pa.RecordBatch], label: str, max_bytes: int) -> Iterator[list[Item]]:
    row = 0
    for batch in batches:
        # A row's values lie in the batch's buffers, so a batch no larger than the cap needs no row sizes.
        sizes = _row_sizes(batch) if batch.nbytes > max_bytes else None
        for start in range(0, batch.num_rows, BATCH_ROWS):  # bound the Python objects made at once
            piece = batch.slice(start, BATCH_ROWS)
            piece_sizes = None if sizes is None else sizes[start : start + piece.num_rows]
            if piece_sizes is None or piece_sizes.max(initial=0) <= max_bytes:
                rows = piece.to_pylist()
                yield [Record(fields, f"{label}:{number}") for number, fields in enumerate(rows, row + 1)]
            else:
                yield _rows_with_large_ones(piece, piece_sizes, label, row, max_bytes)
            row += piece.num_rows


def _rows_with_large_ones(piece: pa.RecordBatch, sizes: np.ndarray, label: str, row: int, max_bytes: int) -> list[Item]:
    """The rows of ``piece``, those over ``max_bytes`` rejected without being turned into Python objects."""
    large = sizes > max_bytes
    fields = iter(piece.filter(pa.array(~large)).to_pylist())
    return [
        _row_too_large(piece, index, int(sizes[index]), f"{label}:{row + index + 1}", max_bytes)
        if large[index]
        else Record(next(fields), f"{label}:{row + index + 1}")
        for index in range(piece.num_rows)
    ]


def _row_too_large(piece: pa.RecordBatch, index: int, size: int, origin: str, max_bytes: int) -> Rejected:
    one = piece.slice(index, 1)
    cut = pa.RecordBatch.from_arrays([_cut_cells(column) for column in one.columns], names=one.schema.names)
    [fields] = cut.to_pylist()
    raw = json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8", "replace")[:RAW_PREFIX_BYTES]
    return Rejected(
        "record_too_large",
        origin,
        raw,
        f"its values come to {size:,} bytes, more than max_record_bytes {max_bytes:,}; raw keeps the first "
        f"{len(raw):,} bytes of the row as JSON (long text cut). Split the record or raise --max-record-bytes",
    )


def _cut_cells(column: pa.Array) -> pa.Array:
    """Text and binary cells cut to the raw prefix, so that a huge cell is never copied into Python whole."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.utf8_slice_codeunits(column, 0, RAW_PREFIX_BYTES)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pc.binary_slice(column, 0, RAW_PREFIX_BYTES)
    return column


def _row_sizes(batch: pa.RecordBatch) -> np.ndarray:
    """The bytes of each row's values, summed over the columns (see ``_value_sizes``)."""
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for column in batch.columns:
        sizes += _value_sizes(column)
    return sizes


def _value_sizes(array: pa.Array) -> np.ndarray:
    """The bytes of each value of ``array``: text and binary as stored, fixed-width values at their width, lists
    and structs as the sum of their parts. Computed a column at a time with Arrow's kernels, not per value; a
    type not handled here falls back to one slice per value."""
    kind = array.type
    if pa.types.is_null(kind):
        return np.zeros(len(array), dtype=np.int64)
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or (pa.types.is_large_binary(kind))
    ):
        return pc.binary_length(array).fill_null(0).to_numpy().astype(np.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        offsets = array.offsets.to_numpy().astype(np.int64)
        first = offsets[0] if len(offsets) else 0
        children = _value_sizes(array.values.slice(first, offsets[-1] - first)) if len(offsets) else []
        totals = np.concatenate([[0], np.cumsum(children, dtype=np.int64)])
        return totals[offsets[1:] - first] - totals[offsets[:-1] - first]
    if pa.types.is_struct(kind):
        sizes = np.zeros(len(array), dtype=np.int64)
        for field in array.flatten():  # flatten keeps the array's slice
            sizes += _value_sizes(field)
        return sizes
    if pa.types.is_dictionary(kind):
        indices = array.indices.fill_null(0).to_numpy().astype(np.int64)
        return _value_sizes(array.dictionary)[indices] if len(array.dictionary) else np.zeros(len(array), np.int64)
    try:
        return np.full(len(array), max(kind.bit_width // 8, 1), dtype=np.int64)
    except ValueError:  # not fixed-width: a type seldom met in a corpus
        return np.array([array.slice(index, 1).nbytes for index in range(len(array))], dtype=np.int64)


_Parser = Callable[[BinaryIO, str, int], Iterator[list[Item]]]
_PARSERS: dict[str, _Parser] = {
    "jsonl": _iter_jsonl,
    "json": _iter_json,
    "csv": lambda stream, label, max_bytes: _in_lists(_iter_csv(stream, label, max_bytes, dialect=_CSV_DIALECT)),
    "tsv": lambda stream, label, max_bytes: _in_lists(_iter_csv(stream, label, max_bytes, dialect=_TSV_DIALECT)),
    "parquet": _iter_parquet,
    "arrow": _iter_arrow,
}


# --- resolving inputs ----------------------------------------------------------------------------------------

_HF_METADATA = ("state.json", "dataset_info.json", "dataset_dict.json")


def expand_inputs(patterns: Sequence[str], *, match: Match, open_binary: OpenBinary) -> list[InputFile]:
    """Resolve files, globs and directories to a sorted, de-duplicated list of files, before any work starts.

        >>> expand_inputs(["data/*.jsonl", "hf_saved/"], match=local_match, open_binary=open_local)

    ``match(pattern)`` lists the files (not directories) a glob matches, like Beam's ``FileSystems.match``.
    A directory is read non-recursively (names starting with ``_`` or ``.`` are skipped, as Hadoop/Spark
    write ``_SUCCESS`` and ``.crc`` files), unless ``datasets.save_to_disk`` wrote it: then its Arrow files,
    of every split. Raises ``InputError`` for a pattern that matches nothing, a file seqpack cannot read, or a
    local path that is not a regular file (a FIFO or a device such as ``/dev/zero`` would hang the run).
    """
    if not patterns:
        raise InputError("no input given: pass --input with a file, a glob or a directory")
    found: dict[str, tuple[InputFile, str]] = {}
    for pattern in patterns:
        if not _GLOB_CHARS.search(pattern) and not os.path.isdir(pattern):  # /dev/zero has no known suffix
            _refuse_special([_not_regular(pattern, pattern)])
        for input_file in _expand_pattern(pattern, match, open_binary):
            found.setdefault(input_file.path, (input_file, pattern))
    files = sorted(found.values(), key=lambda pair: pair[0].path)
    _refuse_special([_not_regular(input_file.path, pattern) for input_file, pattern in files])
    return [input_file for input_file, _ in files]


def _refuse_special(problems: list[str]) -> None:
    if any(problems):
        raise InputError(
            f"{'; '.join(filter(None, problems))}: seqpack cannot read such a file to a known end (a FIFO waits "
            "for a writer, a device such as /dev/zero never ends); write the data to a regular file first and "
            "pass that file"
        )


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(path: str, pattern: str) -> str:
    """What is wrong with a local input that is not a regular file ('' if nothing is): reading it would hang the
    run instead of failing it. A path that cannot be examined is left to the reader (an ``unreadable_file``)."""
    if "://" in path:
        return ""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    source = "" if pattern == path else f" (matched by {printable_path(pattern)!r})"
    return f"{printable_path(path)}{source} is not a regular file but {kind}"


def _expand_pattern(pattern: str, match: Match, open_binary: OpenBinary) -> list[InputFile]:
    if _GLOB_CHARS.search(pattern):
        return _expand_glob(pattern, match)
    matched = [] if pattern.endswith("/") else _list(match, pattern)
    if matched and (fmt := _format_or_none(matched[0])) is not None:
        return [InputFile(matched[0], fmt, matched[0])]
    listing = _list(match, _join(pattern, "*"))
    if listing:
        return _expand_directory(pattern.rstrip("/"), listing, open_binary)
    if matched:
        detect_format(matched[0])  # raises, naming the unsupported type
    raise InputError(f"no file or directory {pattern!r}: check the path (and that it is readable)")


def _expand_glob(pattern: str, match: Match) -> list[InputFile]:
    keep_hidden = posixpath.basename(pattern).startswith(("_", "."))
    paths = [p for p in _list(match, pattern) if keep_hidden or not _is_hidden(p)]
    if not paths:
        raise InputError(f"no file matches {pattern!r}: check the path, and quote the glob so the shell leaves it")
    files = []
    for path in paths:
        if posixpath.basename(path) in _HF_METADATA:
            raise InputError(
                f"{pattern!r} matches {path}, part of a dataset saved by datasets.save_to_disk: pass the "
                f"dataset's directory ({posixpath.dirname(path)}) instead of a glob"
            )
        try:
            files.append(InputFile(path, detect_format(path), path))
        except InputError as error:
            raise InputError(f"{error} (matched by {pattern!r}; narrow the glob, e.g. '*.jsonl')") from None
    return files


def _expand_directory(directory: str, listing: Sequence[str], open_binary: OpenBinary) -> list[InputFile]:
    names = {posixpath.basename(path) for path in listing}
    if "dataset_dict.json" in names:
        splits = _read_metadata(_join(directory, "dataset_dict.json"), "splits", open_binary)
        return [
            f
            for split in splits
            for f in _hf_dataset(_join(directory, _safe_name(split, directory)), directory, split, open_binary)
        ]
    if {"state.json", "dataset_info.json"} <= names:
        return _hf_dataset(directory, directory, None, open_binary)
    files, skipped = [], []
    for path in sorted(p for p in listing if not _is_hidden(p)):
        fmt = _format_or_none(path)
        if fmt is None:
            skipped.append(posixpath.basename(path))
        else:
            files.append(InputFile(path, fmt, path))
    if not files:
        has = f" (it holds {_some(skipped)})" if skipped else ""
        raise InputError(
            f"directory {directory!r} holds no file seqpack reads ({', '.join(sorted(FORMATS))}){has}; "
            "subdirectories are not searched: use a glob such as 'dir/**/*.jsonl'"
        )
    if skipped:
        # Said, not silent: a corpus file with an unexpected suffix (.txt, .jsonl.txt) would otherwise go missing.
        logging.getLogger("seqpack").warning(
            "skipped %d file%s in %s that %s not in a format seqpack reads (%s): only %s files, compressed or not, "
            "are read from a directory; rename a file to its format's suffix to read it",
            len(skipped), "" if len(skipped) == 1 else "s", printable_path(directory),
            "is" if len(skipped) == 1 else "are", _some(skipped), ", ".join(sorted(FORMATS)),
        )
    return files


def _some(names: Sequence[str], shown: int = 3) -> str:
    """A few names for a message: ``a, b, c, ... (7 in all)``."""
    listed = ", ".join(printable_path(name) for name in names[:shown])
    return listed if len(names) <= shown else f"{listed}, ... ({len(names):,} in all)"


def _hf_dataset(data_dir: str, label_dir: str, split: str | None, open_binary: OpenBinary) -> list[InputFile]:
    """The Arrow files a ``datasets`` ``state.json`` lists; origins read ``dir[split]:row``."""
    entries = _read_metadata(_join(data_dir, "state.json"), "_data_files", open_binary)
    try:
        names = [_safe_name(entry["filename"], data_dir) for entry in entries]
    except (KeyError, TypeError):
        raise InputError(f"{_join(data_dir, 'state.json')} lists _data_files without file names") from None
    base = f"{label_dir}[{split}]" if split else label_dir
    return [
        InputFile(_join(data_dir, name), "arrow", base if len(names) == 1 else f"{base}/{name}", split)
        for name in names
    ]


def _read_metadata(path: str, key: str, open_binary: OpenBinary) -> list[Any]:
    try:
        stream = open_binary(path)
        try:
            value = json.loads(stream.read())[key]
        finally:
            stream.close()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"cannot read {key!r} from {path} ({type(error).__name__}: {error}); was the dataset saved "
            "completely with datasets' save_to_disk?"
        ) from None
    if not isinstance(value, list):
        raise InputError(f"{path}: {key!r} should be a list, got {_json_type(value)}")
    return value


def _safe_name(name: Any, directory: str) -> str:
    """A split or file name from dataset metadata must stay inside the dataset directory."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\:"):
        raise InputError(f"{directory}: dataset metadata names {name!r}, which is not a plain file name")
    return name


def _format_or_none(path: str) -> str | None:
    try:
        return detect_format(path)
    except InputError:
        if path.lower().endswith(tuple(FORMATS) + COMPRESSION_SUFFIXES):
            raise  # a known format that cannot be read (compressed Parquet): say so rather than skip it
        return None


def _list(match: Match, pattern: str) -> list[str]:
    try:
        return list(match(pattern))
    except InputError:
        raise
    except (OSError, ValueError) as error:
        raise InputError(f"cannot list {pattern!r}: {error}") from None


def _is_hidden(path: str) -> bool:
    return posixpath.basename(path.rstrip("/")).startswith(("_", "."))


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"


# --- local files ---------------------------------------------------------------------------------------------


def local_match(pattern: str) -> list[str]:
    """Local paths other than directories matching a glob, as Beam's ``FileSystems.match`` lists them (a FIFO
    or device too, which ``expand_inputs`` then refuses by name)."""
    return sorted(path for path in glob.glob(pattern, recursive=True) if not os.path.isdir(path))


def open_local(path: str) -> BinaryIO:
    """Open a local file, decompressing by suffix as Beam's ``CompressionTypes.AUTO`` does."""
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if lower.endswith(".bz2"):
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if lower.endswith((".xz", ".lzma")):
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if lower.endswith((".zst", ".zstd")):
        try:
            import zstandard
        except ImportError as error:
            raise OSError("reading .zst files needs the zstandard package: pip install zstandard") from error
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # type: ignore[return-value]
    if lower.endswith(".deflate"):
        raise OSError("read .deflate files through Beam's FileSystems (seqpack run does)")
    return open(path, "rb")
