"""The Arrow IPC file footer, read by hand: ``ShardSet.open`` learns every record batch's size without decoding
it, as it does from a Parquet footer.

    rows = ipc_batch_rows(handle)        # [1024, 1024, 517]
"""

from __future__ import annotations

from typing import BinaryIO


def ipc_batch_rows(handle: BinaryIO) -> list[int]:
    """Row counts of an Arrow IPC file's record batches, from metadata only (no body is read or decoded).

    pyarrow only reports a batch's length after decoding it; the file footer and each batch's message
    header (both flatbuffers) carry it, so we read those few bytes ourselves.
    """
    handle.seek(0, 2)
    size = handle.tell()
    if size < 18:
        raise ValueError("file too short for Arrow IPC")
    handle.seek(size - 10)
    tail = handle.read(10)
    if tail[4:] != b"ARROW1":
        raise ValueError("no Arrow IPC file magic at the end")
    footer_length = int.from_bytes(tail[:4], "little", signed=True)
    if not 0 < footer_length <= size - 18:
        raise ValueError("bad Arrow IPC footer length")
    handle.seek(size - 10 - footer_length)
    footer = _Flatbuffer(handle.read(footer_length))
    root = footer.root()
    blocks = footer.struct_vector(root, field=3, struct_size=24)
    rows = []
    for position in blocks:
        offset = footer.i64(position)
        metadata_length = footer.i32(position + 8)
        handle.seek(offset)
        rows.append(_batch_length(handle.read(metadata_length)))
    return rows


def _batch_length(metadata: bytes) -> int:
    """The ``length`` of a RecordBatch message, from its encapsulated metadata."""
    start = 8 if metadata[:4] == b"\xff\xff\xff\xff" else 4
    message = _Flatbuffer(metadata[start:])
    root = message.root()
    if message.u8_field(root, field=1) != 3:  # MessageHeader.RecordBatch
        raise ValueError("an Arrow IPC record batch block does not hold a record batch")
    header = message.table_field(root, field=2)
    return message.i64_field(header, field=0)


class _Flatbuffer:
    """Just enough flatbuffer reading for Arrow's footer and message headers (little-endian, no schema)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return int.from_bytes(self.data[pos : pos + 4], "little")

    def i32(self, pos: int) -> int:
        return int.from_bytes(self.data[pos : pos + 4], "little", signed=True)

    def i64(self, pos: int) -> int:
        return int.from_bytes(self.data[pos : pos + 8], "little", signed=True)

    def root(self) -> int:
        return self.u32(0)

    def _field(self, table: int, field: int) -> int:
        """Offset of ``field`` inside ``table``, 0 when absent (the field has its default)."""
        vtable = table - self.i32(table)
        vtable_size = int.from_bytes(self.data[vtable : vtable + 2], "little")
        slot = 4 + 2 * field
        if slot + 2 > vtable_size:
            return 0
        return int.from_bytes(self.data[vtable + slot : vtable + slot + 2], "little")

    def u8_field(self, table: int, field: int) -> int:
        offset = self._field(table, field)
        return self.data[table + offset] if offset else 0

    def i64_field(self, table: int, field: int) -> int:
        offset = self._field(table, field)
        return self.i64(table + offset) if offset else 0

    def table_field(self, table: int, field: int) -> int:
        offset = self._field(table, field)
        if not offset:
            raise ValueError("a required flatbuffer table is missing")
        return table + offset + self.u32(table + offset)

    def struct_vector(self, table: int, field: int, struct_size: int) -> list[int]:
        offset = self._field(table, field)
        if not offset:
            return []
        vector = table + offset + self.u32(table + offset)
        count = self.u32(vector)
        if vector + 4 + count * struct_size > len(self.data):
            raise ValueError("flatbuffer vector runs past the footer")
        return [vector + 4 + i * struct_size for i in range(count)]
