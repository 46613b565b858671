"""The Arrow schema of a shard: one row per block (or per example with ``--packing none``)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_NAME = "seqpack"
FORMAT_VERSION = 1

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
) -> pa.Table:
    """Build a shard table from flat numpy arrays without any per-token Python loop.

    ``row_offsets`` (length rows + 1) cuts the four flat token arrays into rows; ``seq_len_offsets`` does
    the same for ``seq_lens``.
    """
    columns = [
        list_array(row_offsets, input_ids.astype(np.int32, copy=False), pa.int32()),
        list_array(row_offsets, labels.astype(np.int32, copy=False), pa.int32()),
        list_array(row_offsets, attention_mask.astype(np.int8, copy=False), pa.int8()),
        list_array(row_offsets, position_ids.astype(np.int32, copy=False), pa.int32()),
        list_array(seq_len_offsets, seq_lens.astype(np.int32, copy=False), pa.int32()),
    ]
    return pa.Table.from_arrays(columns, schema=BLOCK_SCHEMA)


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


def serialize_shard(table: pa.Table, file_format: str, row_group_size: int) -> bytes:
    """The shard's bytes; the same table always gives the same bytes (no timestamps, fixed options).

    Parquet pages carry a CRC32 of their bytes, which readers check as they decode (``seqpack.dataset``): without
    it a flipped bit in a page often decodes into other token ids, silently.
    """
    buffer = io.BytesIO()
    if file_format == "parquet":
        pq.write_table(
            table,
            buffer,
            compression="zstd",
            row_group_size=row_group_size,
            use_dictionary=False,
            write_statistics=False,
            write_page_checksum=True,
        )
    else:
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.ipc.new_file(buffer, BLOCK_SCHEMA, options=options) as writer:
            for batch in table.to_batches(max_chunksize=row_group_size):
                writer.write_batch(batch)
    return buffer.getvalue()
