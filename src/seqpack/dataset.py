"""Open a finished seqpack dataset on any fsspec filesystem, check it, and read it one row group at a time.

This module needs no torch: ``seqpack verify`` and ``seqpack inspect`` use it, and so does the PyTorch
loader (:mod:`seqpack.loader`), which only adds the ordering and the tensors.

    manifest = open_manifest("gs://bucket/out")        # refuses unfinished and foreign directories
    summary = verify_dataset("gs://bucket/out")         # sha256 of every shard, names the bad one
    files = data_files("gs://bucket/out", "train")      # the committed shards, for other readers

Every reader here pins the manifest it opened (its sha256) and checks it again whenever it opens a shard, so a
dataset replaced by ``seqpack run --overwrite`` while it is being read raises :class:`DatasetChangedError`
instead of mixing two datasets.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from seqpack.schemas import (
    BLOCK_SCHEMA,
    MANIFEST_NAME,
    STAGING_NAME,
    DatasetFormatError,
    Manifest,
    ShardInfo,
    check_schema,
    safe_relative_path,
)
from seqpack.schemas.columns import TOKEN_COLUMNS

__all__ = [
    "DatasetChangedError",
    "Location",
    "ShardSet",
    "VerifySummary",
    "data_files",
    "open_manifest",
    "verify_dataset",
]

FILE_FORMATS = ("parquet", "arrow")
COLUMNS = tuple(BLOCK_SCHEMA.names)
_HASH_CHUNK = 8 << 20
_IO_THREADS = 16


@dataclass(frozen=True)
class Location:
    """A dataset directory on some filesystem: ``fs`` and ``root`` for I/O, ``url`` for messages."""

    fs: fsspec.AbstractFileSystem
    root: str
    url: str

    @classmethod
    def of(cls, url: str, storage_options: dict[str, Any] | None = None) -> Location:
        fs, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        return cls(fs=fs, root=root.rstrip("/"), url=str(url).rstrip("/"))

    def path(self, relative: str) -> str:
        """The filesystem path of a file the manifest names; refuses paths that leave the dataset."""
        return f"{self.root}/{safe_relative_path(relative)}"

    def name(self, relative: str) -> str:
        """How a file is named in messages: the URL the user gave plus the relative path."""
        return f"{self.url}/{relative}"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)


class DatasetChangedError(DatasetFormatError):
    """The dataset was committed again (``seqpack run --overwrite``) while a reader had it open.

    Reading on would mix two datasets, so readers stop; open the dataset again to read the new one.
    """


def open_manifest(url: str, *, storage_options: dict[str, Any] | None = None) -> Manifest:
    """Read and validate ``manifest.json``; a directory without one is unfinished or not a seqpack dataset."""
    return _read_manifest(Location.of(url, storage_options))[0]


def data_files(url: str, split: str = "train", *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The URLs of a split's shards as the committed manifest lists them, for readers other than seqpack's.

    A glob such as ``out/train/*.parquet`` also matches the files of a commit in progress or of a crashed one;
    the manifest names exactly the committed dataset.

        train = datasets.load_dataset("parquet", data_files={"train": data_files("out/")}, split="train")
    """
    location = Location.of(url, storage_options)
    manifest = _read_manifest(location)[0]
    _choose_splits(manifest, [split], location)
    return [location.name(shard.path) for shard in manifest.splits[split].shards]


def _read_manifest(location: Location) -> tuple[Manifest, str]:
    """The validated manifest and the sha256 of its bytes, which readers compare later to notice a new commit."""
    data = _manifest_bytes(location)
    manifest = Manifest.from_json(data.decode("utf-8", errors="replace"), where=location.name(MANIFEST_NAME))
    if manifest.file_format not in FILE_FORMATS:
        raise DatasetFormatError(
            f"{location.name(MANIFEST_NAME)} names file format {manifest.file_format!r}; "
            f"this seqpack reads {' and '.join(FILE_FORMATS)}"
        )
    return manifest, hashlib.sha256(data).hexdigest()


def _manifest_bytes(location: Location) -> bytes:
    """``manifest.json``'s bytes in one read (no existence check first: readers call this on every shard open)."""
    path = f"{location.root}/{MANIFEST_NAME}"
    try:
        return location.fs.cat_file(path)
    except IsADirectoryError as exc:
        raise DatasetFormatError(_manifest_is_directory(location)) from exc
    except FileNotFoundError as exc:  # object stores and memory:// report a "directory" as a missing file
        if location.fs.isdir(path):
            raise DatasetFormatError(_manifest_is_directory(location)) from exc
        raise DatasetFormatError(_missing_manifest_message(location)) from exc
    except OSError as exc:
        raise DatasetFormatError(f"{location.name(MANIFEST_NAME)} cannot be read ({exc})") from exc


