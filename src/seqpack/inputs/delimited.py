"""CSV and TSV with a header row: every value is a string, and a record's origin names the line where its row
starts (a quoted field may span lines).

A row that outgrows ``max_record_bytes`` (an unclosed quote makes a row run on) is rejected with its start, and
reading resumes at the next line.

    >>> for items in iter_csv(open("pairs.csv", "rb"), "pairs.csv", 64 << 20):
    ...     print([item.origin for item in items])              # pairs.csv:2, pairs.csv:3, ...
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any, BinaryIO

from seqpack.inputs.records import Item, Record, Rejected
from seqpack.inputs.streams import NUL, BadFile, Line, in_lists, iter_lines, text_chunks
from seqpack.schemas.rejected import RAW_PREFIX_BYTES

_CSV_DIALECT: dict[str, Any] = {}
_TSV_DIALECT: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
"""TSV has no quoting (as IANA defines it): a stray ``"`` in a corpus must not swallow the lines after it."""


class _RowTooLarge(Exception):
    """Raised through ``csv.reader`` to abandon a row that outgrew ``max_record_bytes``."""


class _CsvSource:
    """Feeds ``csv.reader`` one text line at a time and remembers the raw lines of the row being parsed, so a
    row keeps its first line number and exact bytes, and a run-on row (an unclosed quote) stays bounded."""

    def __init__(self, lines: Iterator[Line], max_bytes: int) -> None:
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


def _iter_rows(stream: BinaryIO, label: str, max_bytes: int, *, dialect: dict[str, Any]) -> Iterator[Item]:
    """CSV/TSV with a header row; every value is a string. Origins name the line where a row starts."""
    # The csv module refuses fields over 128 KiB by default; rows are already capped at max_bytes.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes))
    source = _CsvSource(iter_lines(text_chunks(stream), max_bytes), max_bytes)
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
                raise BadFile(f"the header row at line {first} cannot be read ({error or 'too large'})") from None
            yield _csv_failure(error, raw, f"{label}:{first}", max_bytes)


def _csv_header(row: list[str], raw: bytes, bad_utf8: str, line: int) -> list[str]:
    if bad_utf8 or NUL in raw:
        raise BadFile(f"the header row at line {line} is not UTF-8 text ({bad_utf8 or 'NUL byte'})")
    repeated = sorted({name for name in row if row.count(name) > 1})
    if repeated:
        raise BadFile(f"the header repeats column(s) {repeated}; rename them so that no column is lost")
    return row


def _csv_record(header: list[str], row: list[str], raw: bytes, bad_utf8: str, origin: str) -> Item:
    if NUL in raw:
        return Rejected("nul_byte", origin, raw, f"NUL byte at offset {raw.index(NUL)} of the row")
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


def iter_csv(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """A ``.csv`` file's records, a list at a time."""
    return in_lists(_iter_rows(stream, label, max_bytes, dialect=_CSV_DIALECT))


def iter_tsv(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """A ``.tsv`` file's records, a list at a time."""
    return in_lists(_iter_rows(stream, label, max_bytes, dialect=_TSV_DIALECT))
