"""The runner's shuffle: each spill file is read once and cut into per-bucket chunks for a ``GroupByKey``.

On the spill path (``transforms.shuffle``) every bucket opens every spill file of its split, so a job makes
*buckets × spill files* requests, and once buckets outnumber a file's record batches it reads the data once per
bucket: both grow with the square of the data. Here each spill file is opened and read once, cut by key into
the ranges of its split's buckets, and the chunks travel through the runner's own shuffle (Dataflow Shuffle,
Flink, Spark and Dask move data in time linear in its size). A bucket receives exactly the rows
``read_bucket`` would read, and sorts them by key the same way, so both paths write the same bytes.

A chunk is one Arrow IPC record-batch message with the spill files' schema, passed as ``bytes`` with
Beam's ``BytesCoder``: compact, and never pickled. An empty ``bytes`` marks a bucket that must exist even if
no example falls in its key range (every shard ``part-i-of-n`` is written).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa

from seqpack.example_columns import ExampleColumns, empty_columns
from seqpack.transforms.shuffle import (
    SPILL_SCHEMA,
    Bucket,
    SpillFile,
    batch_columns,
    bucket_of,
    read_spill_range,
    spill_batch,
)

Chunk = tuple[Bucket, bytes]
"""A bucket's rows from one spill file, keyed by the bucket they belong to."""


def encode_chunk(columns: ExampleColumns) -> bytes:
    """``columns`` as one Arrow IPC record-batch message of ``SPILL_SCHEMA``, without the schema (both sides know
    it): a chunk may hold a single example, so a schema in every chunk would be a large part of the bytes moved."""
    return spill_batch(columns).serialize().to_pybytes()


def decode_chunks(chunks: Iterable[bytes], *, with_trained: bool, in_key_order: bool = True) -> ExampleColumns:
    """Every example of the non-empty ``chunks``, in key order (the order ``read_bucket`` gives); with
    ``in_key_order`` False as decoded (``read_bucket``'s ``in_key_order``)."""
    batches = (pa.ipc.read_record_batch(pa.py_buffer(chunk), SPILL_SCHEMA) for chunk in chunks if chunk)
    parts = [batch_columns(batch) for batch in batches if batch.num_rows]
    if with_trained:  # a mixture of pairs and conversations: pairs get the mask conversations have
        parts = [part.with_trained_mask() for part in parts]
    if not parts:
        return empty_columns(with_trained)
    examples = ExampleColumns.concat(parts)
    return examples.sorted_by_key() if in_key_order else examples


def cut_into_buckets(columns: ExampleColumns, split: str, count: int) -> Iterator[tuple[Bucket, ExampleColumns]]:
    """The non-empty key ranges of ``count`` buckets in key-sorted ``columns``, each with its bucket."""
    buckets = bucket_of(columns.key_hi, count)  # non-decreasing: the rows are sorted by key
    starts = np.flatnonzero(np.diff(buckets)) + 1
    for start, stop in zip(np.r_[0, starts].tolist(), np.r_[starts, len(buckets)].tolist(), strict=True):
        if stop > start:
            yield (split, int(buckets[start]), count), columns.slice(start, stop)


class CutSpillDoFn(beam.DoFn):
    """A ``SpillFile`` in (with the bucket count of each split as a side input); its per-bucket chunks out.

    The whole file is read at once: a spill file holds at most ``SPILL_TOKENS`` tokens, so memory stays bounded.
    """

    def __init__(self, *, with_trained: bool) -> None:
        self.with_trained = with_trained

    def process(self, spill: SpillFile, buckets_per_split: dict[str, int]) -> Iterator[Chunk]:
        columns = read_spill_range(spill.path, 0, None, with_trained=self.with_trained)
        for bucket, part in cut_into_buckets(columns, spill.split, buckets_per_split[spill.split]):
            yield bucket, encode_chunk(part)


def bucket_markers(split_count: tuple[str, int]) -> Iterator[Chunk]:
    """An empty chunk for every bucket of a split, so that each bucket reaches packing, examples or not."""
    split, count = split_count
    for index in range(count):
        yield (split, index, count), b""
