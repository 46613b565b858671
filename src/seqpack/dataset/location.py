"""Where a dataset lies: one fsspec filesystem and a root, and the URL the user gave, for messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from seqpack.schemas import safe_relative_path


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
