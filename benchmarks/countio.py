"""Count the shuffle's object-store-like requests in every process of a run: spill file opens, bytes read and
written, and the bytes of the chunks the runner's shuffle moves.

``install(directory)`` wraps seqpack's spill-file I/O (``transforms.shuffle``) and the chunk encoder
(``transforms.shuffle_runner``) in this process; each event is one line appended to ``directory/<pid>.log``, so
worker processes that are killed at the end of a run lose nothing. ``totals(directory)`` adds them up.

Worker processes (Beam's SDK workers, Dask workers) install it at start-up through ``scale_hook/sitecustomize.py``
when ``SEQPACK_COUNT_DIR`` is set; ``SEQPACK_OPEN_LATENCY_MS`` adds a sleep per open (what a cloud bucket's
first-byte latency would cost), ``SEQPACK_SPILL_TOKENS`` and ``SEQPACK_RECORDS_PER_BATCH`` make spill files
small, so there are many.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EVENTS = ("open", "read_bytes", "create", "write_bytes", "chunks", "chunk_bytes")


class _Log:
    """One process's events, appended line by line (``O_APPEND``: one ``write`` each, nothing buffered)."""

    def __init__(self, directory: str, latency_s: float) -> None:
        self.directory = directory
        self.latency_s = latency_s
        self.fd: int | None = None

    def event(self, kind: str, count: int) -> None:
        if self.fd is None:  # opened on first use: a forked worker gets its own file
            os.makedirs(self.directory, exist_ok=True)
            self.fd = os.open(os.path.join(self.directory, f"{os.getpid()}.log"),
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(self.fd, f"{kind} {count}\n".encode())


class _CountingReader(io.FileIO):
    """A local file that counts the bytes read from it, reported once, at close."""

    def __init__(self, path: str, log: _Log) -> None:
        super().__init__(path, "rb")
        self.log, self.bytes_read = log, 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer) or 0
        self.bytes_read += count
        return count

    def close(self) -> None:
        if not self.closed:
            self.log.event("read_bytes", self.bytes_read)
        super().close()


class _CountingStream:
    """An object store's readable stream (Beam's) that counts the bytes read from it, reported once, at close."""

    def __init__(self, handle: Any, log: _Log) -> None:
        self.handle, self.log, self.bytes_read = handle, log, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        if not self.handle.closed:
            self.log.event("read_bytes", self.bytes_read)
        self.handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


class _CountingWriter:
    """A writable file that counts the bytes written to it, reported once, at close."""

    def __init__(self, handle: Any, log: _Log) -> None:
        self.handle, self.log, self.bytes_written = handle, log, 0

    def write(self, data: bytes) -> int:
        self.bytes_written += len(data)
        return self.handle.write(data)

    def close(self) -> None:
        if not self.handle.closed:
            self.log.event("write_bytes", self.bytes_written)
        self.handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> _CountingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _patches(log: _Log, spill_tokens: int | None, records_per_batch: int | None) -> list[tuple[Any, str, Any]]:
    import pyarrow as pa
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    import seqpack.transforms.shuffle as shuffle
    import seqpack.transforms.shuffle_runner as shuffle_runner
    import seqpack.transforms.tokenize as tokenize
    from seqpack.transforms.read import ReadRecords

    def open_spill(path: str) -> pa.NativeFile:
        log.event("open", 1)
        if log.latency_s:
            time.sleep(log.latency_s)
        if "://" in path:  # an object store's spill file: Beam's reader, its bytes counted
            handle = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
            return pa.PythonFile(_CountingStream(handle, log), mode="r")
        return pa.PythonFile(_CountingReader(path, log), mode="r")

    class CountingFileSystems:
        """``FileSystems`` as the spill writer sees it: every create counted."""

        def __getattr__(self, name: str) -> Any:
            return getattr(FileSystems, name)

        @staticmethod
        def create(path: str, *args: Any, **kwargs: Any) -> _CountingWriter:
            log.event("create", 1)
            return _CountingWriter(FileSystems.create(path, *args, **kwargs), log)

    encode = shuffle_runner.encode_chunk

    def encode_chunk(columns: Any) -> bytes:
        data = encode(columns)
        log.event("chunks", 1)
        log.event("chunk_bytes", len(data))
        return data

    patches = [(shuffle, "_open", open_spill), (shuffle, "FileSystems", CountingFileSystems()),
               (shuffle_runner, "encode_chunk", encode_chunk)]
    if spill_tokens:
        patches.append((tokenize, "SPILL_TOKENS", spill_tokens))
    if records_per_batch:  # a tokenize worker spills at most once per batch: small batches, many spill files
        defaults = {**ReadRecords.__init__.__kwdefaults__, "batch_size": records_per_batch}
        patches.append((ReadRecords.__init__, "__kwdefaults__", defaults))
    return patches


def install(
    directory: str, latency_ms: float = 0.0, spill_tokens: int | None = None, records_per_batch: int | None = None
) -> list[tuple[Any, str, Any]]:
    """Count this process's shuffle I/O into ``directory``; with ``spill_tokens`` and ``records_per_batch``,
    spill that often instead of seqpack's ``SPILL_TOKENS`` and read records in batches that small. Returns what
    it replaced, for ``uninstall``."""
    saved = []
    for module, name, value in _patches(_Log(directory, latency_ms / 1000), spill_tokens, records_per_batch):
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)
    return saved


def uninstall(saved: list[tuple[Any, str, Any]]) -> None:
    for module, name, value in reversed(saved):
        setattr(module, name, value)


@contextmanager
def counting(
    directory: str, latency_ms: float = 0.0, spill_tokens: int | None = None, records_per_batch: int | None = None
) -> Iterator[None]:
    """Count within a block, in this process only (the in-memory local runner runs its workers here)."""
    saved = install(directory, latency_ms, spill_tokens, records_per_batch)
    try:
        yield
    finally:
        uninstall(saved)


def totals(directory: str | Path) -> Counter[str]:
    """Every event of every process that logged into ``directory``, added up."""
    total: Counter[str] = Counter({event: 0 for event in EVENTS})
    for log in Path(directory).glob("*.log"):
        for line in log.read_text().splitlines():
            kind, _, count = line.partition(" ")
            total[kind] += int(count)
    return total
