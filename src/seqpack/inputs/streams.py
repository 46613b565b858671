"""Byte streams for the text readers: read in bounded chunks, byte-order marks handled, split into lines of
bounded size, and records handed on in lists.

Memory stays bounded by ``max_record_bytes`` plus a few read chunks whatever the file size: a line longer than
the cap is never held whole, only the prefix that ``Rejected.raw`` keeps.

    >>> for line in iter_lines(text_chunks(stream), max_bytes=1 << 20):
    ...     print(line.number, line.too_large)
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from seqpack.inputs.records import BATCH_ROWS, Item, Rejected, printable_path
from seqpack.schemas.rejected import RAW_PREFIX_BYTES

READ_CHUNK = 1 << 20
"""Bytes per read. Readers in other modules look it up here when they read, so a test can shrink it to hit every
chunk boundary."""
NUL = b"\x00"


class BadFile(Exception):
    """The file as a whole is unusable; the message says why and how to fix it."""


def unreadable_detail(fmt: str, count: int, error: Exception) -> str:
    """The detail of an ``unreadable_file`` rejection: what failed, after how many records."""
    message = str(error) if isinstance(error, BadFile) else f"{type(error).__name__}: {error}"
    where = f"after {count:,} records" if count else "before any record"
    return printable_path(f"cannot read this {fmt} file {where}: {message}")  # a message may quote the path


def text_chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The file's bytes in chunks, with a UTF-8 byte-order mark removed and UTF-16/32 files refused."""
    return without_bom(iter(lambda: stream.read(READ_CHUNK), b""))


def without_bom(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` with a UTF-8 byte-order mark removed from the start; UTF-16/32 (by their marks) refused."""
    first = next(chunks, b"")
    while 0 < len(first) < 4:  # a short read must not split the byte-order mark
        more = next(chunks, b"")
        if not more:
            break
        first += more
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadFile(
            "it is UTF-16/UTF-32 encoded (it starts with that byte-order mark); convert it to UTF-8, "
            "e.g. iconv -f UTF-16 -t UTF-8"
        )
    if first.startswith(codecs.BOM_UTF8):
        first = first[len(codecs.BOM_UTF8) :]
    if first:
        yield first
    yield from chunks


def range_chunks(stream: BinaryIO, length: int) -> Iterator[bytes]:
    """At most ``length`` bytes of ``stream`` from where it stands, in chunks (a byte range of a file)."""
    while length > 0:
        chunk = stream.read(min(READ_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


class Line(NamedTuple):
    """One line of a text file, or the prefix of one over ``max_bytes``."""

    number: int
    """1-based physical line number."""
    data: bytes
    """The line without its ``\\n``; only the first ``RAW_PREFIX_BYTES`` when ``too_large``."""
    size: int
    too_large: bool


def iter_lines(chunks: Iterable[bytes], max_bytes: int, first_line: int = 1) -> Iterator[Line]:
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


def _finish_line(number: int, pieces: list[bytes], last: bytes, size: int, max_bytes: int) -> Line:
    if size > max_bytes:
        return Line(number, b"".join([*pieces, last[:RAW_PREFIX_BYTES]])[:RAW_PREFIX_BYTES], size, True)
    return Line(number, b"".join([*pieces, last]) if pieces else last, size, False)


def too_large(line: Line, origin: str, max_bytes: int) -> Rejected:
    """The rejection of a line over ``max_bytes``, keeping its prefix."""
    return Rejected(
        "record_too_large",
        origin,
        line.data,
        f"{line.size:,} bytes, more than max_record_bytes {max_bytes:,}; raw keeps the first "
        f"{len(line.data):,} bytes. Split the record or raise --max-record-bytes",
    )


def in_lists(items: Iterable[Item], size: int = BATCH_ROWS) -> Iterator[list[Item]]:
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


def prepend(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``head`` (a part already read), then the rest of ``chunks``."""
    if head:
        yield head
    yield from chunks
