"""Record what a generation consumed: each input file's size and sha256, computed by the workers in parallel.

A later ``--append`` skips content a generation already read (``seqpack.generations``), so the hash must be of
the bytes the job read: the worker checks that the file's size and modification time are still those the
driver planned with, before and after hashing, and fails the run otherwise (the file was being written).

    consumed = pipeline | "HashInputs" >> HashInputs(found)     # ConsumedInput per file
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.errors import RunFailedError
from seqpack.generations import FoundFile
from seqpack.schemas.manifest import ConsumedInput

_CHUNK = 8 << 20


class InputChangedError(RunFailedError):
    """An input file changed while the run read it: what was read is not what will be recorded as consumed."""


def file_metadata(paths: list[str]) -> dict[str, tuple[int, float]]:
    """``path -> (size, modified)`` for existing files, local or on any Beam filesystem; one listing per remote
    directory holding several of them, not one request per file, and one exact request for a file alone (a worker
    checking the file it hashed must not list the whole input directory)."""
    found: dict[str, tuple[int, float]] = {}
    remote: dict[str, set[str]] = {}
    for path in paths:
        if "://" in path:
            remote.setdefault(posixpath.dirname(path), set()).add(path)
        elif os.path.isfile(path):
            status = os.stat(path)
            found[path] = (status.st_size, status.st_mtime)
    for directory, wanted in sorted(remote.items()):
        if len(wanted) > 1:
            [result] = FileSystems.match([directory + "/*"])
            for metadata in result.metadata_list:
                if metadata.path in wanted:
                    found[metadata.path] = (metadata.size_in_bytes, float(metadata.last_updated_in_seconds))
        for path in sorted(wanted - found.keys()):  # alone, or a name with glob characters: match it exactly
            [exact] = FileSystems.match([path])
            for metadata in exact.metadata_list:
                found[metadata.path] = (metadata.size_in_bytes, float(metadata.last_updated_in_seconds))
    return found


def sha256_file(path: str) -> tuple[str, int]:
    """The sha256 of a file's raw bytes (compressed files as stored) and how many bytes were read."""
    digest = hashlib.sha256()
    size = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class HashInputDoFn(beam.DoFn):
    """A planned input file in; what the generation consumed of it out, or a failed run if it changed."""

    def process(self, planned: FoundFile) -> Iterator[ConsumedInput]:
        digest, size = sha256_file(planned.path)
        now = file_metadata([planned.path]).get(planned.path)
        if size != planned.size or now != (planned.size, planned.modified):
            raise InputChangedError(
                f"input {planned.path} changed while the run read it (planned {planned.size:,} bytes, read "
                f"{size:,}, now {now[0] if now else 'gone'}): nothing was committed. Write input files completely "
                "before a run lists them (write elsewhere, then move), or let `seqpack watch` wait for them to settle"
            )
        yield ConsumedInput(path=planned.path, size=size, sha256=digest, modified=planned.modified,
                            start=0, stop=size)


class HashInputs(beam.PTransform):
    """The planned input files in (from the driver); one ``ConsumedInput`` per file out."""

    def __init__(self, found: list[FoundFile]) -> None:
        super().__init__()
        self.found = sorted(found, key=lambda f: f.path)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "PlannedFiles" >> beam.Create(self.found)
            | "SpreadFiles" >> beam.Reshuffle()  # hash the files on every worker, not in one bundle
            | "Hash" >> beam.ParDo(HashInputDoFn())
        )