def _manifest_is_directory(location: Location) -> str:
    return (
        f"{location.name(MANIFEST_NAME)} is a directory, not a file: {location.url} is not a seqpack dataset "
        "(or a copy went wrong); copy the dataset again"
    )


def _missing_manifest_message(location: Location) -> str:
    fs = location.fs
    if not fs.exists(location.root):
        return f"{location.url} does not exist: pass the output directory of a `seqpack build` run"
    if fs.exists(f"{location.root}/{STAGING_NAME}"):
        return (
            f"{location.url} has no {MANIFEST_NAME} but holds {STAGING_NAME}/: the run that writes it has not "
            "finished (or crashed). Wait for it, or run it again; the manifest is written last."
        )
    return (
        f"{location.url} has no {MANIFEST_NAME}: it is an unfinished run or not a seqpack dataset "
        "(the manifest is written last, when every shard is complete)"
    )


# --------------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifySummary:
    """What :func:`verify_dataset` checked."""

    splits: int
    shards: int
    bytes: int
    rows: int

    def __str__(self) -> str:
        return f"{self.shards} shards in {self.splits} splits, {self.bytes:,} bytes, {self.rows:,} rows checked"


def verify_dataset(
    url: str, *, splits: list[str] | None = None, storage_options: dict[str, Any] | None = None
) -> VerifySummary:
    """Check every shard against the manifest: present, same size, same sha256, block schema, row count.

    Raises one ``DatasetFormatError`` that names every bad file; prints nothing.
    """
    location = Location.of(url, storage_options)
    manifest = _read_manifest(location)[0]
    chosen = _choose_splits(manifest, splits, location)
    shards = [shard for name in chosen for shard in manifest.splits[name].shards]
    with ThreadPoolExecutor(max_workers=max(1, min(_IO_THREADS, len(shards)))) as pool:
        problems = [p for p in pool.map(lambda s: _verify_shard(location, manifest, s), shards) if p]
    if problems:
        raise DatasetFormatError(
            f"{len(problems)} of {len(shards)} shards in {location.url} do not match {MANIFEST_NAME}:\n  "
            + "\n  ".join(problems)
            + "\nRe-copy these files from the original output, or rebuild the dataset."
        )
    return VerifySummary(
        splits=len(chosen),
        shards=len(shards),
        bytes=sum(s.bytes for s in shards),
        rows=sum(s.rows for s in shards),
    )


def _choose_splits(manifest: Manifest, splits: list[str] | None, location: Location) -> list[str]:
    chosen = sorted(manifest.splits) if splits is None else list(splits)
    unknown = [name for name in chosen if name not in manifest.splits]
    if unknown:
        raise DatasetFormatError(
            f"{location.url} has no split {unknown[0]!r}; it has {', '.join(sorted(manifest.splits)) or 'none'}"
        )
    return chosen


def _verify_shard(location: Location, manifest: Manifest, shard: ShardInfo) -> str | None:
    """One line describing what is wrong with ``shard``, or None when it matches the manifest."""
    name = location.name(shard.path)
    path = location.path(shard.path)
    if not location.fs.exists(path):
        return f"{name}: missing"
    size = location.fs.size(path)
    if size != shard.bytes:
        return f"{name}: {size} bytes, the manifest says {shard.bytes} (truncated or replaced)"
    digest = hashlib.sha256()
    with location.fs.open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != shard.sha256:
        return f"{name}: sha256 {digest.hexdigest()} does not match the manifest's {shard.sha256} (corrupt)"
    try:
        units = _open_shard(location, manifest.file_format, shard).unit_rows
        examples, tokens = _shard_counts(location, manifest.file_format, shard)
    except DatasetFormatError as exc:
        return str(exc)
    if sum(units) != shard.rows:
        return f"{name}: {sum(units)} rows, the manifest says {shard.rows}"
    if (examples, tokens) != (shard.examples, shard.tokens):
        return (
            f"{name}: {examples:,} examples and {tokens:,} tokens, the manifest says {shard.examples:,} and "
            f"{shard.tokens:,}"
        )
    return None


