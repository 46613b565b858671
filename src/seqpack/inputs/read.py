"""Read one input file (or one byte range of a JSON lines file) into records, a list at a time, without ever
letting bad input crash a run.

Each format's parser turns a byte stream into lists of ``Record``/``Rejected``; here a file is opened, handed to
its parser, and any failure on the way (a corrupt, truncated or vanished file) becomes one accounted
``unreadable_file`` rejection after the records read before it.

    >>> for items in iter_input_lists(input_file, beam_open):   # beam_open: seqpack.transforms.read
    ...     print([item.origin for item in items])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from seqpack.inputs.columnar import iter_arrow, iter_parquet
from seqpack.inputs.delimited import iter_csv, iter_tsv
from seqpack.inputs.formats import detect_format
from seqpack.inputs.json_array import iter_json
from seqpack.inputs.jsonl import iter_jsonl, iter_jsonl_range
from seqpack.inputs.records import DEFAULT_MAX_RECORD_BYTES, InputFile, Item, OpenBinary, Rejected, printable_path
from seqpack.inputs.streams import unreadable_detail

_Parser = Callable[[BinaryIO, str, int], Iterator[list[Item]]]
_PARSERS: dict[str, _Parser] = {
    "jsonl": iter_jsonl,
    "json": iter_json,
    "csv": iter_csv,
    "tsv": iter_tsv,
    "parquet": iter_parquet,
    "arrow": iter_arrow,
}
"""Each format's parser: (stream, label, max_record_bytes) to lists of items, in file order."""


def iter_file_lists(
    path: str,
    open_binary: OpenBinary,
    fmt: str | None = None,
    *,
    label: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[list[Item]]:
    """A ``Record`` or ``Rejected`` for every record of ``path``, in file order, a list at a time (for a reader, a
    list costs less than an item); never raises for bad content.

    A file that cannot be opened or parsed any further yields one ``Rejected("unreadable_file")`` whose
    origin is the bare label and whose detail says how many records came before the failure.
    """
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
        yield [Rejected("unreadable_file", label, b"", unreadable_detail(fmt, count, error))]


def iter_input_lists(input_file: InputFile, open_binary: OpenBinary, **kwargs: Any) -> Iterator[list[Item]]:
    """``iter_file_lists`` for a resolved ``InputFile``, or for the byte range of one that it names."""
    if input_file.is_range:
        return iter_jsonl_range(input_file, open_binary, **kwargs)
    return iter_file_lists(input_file.path, open_binary, input_file.fmt, label=input_file.label, **kwargs)
