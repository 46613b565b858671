"""Remote tokenizer directories (``gs://``, ``s3://``, any Beam filesystem), copied into a private per-user cache.

The cache is keyed by the remote files themselves and checked before each use, so a changed remote gets a new
copy and a directory planted or altered in the cache is never loaded (``copy_remote_dir``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or lacks something the run needs."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote tokenizer directory as the filesystem lists it (``updated`` 0: not known)."""

    name: str
    path: str
    size: int
    updated: float


CACHE_FILES = "files"
CACHE_MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def _list_remote(spec: str) -> list[RemoteFile]:
    """The files directly under a remote tokenizer directory, sorted by name."""
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([spec.rstrip("/") + "/*"])[0].metadata_list
    if not matches:
        raise TokenizerError(f"no tokenizer files found under {spec}: pass the directory that holds tokenizer.json")
    files = []
    for meta in matches:
        name = meta.path.rstrip("/").rsplit("/", 1)[-1]
        if name in ("", ".", ".."):
            raise TokenizerError(f"{meta.path} cannot be copied as a tokenizer file: rename or remove it")
        files.append(RemoteFile(name, meta.path, int(meta.size_in_bytes), float(meta.last_updated_in_seconds or 0)))
    names = [file.name for file in files]
    if len(set(names)) != len(names):
        raise TokenizerError(f"{spec} lists two files of the same name in subdirectories: point at one directory")
    return sorted(files, key=lambda file: file.name)


def _private_cache_root() -> str | None:
    """This user's tokenizer cache directory, or None when the path exists but is not private to us.

    The path is predictable, so another user could create it first (or as a link) and plant a tokenizer
    there: it is only used when it is a real directory owned by us that nobody else can write or read.
    """
    uid = os.getuid()
    root = os.path.join(tempfile.gettempdir(), f"seqpack-tokenizers-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
        return root
    logging.getLogger("seqpack").warning(
        "not using the tokenizer cache %s: it is not a private directory of this user (owner uid %d, mode %o); "
        "remove it to cache remote tokenizers again",
        root, info.st_uid, stat.S_IMODE(info.st_mode),
    )
    return None


def _listing_key(spec: str, files: list[RemoteFile]) -> str | None:
    """A cache key from the remote listing (name, size, modification time), None when times are not known."""
    if any(file.updated <= 0 for file in files):
        return None
    listing = [spec, [(file.name, file.size, file.updated) for file in files]]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:32]


def _download(spec: str, files: list[RemoteFile], staging: str) -> str:
    """Copy ``files`` into ``staging/files`` and write a manifest of their listing and sha256; return staging."""
    from apache_beam.io.filesystems import FileSystems

    os.mkdir(os.path.join(staging, CACHE_FILES), 0o700)
    recorded = {}
    for file in files:
        digest = hashlib.sha256()
        with FileSystems.open(file.path) as src, open(os.path.join(staging, CACHE_FILES, file.name), "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        recorded[file.name] = {"size": file.size, "updated": file.updated, "sha256": digest.hexdigest()}
    with open(os.path.join(staging, CACHE_MANIFEST), "w", encoding="utf-8") as out:
        json.dump({"source": spec, "files": recorded}, out, sort_keys=True)
    return staging


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry_is_valid(entry: str, files: list[RemoteFile], expected: dict[str, Any] | None = None) -> bool:
    """A cache entry may be used only if it is ours and private, its manifest matches the remote listing (or the
    ``expected`` manifest of a fresh download) and its files are exactly the ones the manifest hashes."""
    try:
        info = os.lstat(entry)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return False
        with open(os.path.join(entry, CACHE_MANIFEST), encoding="utf-8") as handle:
            recorded = json.load(handle)["files"]
        listing = {file.name: (file.size, file.updated) for file in files}
        if {name: (item["size"], item["updated"]) for name, item in recorded.items()} != listing:
            return False
        if expected is not None and recorded != expected:
            return False
        directory = os.path.join(entry, CACHE_FILES)
        if sorted(os.listdir(directory)) != sorted(recorded):
            return False
        return all(_sha256_file(os.path.join(directory, name)) == item["sha256"] for name, item in recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _read_manifest(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, CACHE_MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)["files"]


def copy_remote_dir(spec: str) -> str:
    """A local copy of a tokenizer directory on a Beam filesystem, shared through a private per-user cache.

    The cache is keyed by the remote files themselves (name, size and modification time; their sha256 when the
    filesystem gives no times), filled by renaming a private staging directory, and an entry is checked
    against the listing and its recorded hashes before each use: a changed remote gets a new copy, and a
    directory planted or altered in the cache is never loaded.
    """
    files = _list_remote(spec)
    root = _private_cache_root()
    if root is None:
        return os.path.join(_download(spec, files, tempfile.mkdtemp(prefix="seqpack-tokenizer-")), CACHE_FILES)
    key = _listing_key(spec, files)
    staging = None
    expected = None
    if key is None:  # no modification times to go by: download, and key the entry by what was downloaded
        staging = _download(spec, files, tempfile.mkdtemp(prefix=".staging-", dir=root))
        expected = _read_manifest(staging)
        key = "sha256-" + hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:32]
    entry = os.path.join(root, key)
    if _entry_is_valid(entry, files, expected):
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return os.path.join(entry, CACHE_FILES)
    if staging is None:
        staging = _download(spec, files, tempfile.mkdtemp(prefix=".staging-", dir=root))
    return os.path.join(_publish(staging, entry, files), CACHE_FILES)


def _publish(staging: str, entry: str, files: list[RemoteFile]) -> str:
    """Move a filled staging directory to its cache entry; the directory to load from (staging if that fails)."""
    if os.path.lexists(entry):  # stale or damaged: it did not pass the check
        with contextlib.suppress(OSError):
            shutil.rmtree(entry)
    try:
        os.rename(staging, entry)
    except OSError:  # another process published first: use its copy if it is good, else our own
        if _entry_is_valid(entry, files, _read_manifest(staging)):
            shutil.rmtree(staging, ignore_errors=True)
            return entry
        return staging
    return entry
