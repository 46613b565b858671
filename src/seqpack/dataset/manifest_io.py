"""Open a dataset's ``manifest.json``: refuse unfinished and foreign directories, and notice a new commit.

The manifest is written last, so a directory without one is unfinished or not a seqpack dataset; and it is
replaced by every commit, so a reader that keeps its sha256 can tell when the dataset changed under it.

    manifest = open_manifest("gs://bucket/out")
    files = data_files("gs://bucket/out", "train")      # the committed shards, for other readers
"""

from __future__ import annotations

import hashlib
from typing import Any

from seqpack.dataset.location import Location
from seqpack.schemas import MANIFEST_NAME, STAGING_NAME, DatasetFormatError, Manifest

FILE_FORMATS = ("parquet", "arrow")


class DatasetChangedError(DatasetFormatError):
    """The dataset was committed again (``seqpack run --overwrite``) while a reader had it open.

    Reading on would mix two datasets, so readers stop; open the dataset again to read the new one.
    """


def open_manifest(url: str, *, storage_options: dict[str, Any] | None = None) -> Manifest:
    """Read and validate ``manifest.json``; a directory without one is unfinished or not a seqpack dataset."""
    return read_manifest(Location.of(url, storage_options))[0]


def data_files(url: str, split: str = "train", *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The URLs of a split's shards as the committed manifest lists them, for readers other than seqpack's.

    A glob such as ``out/train/*.parquet`` also matches the files of a commit in progress or of a crashed one;
    the manifest names exactly the committed dataset.

        train = datasets.load_dataset("parquet", data_files={"train": data_files("out/")}, split="train")
    """
    location = Location.of(url, storage_options)
    manifest = read_manifest(location)[0]
    choose_splits(manifest, [split], location)
    return [location.name(shard.path) for shard in manifest.splits[split].shards]


def read_manifest(location: Location) -> tuple[Manifest, str]:
    """The validated manifest and the sha256 of its bytes, which readers compare later to notice a new commit."""
    data = _manifest_bytes(location)
    manifest = Manifest.from_json(data.decode("utf-8", errors="replace"), where=location.name(MANIFEST_NAME))
    if manifest.file_format not in FILE_FORMATS:
        raise DatasetFormatError(
            f"{location.name(MANIFEST_NAME)} names file format {manifest.file_format!r}; "
            f"this seqpack reads {' and '.join(FILE_FORMATS)}"
        )
    return manifest, hashlib.sha256(data).hexdigest()


def choose_splits(manifest: Manifest, splits: list[str] | None, location: Location) -> list[str]:
    """The splits asked for (every split for None), or an error naming the ones the dataset has."""
    chosen = sorted(manifest.splits) if splits is None else list(splits)
    unknown = [name for name in chosen if name not in manifest.splits]
    if unknown:
        raise DatasetFormatError(
            f"{location.url} has no split {unknown[0]!r}; it has {', '.join(sorted(manifest.splits)) or 'none'}"
        )
    return chosen


def check_manifest(location: Location, manifest_sha256: str, doing: str) -> None:
    """Raise :class:`DatasetChangedError` unless ``manifest.json`` still has the sha256 it had when opened."""
    try:
        data = _manifest_bytes(location)
    except DatasetFormatError as exc:
        raise changed_error(location, f"{MANIFEST_NAME} is gone", doing) from exc
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        raise changed_error(location, f"{MANIFEST_NAME} changed", doing)


def changed_error(location: Location, what: str, doing: str = "read") -> DatasetChangedError:
    """The error for a dataset replaced while ``doing`` (opened, read), saying ``what`` showed it."""
    return DatasetChangedError(
        f"{location.url} was replaced by a newer commit while it was being {doing} ({what}): reading on would mix "
        "two datasets. Open it again (restart the loader) to read the new dataset; a saved loader state applies "
        "to it only if the data is the same."
    )


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
