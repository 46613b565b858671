"""Reading, listing and deleting a dataset's files on any Beam filesystem (local, ``gs://``, ``s3://``): what a
commit and the cleanup of a crashed run do to the output directory."""

from __future__ import annotations

import os

from apache_beam.io.filesystems import FileSystems

from seqpack.pipeline.object_stores import delete_objects


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def match_paths(pattern: str) -> list[str]:
    return [metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list]


def delete_existing(paths: list[str], *, only_if_empty: bool = False) -> None:
    for path in paths:
        if only_if_empty and "://" not in path:
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
            continue
        delete_objects([path])


def delete_tree(path: str) -> None:
    """A directory and what is in it; on object stores, every object under the prefix ``path/``."""
    delete_existing([path.rstrip("/") + "/" if "://" in path else path])


def remove_empty_directories(output: str, removed: list[str]) -> None:
    """Local filesystems keep empty directories: remove those the removed files left."""
    if "://" in output:
        return
    directories = {os.path.dirname(path) for path in removed}
    for directory in sorted(directories, key=lambda d: d.count("/"), reverse=True):
        while directory:
            full = os.path.join(output, directory)
            if not os.path.isdir(full) or os.listdir(full):
                break
            os.rmdir(full)
            directory = os.path.dirname(directory)
