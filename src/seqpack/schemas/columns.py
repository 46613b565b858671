"""The Arrow schema of a shard: one row per block (or per example with ``--packing none``)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_NAME = "seqpack"
FORMAT_VERSION = 3
"""2: the manifest lists generations (``schemas.manifest.GenerationInfo``); shards are unchanged.
3: mixtures: the manifest lists the run's ``sources`` and a mixture's shards have a ``source_id`` column."""
READABLE_FORMAT_VERSIONS = (1, 2, 3)
"""Manifests this seqpack reads: a version-1 manifest is read as a dataset of one generation; version-1 and -2
datasets have no sources (their examples have no ``source_id``)."""

BLOCK_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("attention_mask", pa.list_(pa.int8()), nullable=False),
        pa.field("position_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("seq_lens", pa.list_(pa.int32()), nullable=False),
    ]
)
"""Columns of every shard, in this order.

- ``input_ids``: token ids, padded to ``max_length`` when packed.
- ``labels``: ``input_ids`` with ``-100`` where no loss is taken (source tokens, padding, example starts).
- ``attention_mask``: 1 for real tokens, 0 for padding.
- ``position_ids``: restart at 0 at every example in the block; 0 on padding.
- ``seq_lens``: lengths of the examples in the block, in order (padding excluded).
"""

TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids")

SOURCE_ID = "source_id"
SOURCE_ID_FIELD = pa.field(SOURCE_ID, pa.list_(pa.int16()), nullable=False)
"""Only in the shards of a mixture (``RunConfig.sources``): the source id of each example of the block, aligned
with ``seq_lens`` (the index of its source in the manifest's ``sources``)."""
MIXTURE_SCHEMA = BLOCK_SCHEMA.append(SOURCE_ID_FIELD)


def shard_schema(with_sources: bool) -> pa.Schema:
    """The columns of a shard: ``BLOCK_SCHEMA``, plus ``source_id`` in a mixture's."""
    return MIXTURE_SCHEMA if with_sources else BLOCK_SCHEMA


def list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32, copy=False), type=pa.int32()),
        pa.array(values, type=value_type),
    )


def blocks_to_table(
    *,
    row_offsets: np.ndarray,
    input_ids: np.ndarray,
    labels: np.ndarray,
    attention_mask: np.ndarray,
    position_ids: np.ndarray,
    seq_len_offsets: np.ndarray,
    seq_lens: np.ndarray,
    source_ids: np.ndarray | None = None,
) -> pa.Table:
    """Build a shard table from flat numpy arrays without any per-token Python loop.

    ``row_offsets`` (length rows + 1) cuts the four flat token arrays into rows; ``seq_len_offsets`` does
    the same for ``seq_lens`` and, in a mixture, ``source_ids`` (aligned with ``seq_lens``).
    """
    columns = [
        list_array(row_offsets, input_ids.astype(np.int32, copy=False), pa.int32()),
        list_array(row_offsets, labels.astype(np.int32, copy=False), pa.int32()),
        list_array(row_offsets, attention_mask.astype(np.int8, copy=False), pa.int8()),
        list_array(row_offsets, position_ids.astype(np.int32, copy=False), pa.int32()),
        list_array(seq_len_offsets, seq_lens.astype(np.int32, copy=False), pa.int32()),
    ]
    if source_ids is not None:
        columns.append(list_array(seq_len_offsets, source_ids.astype(np.int16, copy=False), pa.int16()))
    return pa.Table.from_arrays(columns, schema=shard_schema(source_ids is not None))