def _shard_counts(location: Location, file_format: str, shard: ShardInfo) -> tuple[int, int]:
    """Examples and real tokens in a shard, from its small ``seq_lens`` column (one length per example)."""
    with _shard_errors(location, file_format, shard):
        with location.fs.open(location.path(shard.path), "rb") as handle:
            if file_format == "parquet":
                table = pq.ParquetFile(handle, page_checksum_verification=True).read(columns=["seq_lens"])
            else:
                fields = [COLUMNS.index("seq_lens")]
                table = pa.ipc.open_file(handle, options=pa.ipc.IpcReadOptions(included_fields=fields)).read_all()
        lengths = pc.list_flatten(table.column("seq_lens"))
        return len(lengths), int(pc.sum(lengths, min_count=0).as_py())


# -------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class ShardLayout:
    """A shard's row groups (Parquet) or record batches (Arrow IPC): the units the loader reads."""

    unit_rows: list[int]


def _open_shard(location: Location, file_format: str, shard: ShardInfo) -> ShardLayout:
    """Read only the shard's footer: check its schema and learn its unit sizes."""
    name = location.name(shard.path)
    with _shard_errors(location, file_format, shard), location.fs.open(location.path(shard.path), "rb") as handle:
        if file_format == "parquet":
            metadata = pq.ParquetFile(handle).metadata
            check_schema(metadata.schema.to_arrow_schema(), name)
            rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        else:
            check_schema(pa.ipc.open_file(handle).schema, name)
            rows = ipc_batch_rows(handle)
    return ShardLayout(unit_rows=rows)


@contextmanager
def _shard_errors(location: Location, file_format: str, shard: ShardInfo) -> Iterator[None]:
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


class ShardSet:
    """The shards of one split, cut into units (row groups or record batches) that can be read one at a time.

    Opening reads the manifest and every shard's footer (in parallel threads, for remote stores); reading a
    unit decodes only that unit. Memory is bounded by the units a caller keeps, never by the dataset.
    Parquet pages are checked against their CRC32 as they are decoded, so a flipped bit is an error, not
    another token id.

        shards = ShardSet.open("out/", split="train")
        table = shards.read_unit(0)          # a pyarrow Table with the block columns
    """

    def __init__(
        self, location: Location, manifest: Manifest, split: str, layouts: list[ShardLayout], *, manifest_sha256: str
    ) -> None:
        self.location = location
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256
        """Of the manifest's bytes when opened: a shard is read only while the manifest is still this one."""
        self.split = split
        self.shards = manifest.splits[split].shards
        sizes = [layout.unit_rows for layout in layouts]
        self.unit_shard = np.repeat(np.arange(len(sizes), dtype=np.int64), [len(s) for s in sizes])
        self.unit_index = np.asarray([i for s in sizes for i in range(len(s))], dtype=np.int64)
        self.unit_rows = np.asarray([r for s in sizes for r in s], dtype=np.int64)
        self._readers: OrderedDict[int, Any] = OrderedDict()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        split: str = "train",
        verify: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardSet:
        location = Location.of(url, storage_options)
        manifest, manifest_sha256 = _read_manifest(location)
        _choose_splits(manifest, [split], location)
        shards = manifest.splits[split].shards
        try:
            if verify:
                verify_dataset(url, splits=[split], storage_options=storage_options)
            with ThreadPoolExecutor(max_workers=max(1, min(_IO_THREADS, len(shards)))) as pool:
                layouts = list(pool.map(lambda s: _check_and_open(location, manifest.file_format, s), shards))
        except DatasetFormatError:
            _check_manifest(location, manifest_sha256, "opened")  # a commit in between explains a missing shard
            raise
        return cls(location, manifest, split, layouts, manifest_sha256=manifest_sha256)

    @property
    def num_units(self) -> int:
        return len(self.unit_rows)

    @property
    def num_rows(self) -> int:
        return int(self.unit_rows.sum())

    def check_unchanged(self) -> None:
        """Raise :class:`DatasetChangedError` if ``manifest.json`` is no longer the one this set was opened with.

        One small read; it is done on every shard open and costs microseconds locally (see docs/loader.md).
        """
        _check_manifest(self.location, self.manifest_sha256, "read")

    def read_unit(self, unit: int) -> pa.Table:
        """Decode one row group (or record batch) with every block column."""
        shard = int(self.unit_shard[unit])
        index = int(self.unit_index[unit])
        name = self.location.name(self.shards[shard].path)
        try:
            reader = self._reader(shard)
            if self.manifest.file_format == "parquet":
                table = reader.read_row_group(index, columns=list(COLUMNS))
            else:
                table = pa.Table.from_batches([reader.get_batch(index)])
            # Microseconds (list offsets only); a corrupt Arrow IPC batch can otherwise abort the process later.
            table.validate(full=True)
        except FileNotFoundError as exc:
            self.check_unchanged()
            raise _changed(self.location, f"{name} was deleted while the manifest still lists it") from exc
        except (pa.ArrowException, OSError) as exc:
            self.check_unchanged()
            raise DatasetFormatError(
                f"{name}: unit {index} cannot be decoded ({exc}); the file is corrupt. "
                "`seqpack verify` checks every shard against the manifest."
            ) from exc
        if table.num_rows != self.unit_rows[unit]:
            self.check_unchanged()
            raise DatasetFormatError(f"{name}: unit {index} changed size since the dataset was opened")
        if problem := _unit_problem(table):
            raise DatasetFormatError(
                f"{name}: unit {index} is corrupt ({problem}). "
                "`seqpack verify` checks every shard against the manifest."
            )
        return table

    def _reader(self, shard: int) -> Any:
        """An open reader for ``shard``, from a small per-process cache (file handles are not pickled)."""
        if shard in self._readers:
            self._readers.move_to_end(shard)
            return self._readers[shard][0]
        path = self.location.path(self.shards[shard].path)
        # Local files are read, not memory-mapped: the loader wraps decoded buffers, which must be private memory.
        handle: Any = pa.OSFile(path) if self.location.is_local else self.location.fs.open(path, "rb")
        try:
            if self.manifest.file_format == "arrow":
                reader = pa.ipc.open_file(handle)
            else:
                reader = pq.ParquetFile(handle, page_checksum_verification=True)
            # Checked after opening: an open handle keeps reading the file it opened even when a commit deletes
            # it (POSIX), and a commit replaces the manifest before deleting, so an unchanged manifest now means
            # the handle holds this dataset's file. On object stores a later read of a deleted file fails instead.
            self.check_unchanged()
        except BaseException:
            handle.close()
            raise
        self._readers[shard] = (reader, handle)
        if len(self._readers) > 8:
            _, (_, old) = self._readers.popitem(last=False)
            old.close()
        return reader

    def close(self) -> None:
        while self._readers:
            _, (_, handle) = self._readers.popitem()
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state


