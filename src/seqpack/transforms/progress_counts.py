"""Worker side of live progress: cheap counters that a DoFn appends, now and then, to a tiny file of its own.

Beam's local FnApiRunner runs DoFns in worker subprocesses and reports their metrics to the driver only when a
stage ends, too late to watch a long job. So for a local run the driver (:mod:`seqpack.pipeline.live_progress`) makes a
directory and names it in ``SEQPACK_PROGRESS_DIR``; worker processes inherit the variable. Each DoFn instance that
finds it keeps its counts in memory and appends them, cumulative, as one short JSON line to
``<dir>/<pid>-<random>.jsonl`` at most every ``SEQPACK_PROGRESS_INTERVAL / 2`` seconds (2 at most) and at the end
of each bundle. The driver sums the last line of every file.

Without the variable (remote runners, ``--quiet``) a DoFn has no counter and pays one ``is None`` test per record.
With it, a record costs a method call and a few integer additions, and every 64th record a clock read.

    progress = progress_from_env()          # in DoFn.setup: None unless a local run asked for it
    progress.read_record(rejected=False)    # per record; writes its line when the period has passed
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, BinaryIO

from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems

PROGRESS_DIR_ENV = "SEQPACK_PROGRESS_DIR"
INTERVAL_ENV = "SEQPACK_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 5.0
MAX_FLUSH_PERIOD = 2.0
CHECK_EVERY = 64
"""Records between two clock reads."""


@dataclass(frozen=True)
class ProgressCounts:
    """What a worker's progress line holds, and, summed over the workers, what the whole run has done so far."""

    records_read: int = 0
    records_rejected: int = 0
    bytes_read: int = 0
    files_read: int = 0
    records_tokenized: int = 0
    tokens: int = 0


FIELDS = tuple(f.name for f in fields(ProgressCounts))
SUFFIX = ".jsonl"


def interval_from_env() -> float:
    """Seconds between two progress lines: ``SEQPACK_PROGRESS_INTERVAL`` (tests make it short), else 5."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def flush_period() -> float:
    """How often a worker writes its counts: twice per progress line, so every line is fresh."""
    return min(MAX_FLUSH_PERIOD, interval_from_env() / 2)


class ProgressCounter:
    """The counts of one DoFn instance (one thread at a time uses it, as Beam runs a DoFn instance)."""

    def __init__(self, directory: str, *, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}")
        self.period = period
        self.clock = clock
        self.records_read = self.records_rejected = self.bytes_read = self.files_read = 0
        self.records_tokenized = self.tokens = 0
        self._calls = 0
        self._due = clock() + period
        self.enabled = True

    def read_records(self, records: int, *, rejected: int = 0) -> None:
        """Once per record or list of records read; ``records`` counts the rejected ones too."""
        self.records_read += records
        self.records_rejected += rejected
        self._tick(records)

    def file_read(self) -> None:
        """Once per input file, when it has been read to the end."""
        self.files_read += 1
        self.maybe_flush()

    def tokenized(self, records: int, tokens: int) -> None:
        """Once per tokenized example or batch."""
        self.records_tokenized += records
        self.tokens += tokens
        self._tick(records)

    def _tick(self, records: int = 1) -> None:
        """Read the clock once per ``CHECK_EVERY`` records, whether they come one by one or in batches."""
        before = self._calls
        self._calls += records
        if self._calls // CHECK_EVERY != before // CHECK_EVERY:
            self.maybe_flush()

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}

    def maybe_flush(self) -> None:
        if self.clock() >= self._due:
            self.flush()

    def flush(self) -> None:
        """Append the cumulative counts as one line; a write of a few dozen bytes, at most every period."""
        self._due = self.clock() + self.period
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="ascii") as handle:
                handle.write(json.dumps(self.counts(), separators=(",", ":")) + "\n")
        except OSError:
            self.enabled = False  # the run has ended and removed the directory: progress is best-effort

    def counting_open(self, path: str) -> BinaryIO:
        """Open an input file like ``beam_open`` (decompressing by suffix), counting the bytes read from storage
        (compressed bytes for a compressed file, so they compare with the files' sizes)."""
        compression = CompressionTypes.detect_compression_type(path)
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        counted: Any = CountingReader(raw, self)
        if compression == CompressionTypes.UNCOMPRESSED:
            return counted
        return CompressedFile(counted, compression_type=compression)  # type: ignore[return-value]


class CountingReader:
    """A read-only file wrapper that adds the size of every read to ``counter.bytes_read``; everything else
    (seek, tell, size, closed, ...) goes to the wrapped file, so parsers (pyarrow included) see no difference."""

    def __init__(self, raw: BinaryIO, counter: ProgressCounter) -> None:
        self._raw = raw
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._counter.bytes_read += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        reader = getattr(self._raw, "read1", self._raw.read)
        data = reader(size)
        self._counter.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._counter.bytes_read += count or 0
        return count

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        self._counter.bytes_read += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_from_env(*, clock: Callable[[], float] = time.monotonic) -> ProgressCounter | None:
    """A counter when the driver asked for live progress (``SEQPACK_PROGRESS_DIR`` names an existing local
    directory), else None: a remote worker or a quiet run keeps no counts."""
    directory = os.environ.get(PROGRESS_DIR_ENV)
    if not directory or not os.path.isdir(directory):
        return None
    return ProgressCounter(directory, period=flush_period(), clock=clock)
