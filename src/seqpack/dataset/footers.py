"""A shard's footer: its schema is checked and its units (row groups, record batches) counted, no data decoded.

Both ``verify_dataset`` and ``ShardSet.open`` start here, and both turn what pyarrow raises on a bad file into
one ``DatasetFormatError`` that names the shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from seqpack.dataset.arrow_footer import ipc_batch_rows
from seqpack.dataset.location import Location
from seqpack.schemas import BLOCK_SCHEMA, DatasetFormatError, ShardInfo, check_schema

COLUMNS = tuple(BLOCK_SCHEMA.names)
IO_THREADS = 16
"""Shards opened or hashed at once: remote stores answer each request slowly, and many at a time."""


@dataclass(frozen=True)
class ShardLayout:
    """A shard's row groups (Parquet) or record batches (Arrow IPC): the units the loader reads."""

    unit_rows: list[int]


def open_shard(location: Location, file_format: str, shard: ShardInfo) -> ShardLayout:
    """Read only the shard's footer: check its schema and learn its unit sizes."""
    name = location.name(shard.path)
    with shard_errors(location, file_format, shard), location.fs.open(location.path(shard.path), "rb") as handle:
        if file_format == "parquet":
            metadata = pq.ParquetFile(handle).metadata
            check_schema(metadata.schema.to_arrow_schema(), name)
            rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        else:
            check_schema(pa.ipc.open_file(handle).schema, name)
            rows = ipc_batch_rows(handle)
    return ShardLayout(unit_rows=rows)


def check_and_open(location: Location, file_format: str, shard: ShardInfo) -> ShardLayout:
    """Cheap checks before training starts: the file is there, whole, a block shard, with the listed rows."""
    name = location.name(shard.path)
    path = location.path(shard.path)
    if not location.fs.exists(path):
        raise DatasetFormatError(f"{name}: missing (the manifest lists it); re-copy the dataset")
    size = location.fs.size(path)
    if size != shard.bytes:
        raise DatasetFormatError(
            f"{name}: {size} bytes, the manifest says {shard.bytes}: the file is truncated or was replaced. "
            "Re-copy it; `seqpack verify` checks every shard."
        )
    layout = open_shard(location, file_format, shard)
    if sum(layout.unit_rows) != shard.rows:
        raise DatasetFormatError(f"{name}: {sum(layout.unit_rows)} rows, the manifest says {shard.rows}")
    return layout


@contextmanager
def shard_errors(location: Location, file_format: str, shard: ShardInfo) -> Iterator[None]:
    """Turn what pyarrow and the flatbuffer reader raise on a bad shard into a ``DatasetFormatError`` naming it."""
    name = location.name(shard.path)
    try:
        yield
    except DatasetFormatError:
        raise
    except FileNotFoundError as exc:
        raise DatasetFormatError(f"{name}: missing (the manifest lists it)") from exc
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:  # IndexError: the flatbuffer reader
        raise DatasetFormatError(
            f"{name}: not a readable {file_format} file ({exc}); it is truncated or corrupt. "
            "`seqpack verify` checks every shard against the manifest."
        ) from exc
