"""``--dedup exact``: drop exact duplicates, keeping the first occurrence by (input file, line), and drop what an
earlier generation of the dataset already holds.

"First" must not depend on which worker saw a record first, so it is decided by origin, after grouping
every copy of a record together. An earlier generation's records are known by their content keys, which it
stored in its key files (``schemas.dedup_keys``): the workers read them in parallel and mark each key
``EARLIER`` in the same grouping, so no worker ever holds the whole set.

    deduped = pairs | DropExactDuplicates(earlier_key_files)     # .kept, .stats, .keys
    deduped.keys | WriteKeyFiles(revision_root)                  # this generation's key files
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.schemas.dedup_keys import KEY_BYTES, check_size, decode_keys, encode_keys, partition_of
from seqpack.schemas.layout import dedup_key_file
from seqpack.transforms.bundle_stats import STATS_TAG, StatsDoFn
from seqpack.transforms.rejected import split_origin
from seqpack.transforms.render import Rendered
from seqpack.transforms.write import write_atomically

DROPPED_REASON = "duplicate"
KEYS_TAG = "keys"
EARLIER = None
"""What an earlier generation's key is grouped with, in place of a record (a record is never None)."""
_READ_CHUNK = KEY_BYTES << 16


def content_key(element: Rendered) -> bytes:
    """A hash of everything but the origin: the same pair or conversation, the same key."""
    content = [value for name, value in zip(element._fields, element, strict=True) if name != "origin"]
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def origin_order(element: Rendered) -> tuple[str, int]:
    path, line = split_origin(element.origin)
    return path, line or 0


class KeepFirstDoFn(StatsDoFn):
    """All copies of one record in, the first by origin out, and its key (tagged ``keys``); the others are counted
    as dropped. When an earlier generation holds the record, every copy is dropped."""

    def process(self, group: tuple[bytes, Iterable[Rendered | None]]) -> Iterator[Any]:
        key, values = group
        grouped = list(values)
        copies = [value for value in grouped if value is not EARLIER]
        dropped = len(copies)
        if copies and len(copies) == len(grouped):  # no EARLIER marker: no earlier generation holds it
            yield min(copies, key=origin_order)
            yield beam.pvalue.TaggedOutput(KEYS_TAG, key)
            dropped -= 1
        if dropped:
            self.count("examples_dropped", dropped)
            self.count_keyed("dropped_by_reason", DROPPED_REASON, dropped)


class DropExactDuplicates(beam.PTransform):
    """Rendered pairs or conversations in; one per distinct content out (``kept``), none for content the
    ``earlier_key_files`` hold; the kept ones' keys (``keys``) and the statistics (``stats``)."""

    def __init__(self, earlier_key_files: Iterable[str] = ()) -> None:
        super().__init__()
        self.earlier_key_files = sorted(earlier_key_files)

    def expand(self, elements: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        keyed = elements | "KeyByContent" >> beam.Map(lambda element: (content_key(element), element))
        if self.earlier_key_files:
            earlier = (
                elements.pipeline
                | "ReadEarlierKeys" >> ReadKeyFiles(self.earlier_key_files)
                | "MarkEarlier" >> beam.Map(lambda key: (key, EARLIER))
            )
            keyed = (keyed, earlier) | "WithEarlierKeys" >> beam.Flatten()
        return (
            keyed
            | "GroupCopies" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstDoFn()).with_outputs(STATS_TAG, KEYS_TAG, main="kept")
        )


# ------------------------------------------------------------------------------------------- key files


def read_key_file(path: str) -> Iterator[bytes]:
    """The keys of one key file, read a chunk at a time."""
    size, rest = 0, b""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(_READ_CHUNK):
            size += len(chunk)
            data = rest + chunk
            whole = len(data) - len(data) % KEY_BYTES
            yield from decode_keys(data[:whole], where=path)
            rest = data[whole:]
    check_size(size, where=path)


class ReadKeyFiles(beam.PTransform):
    """Key files' paths in (from the driver); their keys out, each file read by whichever worker gets it."""

    def __init__(self, paths: Iterable[str]) -> None:
        super().__init__()
        self.paths = sorted(paths)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "KeyFiles" >> beam.Create(self.paths)
            | "SpreadFiles" >> beam.Reshuffle()  # read the files on every worker, not in one bundle
            | "ReadKeys" >> beam.FlatMap(read_key_file)
        )


def write_key_files(keys: Iterable[bytes], root: str) -> list[str]:
    """Write ``keys`` as the key files of the generation directory ``root``; return their names, relative to it.

    For a writer that holds the keys (a small tool, a test); a job writes them with :class:`WriteKeyFiles` (so do
    ``seqpack run`` and ``seqpack compact``, which never gather the keys in one process). Both write the same
    bytes."""
    partitions: dict[int, list[bytes]] = {}
    for key in keys:
        partitions.setdefault(partition_of(key), []).append(key)
    return [_write_partition(root, partition, partitions[partition]) for partition in sorted(partitions)]


def _write_partition(root: str, partition: int, keys: Iterable[bytes]) -> str:
    name = dedup_key_file(partition)
    write_atomically(FileSystems.join(root, name), encode_keys(keys))
    return name


class WriteKeyPartitionDoFn(StatsDoFn):
    """One partition's keys in; its key file written, its name out. It counts nothing, but its (empty)
    statistics join the run's, so the commit step, which lists the key files, runs only once they are written."""

    def __init__(self, root: str) -> None:
        self.root = root

    def process(self, partition: tuple[int, Iterable[bytes]]) -> Iterator[str]:
        number, keys = partition
        yield _write_partition(self.root, number, keys)


class WriteKeyFiles(beam.PTransform):
    """Content keys in; the generation's key files written under ``root`` by the workers, one per partition that
    has keys. Out: the names written (main) and empty statistics (``stats``)."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = root

    def expand(self, keys: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            keys
            | "ByPartition" >> beam.Map(lambda key: (partition_of(key), key))
            | "GroupPartitions" >> beam.GroupByKey()
            | "WritePartitions" >> beam.ParDo(WriteKeyPartitionDoFn(self.root)).with_outputs(STATS_TAG, main="names")
        )
