"""Parquet and Arrow IPC files, a record batch at a time (never the whole file): columns become fields whatever
their types, and a row is numbered from 1 across the file.

A row whose values come to more than ``max_record_bytes`` is rejected without being turned into Python objects;
sizes are computed a column at a time with Arrow's kernels, and only for a batch larger than the cap.

    >>> for items in iter_parquet(open("pairs.parquet", "rb"), "pairs.parquet", 64 << 20):
    ...     print(len(items))
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seqpack.inputs.records import BATCH_ROWS, Item, Record, Rejected
from seqpack.schemas.rejected import RAW_PREFIX_BYTES


def iter_parquet(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
    """Parquet, a batch at a time (never the whole file); columns become fields whatever their types."""
    import pyarrow.parquet as pq

    yield from _iter_batches(pq.ParquetFile(stream).iter_batches(batch_size=BATCH_ROWS), label, max_bytes)


def iter_arrow(stream: BinaryIO, label: str, max_bytes: int) -> Iterator[list[Item]]:
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
