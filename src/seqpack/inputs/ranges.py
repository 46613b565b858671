"""Split big JSON lines files into byte ranges, so that one big file is read by every worker at once.

Each range starts at the beginning of a line and knows that line's number, so records keep their
``file:line`` origins, and a worker reads, renders and tokenizes its range without sending a single record to
another process. Only local, uncompressed files are split (finding line starts means reading the file once,
which is cheap on a local disk); other files are read whole.

    >>> parts = split_input(InputFile("big.jsonl", "jsonl", "big.jsonl"), target_bytes=32 << 20)
"""

from __future__ import annotations

import codecs
import dataclasses
import os

from seqpack.inputs.formats import COMPRESSION_SUFFIXES
from seqpack.inputs.records import InputFile

RANGE_BYTES = 16 << 20
"""About how many bytes each range of a split file holds."""
_SCAN_CHUNK = 8 << 20
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def can_split(input_file: InputFile) -> bool:
    """JSON lines on the local disk, not compressed (a compressed stream cannot be entered in the middle)."""
    path = input_file.path
    return (
        input_file.fmt == "jsonl"
        and "://" not in path
        and not path.lower().endswith(COMPRESSION_SUFFIXES)
        and os.path.isfile(path)
    )


def line_starts(path: str, target_bytes: int) -> list[tuple[int, int]]:
    """``(offset, line number)`` of the first line starting at or after every multiple of ``target_bytes``
    (offset 0, line 1 first), found in one pass over the file."""
    size = os.path.getsize(path)
    wanted = list(range(target_bytes, size, target_bytes))
    starts = [(0, 1)]
    lines_before = 0
    offset = 0
    with open(path, "rb") as handle:
        while wanted and (chunk := handle.read(_SCAN_CHUNK)):
            end = offset + len(chunk)
            while wanted and wanted[0] < end:
                newline = chunk.find(b"\n", max(wanted[0] - offset, 0))
                if newline < 0:  # no line ends in the rest of this chunk: look in the next one
                    wanted[0] = end
                    break
                cut = offset + newline + 1
                if cut < size and cut > starts[-1][0]:
                    starts.append((cut, lines_before + chunk.count(b"\n", 0, newline + 1) + 1))
                while wanted and wanted[0] < cut:
                    wanted.pop(0)
            lines_before += chunk.count(b"\n")
            offset = end
    return starts


def split_input(input_file: InputFile, *, target_bytes: int = RANGE_BYTES) -> list[InputFile]:
    """The file as byte ranges of about ``target_bytes`` each (one range if small), or as it is when it cannot
    be split (see ``can_split``)."""
    if not can_split(input_file):
        return [input_file]
    size = os.path.getsize(input_file.path)
    with open(input_file.path, "rb") as handle:
        if handle.read(4).startswith(_WIDE_BOMS):  # read whole, to be refused once as unreadable
            return [input_file]
    starts = line_starts(input_file.path, target_bytes)
    stops = [offset for offset, _ in starts[1:]] + [size]
    return [
        dataclasses.replace(input_file, start=start, stop=stop, first_line=line, part=(index, len(starts)))
        for index, ((start, line), stop) in enumerate(zip(starts, stops, strict=True))
    ]


def split_inputs(files: list[InputFile], *, target_bytes: int = RANGE_BYTES) -> list[InputFile]:
    """Every file of ``files`` as ``split_input`` cuts it, in order."""
    return [part for input_file in files for part in split_input(input_file, target_bytes=target_bytes)]
