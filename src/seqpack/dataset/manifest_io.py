"""Open a dataset's ``manifest.json``: refuse unfinished and foreign directories, and notice a new commit.

The manifest is written last, so a directory without one is unfinished or not a seqpack dataset; and it is
replaced by every commit. An append only adds a generation, which a reader of the older ones may ignore; an
``--overwrite`` or a compaction replaces generations, which a reader must notice. So a reader pins the
generations it opened (:class:`Pin`) and checks that a newer manifest still lists them unchanged.

    manifest = open_manifest("gs://bucket/out")
    files = data_files("gs://bucket/out", "train")      # the committed shards, for other readers
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from seqpack.dataset.location import Location
from seqpack.schemas import MANIFEST_NAME, STAGING_NAME, DatasetFormatError, Manifest, ShardInfo
from seqpack.schemas.manifest import GenerationInfo

FILE_FORMATS = ("parquet", "arrow")


class DatasetChangedError(DatasetFormatError):
    """A generation a reader had open was replaced (``seqpack run --overwrite``, ``seqpack compact``).

    Reading on would mix two datasets, so readers stop; open the dataset again to read the new one. An append
    (a new generation beside the old ones) is not a change for a reader of the old ones.
    """


def open_manifest(url: str, *, storage_options: dict[str, Any] | None = None) -> Manifest:
    """Read and validate ``manifest.json``; a directory without one is unfinished or not a seqpack dataset."""
    return read_manifest(Location.of(url, storage_options))[0]


def data_files(
    url: str,
    split: str = "train",
    *,
    generations: list[int] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """The URLs of a split's shards as the committed manifest lists them, for readers other than seqpack's.

    A glob such as ``out/train/*.parquet`` also matches the files of a commit in progress or of a crashed one;
    the manifest names exactly the committed dataset. ``generations`` (ids) keeps only those generations' shards.

        train = datasets.load_dataset("parquet", data_files={"train": data_files("out/")}, split="train")
    """
    location = Location.of(url, storage_options)
    manifest = read_manifest(location)[0]
    choose_splits(manifest, [split], location)
    return [location.name(shard.path) for shard in split_shards(restrict(manifest, generations), split)]


def restrict(manifest: Manifest, generations: list[int] | None) -> Manifest:
    """``manifest`` reduced to ``generations`` (all of them for None); an unknown id is an error naming the ids."""
    return manifest if generations is None else manifest.restricted_to(list(generations))


def split_shards(manifest: Manifest, split: str) -> list[ShardInfo]:
    """A split's shards; none when the chosen generations hold none of that split (it may be in others)."""
    return manifest.splits[split].shards if split in manifest.splits else []


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


@dataclass
class Pin:
    """What a reader opened: some generations (their shards and checksums) and the settings shards are read with.

    A newer manifest is the same dataset for this reader as long as it still lists every pinned generation
    identically: appends only add generations. Only a manifest whose bytes differ from the last one seen is
    parsed and compared, so the usual check is one read and one sha256.
    """

    generations: dict[int, tuple[tuple[str, str], ...]]
    """Per generation id: ``(path, sha256)`` of each of its shards, every split."""
    settings: dict[str, Any]
    """What decides how the shards are read and collated: block length, packing, file format, tokenizer ids."""
    manifest_sha256: str
    """Of the last manifest found to list the pinned generations unchanged."""
    listed: list[int]
    """The ids of every generation that manifest lists: the pinned ones and any added since."""

    @classmethod
    def of(cls, manifest: Manifest, manifest_sha256: str, generations: list[int] | None = None) -> Pin:
        """Pin ``generations`` of ``manifest`` (every one for None)."""
        chosen = restrict(manifest, generations).generations
        return cls(
            {g.id: _shard_sums(g) for g in chosen},
            _settings(manifest),
            manifest_sha256,
            [g.id for g in manifest.generations],
        )

    def difference(self, manifest: Manifest) -> str | None:
        """How ``manifest`` differs for this reader, in a few words, or None if it lists every pinned generation
        unchanged with the same settings."""
        if _settings(manifest) != self.settings:
            changed = sorted(k for k, v in _settings(manifest).items() if self.settings.get(k) != v)
            return f"{MANIFEST_NAME} changed: {', '.join(changed)} {'is' if len(changed) == 1 else 'are'} not as opened"
        listed = {g.id: g for g in manifest.generations}
        for generation_id, sums in self.generations.items():
            if generation_id not in listed:
                return f"{MANIFEST_NAME} changed: generation {generation_id} is gone"
            if _shard_sums(listed[generation_id]) != sums:
                return f"{MANIFEST_NAME} changed: generation {generation_id} lists other shards"
        return None


def check_manifest(location: Location, pin: Pin, doing: str) -> None:
    """Raise :class:`DatasetChangedError` unless ``manifest.json`` still lists the pinned generations unchanged.

    On success a changed manifest (an append) becomes the pin's last seen one (``pin.listed`` names its
    generations), so the next check is one read again.
    """
    try:
        data = _manifest_bytes(location)
    except DatasetFormatError as exc:
        raise changed_error(location, f"{MANIFEST_NAME} is gone", doing) from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 == pin.manifest_sha256:
        return
    try:
        manifest = Manifest.from_json(data.decode("utf-8", errors="replace"), where=location.name(MANIFEST_NAME))
    except DatasetFormatError as exc:
        raise changed_error(location, f"{MANIFEST_NAME} changed and cannot be read: {exc}", doing) from exc
    if (difference := pin.difference(manifest)) is not None:
        raise changed_error(location, difference, doing)
    pin.manifest_sha256 = sha256
    pin.listed = [generation.id for generation in manifest.generations]


def _shard_sums(generation: GenerationInfo) -> tuple[tuple[str, str], ...]:
    return tuple(
        (shard.path, shard.sha256) for name in sorted(generation.splits) for shard in generation.splits[name].shards
    )


def _settings(manifest: Manifest) -> dict[str, Any]:
    tokenizer = manifest.tokenizer
    return {
        "max_length": manifest.max_length,
        "packing": manifest.packing,
        "file_format": manifest.file_format,
        "tokenizer": (tokenizer.fingerprint, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.bos_id,
                      tokenizer.eos_id, sorted(tokenizer.added_tokens.items())),
    }


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