def check_schema(schema: pa.Schema, where: str) -> None:
    """Raise ``DatasetFormatError`` naming ``where`` unless ``schema`` has the block columns and types."""
    from seqpack.schemas.manifest import DatasetFormatError

    for field in BLOCK_SCHEMA:
        if field.name not in schema.names:
            raise DatasetFormatError(f"{where}: column {field.name!r} is missing; this is not a seqpack shard")
        actual = schema.field(field.name).type
        if actual != field.type:
            raise DatasetFormatError(
                f"{where}: column {field.name!r} has type {actual}, expected {field.type}"
            )
    if SOURCE_ID in schema.names and schema.field(SOURCE_ID).type != SOURCE_ID_FIELD.type:
        raise DatasetFormatError(
            f"{where}: column {SOURCE_ID!r} has type {schema.field(SOURCE_ID).type}, expected {SOURCE_ID_FIELD.type}"
        )


_PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": False, "write_statistics": False,
                    "write_page_checksum": True}
"""Fixed Parquet writer options: no timestamps, nothing that depends on the machine, so bytes are reproducible."""
_ARROW_OPTIONS = {"compression": "zstd"}


def serialize_shard(table: pa.Table, file_format: str, row_group_size: int) -> bytes:
    """The shard's bytes; the same table always gives the same bytes (no timestamps, fixed options).

    Parquet pages carry a CRC32 of their bytes, which readers check as they decode (``seqpack.dataset``): without
    it a flipped bit in a page often decodes into other token ids, silently.
    """
    buffer = io.BytesIO()
    if file_format == "parquet":
        pq.write_table(table, buffer, row_group_size=row_group_size, **_PARQUET_OPTIONS)
    else:
        options = pa.ipc.IpcWriteOptions(**_ARROW_OPTIONS)
        with pa.ipc.new_file(buffer, table.schema, options=options) as writer:
            for batch in table.to_batches(max_chunksize=row_group_size):
                writer.write_batch(batch)
    return buffer.getvalue()


class ShardWriter:
    """Writes one shard from tables handed over one after the other, holding at most one row group.

    Row groups (record batches) are cut at exactly ``row_group_size`` rows across the tables' boundaries, the
    last one smaller, so a shard written in pieces has the units of the whole table written at once (for Parquet,
    the same bytes as ``serialize_shard`` of the concatenated table; for Arrow IPC the same batches).

        with ShardWriter(sink, "parquet", 256) as writer:
            for table in tables:
                writer.write(table)
    """

    def __init__(self, sink: Any, file_format: str, row_group_size: int, *, schema: pa.Schema = BLOCK_SCHEMA) -> None:
        self.schema = schema
        self.file_format = file_format
        self.row_group_size = row_group_size
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        if file_format == "parquet":
            self._writer: Any = pq.ParquetWriter(sink, schema, **_PARQUET_OPTIONS)
        else:
            self._writer = pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(**_ARROW_OPTIONS))

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append ``table``'s rows; every full row group among the rows held so far is written out."""
        batches = table.to_batches() if isinstance(table, pa.Table) else [table]
        for batch in batches:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        while self._pending_rows >= self.row_group_size:
            held = pa.Table.from_batches(self._pending, schema=self.schema)
            self._write_group(held.slice(0, self.row_group_size))
            rest = held.slice(self.row_group_size)
            self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def close(self) -> None:
        """Write the last, smaller row group, and the footer. A shard without rows gets what ``serialize_shard``
        writes for an empty table (for Parquet one empty row group), so an empty shard is the same either way."""
        if self._pending_rows or (self.rows == 0 and self.file_format == "parquet"):
            self._write_group(pa.Table.from_batches(self._pending, schema=self.schema))
        self._pending, self._pending_rows = [], 0
        self._writer.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        if error is None:
            self.close()
        else:  # a torn shard is never renamed into place: release the file, write no more
            self._writer.close()

    def _write_group(self, table: pa.Table) -> None:
        # One contiguous chunk, as in a table written at once: Parquet cuts pages the same way, so the same bytes.
        table = table.combine_chunks()
        if self.file_format == "parquet":
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        else:
            for batch in table.to_batches():
                self._writer.write_batch(batch)
        self.rows += table.num_rows