def _unit_problem(table: pa.Table) -> str | None:
    """What breaks the rules that tie a unit's columns together, if anything.

    Page checksums cover page data, not page headers; a flipped bit in a header's value count can drop the last
    values of one column, which these checks see: a few comparisons per row and one sum over the mask.
    """
    lengths = [pc.list_value_length(table.column(name)) for name in TOKEN_COLUMNS]
    for name, column in zip(TOKEN_COLUMNS[1:], lengths[1:], strict=True):
        if not column.equals(lengths[0]):
            return f"rows of {name} and {TOKEN_COLUMNS[0]} differ in length"
    real = pc.sum(pc.list_flatten(table.column("attention_mask")), min_count=0).as_py()
    listed = pc.sum(pc.list_flatten(table.column("seq_lens")), min_count=0).as_py()
    if real != listed:
        return f"{real} tokens are marked real but seq_lens adds up to {listed}"
    return None


def _check_manifest(location: Location, manifest_sha256: str, doing: str) -> None:
    """Raise :class:`DatasetChangedError` unless ``manifest.json`` still has the sha256 it had when opened."""
    try:
        data = _manifest_bytes(location)
    except DatasetFormatError as exc:
        raise _changed(location, f"{MANIFEST_NAME} is gone", doing) from exc
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        raise _changed(location, f"{MANIFEST_NAME} changed", doing)


def _changed(location: Location, what: str, doing: str = "read") -> DatasetChangedError:
    return DatasetChangedError(
        f"{location.url} was replaced by a newer commit while it was being {doing} ({what}): reading on would mix "
        "two datasets. Open it again (restart the loader) to read the new dataset; a saved loader state applies "
        "to it only if the data is the same."
    )


def _check_and_open(location: Location, file_format: str, shard: ShardInfo) -> ShardLayout:
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
    layout = _open_shard(location, file_format, shard)
    if sum(layout.unit_rows) != shard.rows:
        raise DatasetFormatError(f"{name}: {sum(layout.unit_rows)} rows, the manifest says {shard.rows}")
    return layout


# ------------------------------------------------------------------------------------ Arrow IPC footer


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
