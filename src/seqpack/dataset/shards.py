"""One split's shards, cut into units (row groups or record batches) that are read one at a time.

Every ``ShardSet`` pins the generations it opened and reads the manifest again whenever it opens a shard, so a
dataset replaced by ``seqpack run --overwrite`` (or compacted) while it is being read raises
:class:`DatasetChangedError` instead of mixing two datasets; an append, which only adds a generation, does not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqpack.dataset.footers import COLUMNS, IO_THREADS, ShardLayout, check_and_open
from seqpack.dataset.location import Location
from seqpack.dataset.manifest_io import (
    Pin,
    changed_error,
    check_manifest,
    choose_splits,
    read_manifest,
    restrict,
    split_shards,
)
from seqpack.dataset.verify import verify_dataset
from seqpack.schemas import DatasetFormatError, Manifest
from seqpack.schemas.columns import SOURCE_ID, TOKEN_COLUMNS

_OPEN_READERS = 8
"""Shards a ``ShardSet`` keeps open at once."""


class ShardSet:
    """The shards of one split, cut into units (row groups or record batches) that can be read one at a time.

    Opening reads the manifest and every shard's footer (in parallel threads, for remote stores); reading a
    unit decodes only that unit. Memory is bounded by the units a caller keeps, never by the dataset.
    Parquet pages are checked against their CRC32 as they are decoded, so a flipped bit is an error, not
    another token id.

        shards = ShardSet.open("out/", split="train")
        table = shards.read_unit(0)          # a pyarrow Table with the block columns

    ``generations`` (ids) opens only those generations; ``manifest`` is then the manifest restricted to them.
    """

    def __init__(
        self, location: Location, manifest: Manifest, split: str, layouts: list[ShardLayout], *, pin: Pin
    ) -> None:
        self.location = location
        self.manifest = manifest
        self.pin = pin
        """The generations opened: a shard is read only while the manifest still lists them unchanged."""
        self.split = split
        self.columns = COLUMNS + ((SOURCE_ID,) if manifest.sources else ())
        """The columns a unit has: the block columns, and ``source_id`` in a mixture (format 3)."""
        self.shards = split_shards(manifest, split)
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
        generations: list[int] | None = None,
        verify: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardSet:
        location = Location.of(url, storage_options)
        whole, manifest_sha256 = read_manifest(location)
        choose_splits(whole, [split], location)
        manifest = restrict(whole, generations)
        pin = Pin.of(whole, manifest_sha256, generations)
        shards = split_shards(manifest, split)
        try:
            if verify:
                verify_dataset(url, splits=[split], storage_options=storage_options)
            with ThreadPoolExecutor(max_workers=max(1, min(IO_THREADS, len(shards)))) as pool:
                layouts = list(pool.map(lambda s: check_and_open(location, manifest.file_format, s), shards))
        except DatasetFormatError:
            check_manifest(location, pin, "opened")  # a commit in between explains a missing shard
            raise
        return cls(location, manifest, split, layouts, pin=pin)

    @property
    def generations(self) -> list[int]:
        """The ids of the generations opened, oldest first."""
        return [generation.id for generation in self.manifest.generations]

    def listed_generations(self) -> list[int]:
        """The ids of every generation the dataset has now (this set's and those appended since), oldest first.

        One manifest read; raises :class:`DatasetChangedError` if a generation this set opened is gone or changed.
        """
        self.check_unchanged()
        return list(self.pin.listed)

    @property
    def num_units(self) -> int:
        return len(self.unit_rows)

    @property
    def num_rows(self) -> int:
        return int(self.unit_rows.sum())

    def check_unchanged(self) -> None:
        """Raise :class:`DatasetChangedError` if ``manifest.json`` no longer lists the generations this set opened
        as they were (an append, which only adds generations, is fine).

        One small read; it is done on every shard open and costs microseconds locally (see docs/loader.md). A
        manifest that differs from the last one seen is parsed and compared once.
        """
        check_manifest(self.location, self.pin, "read")

    def read_unit(self, unit: int, *, columns: Sequence[str] | None = None) -> pa.Table:
        """Decode one row group (or record batch): every column (``self.columns``), or only ``columns`` (Parquet
        decodes only those). The checks that tie the columns together need every column, so a subset skips them."""
        columns = self.columns if columns is None else columns
        shard = int(self.unit_shard[unit])
        index = int(self.unit_index[unit])
        name = self.location.name(self.shards[shard].path)
        try:
            reader = self._reader(shard)
            if self.manifest.file_format == "parquet":
                table = reader.read_row_group(index, columns=list(columns))
            else:
                table = pa.Table.from_batches([reader.get_batch(index)])
                if list(columns) != table.column_names:
                    table = table.select(list(columns))
            # Microseconds (list offsets only); a corrupt Arrow IPC batch can otherwise abort the process later.
            table.validate(full=True)
        except FileNotFoundError as exc:
            self.check_unchanged()
            raise changed_error(self.location, f"{name} was deleted while the manifest still lists it") from exc
        except (pa.ArrowException, OSError) as exc:
            self.check_unchanged()
            raise DatasetFormatError(
                f"{name}: unit {index} cannot be decoded ({exc}); the file is corrupt. "
                "`seqpack verify` checks every shard against the manifest."
            ) from exc
        if table.num_rows != self.unit_rows[unit]:
            self.check_unchanged()
            raise DatasetFormatError(f"{name}: unit {index} changed size since the dataset was opened")
        if set(COLUMNS) <= set(columns) and (problem := _unit_problem(table)):
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
        if len(self._readers) > _OPEN_READERS:
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
    if SOURCE_ID in table.column_names and not pc.list_value_length(table.column(SOURCE_ID)).equals(
            pc.list_value_length(table.column("seq_lens"))):
        return f"rows of {SOURCE_ID} and seq_lens differ in length"
    return None
