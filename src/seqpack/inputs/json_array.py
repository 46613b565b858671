"""``.json`` files: a JSON array of objects, streamed one element at a time, or JSON lines.

Memory follows the largest element, not the file. A bad element (invalid, too deep, too large) is stepped over to
the ``,`` or ``]`` that ends it at the array's level and rejected alone; reading resyncs there and goes on.

    >>> for items in iter_json(open("pairs.json", "rb"), "pairs.json", 64 << 20):
    ...     print([item.origin for item in items])              # pairs.json:1, pairs.json:2, ...
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from seqpack.inputs import streams
from seqpack.inputs.json_values import DECODER, record_from_json
from seqpack.inputs.jsonl import jsonl_from_chunks
from seqpack.inputs.records import Item, Rejected
from seqpack.inputs.streams import in_lists, prepend, text_chunks
from seqpack.schemas.rejected import RAW_PREFIX_BYTES


def iter_json(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """A ``.json`` file: a JSON array of objects if it starts with ``[``, else JSON lines."""
    chunks = text_chunks(stream)
    head = b""
    for chunk in chunks:
        head += chunk
        if head.strip():
            break
    rest = prepend(head, chunks)
    if head.lstrip()[:1] == b"[":
        yield from in_lists(_JsonArray(rest, label, max_bytes).items())
    else:
        yield from jsonl_from_chunks(rest, label, max_bytes)


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
            self._more(streams.READ_CHUNK)
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
        want = streams.READ_CHUNK
        while True:
            try:
                value, end = DECODER.raw_decode(self.text, self.pos)
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
            self._more(streams.READ_CHUNK)
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
        return record_from_json(value, text, origin, raw)

    def _trailing(self, count: int) -> Iterator[Rejected]:
        if self._peek():
            yield Rejected(
                "invalid_json", self.label, self._rest(), f"data after the closing ']' of {count:,} elements"
            )
