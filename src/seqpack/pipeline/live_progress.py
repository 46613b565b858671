"""Driver side of live progress: a thread that sums the workers' counts and prints a line every few seconds.

The local runner runs stages one after another, so a run shows its phases in turn: reading (percent of the input
bytes, when their sizes are known), tokenizing (percent of the records read), then packing and writing, which
ends with the run's summary::

    seqpack: 0:10 reading 42% of 1.2 GB (3 of 8 files) · 310,000 records (31,000/s) · ~0:14 left
    seqpack: 0:25 read 770,000 records (1.2 GB) · spreading them over the workers
    seqpack: 0:35 tokenizing 61% · 470,000 of 770,000 records (24,000/s) · 52.1M tokens (2.7M/s) · ~0:12 left
    seqpack: 0:50 tokenized 770,000 records (85.3M tokens) · packing and writing shards

Workers write their counts to files (see :mod:`seqpack.transforms.progress_counts`) in a local temporary directory that
this module creates, names to them through ``SEQPACK_PROGRESS_DIR`` and removes at the end. Only the local
runner's workers can reach it: on Dataflow, Flink or Spark a run shows no live progress (watch the runner's own
UI, where the ``seqpack`` counters appear under their names).

    with LiveProgress(files):      # around pipeline.run() and wait_until_finish()
        result = pipeline.run()
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from seqpack.inputs import InputFile
from seqpack.transforms.progress_counts import FIELDS, PROGRESS_DIR_ENV, SUFFIX, ProgressCounts, interval_from_env

_TAIL_BYTES = 4096


Totals = ProgressCounts
"""The workers' counts summed: what the whole run has done so far."""




def _last_line(path: str) -> dict[str, Any] | None:
    """The last complete line of a worker's file (a line being written has no newline yet)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    lines = tail.split(b"\n")[:-1]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def read_totals(directory: str) -> Totals:
    """Sum the latest counts of every worker file in ``directory``."""
    sums = dict.fromkeys(FIELDS, 0)
    try:
        names = [name for name in os.listdir(directory) if name.endswith(SUFFIX)]
    except OSError:
        return Totals()
    for name in names:
        counts = _last_line(os.path.join(directory, name)) or {}
        for key in FIELDS:
            value = counts.get(key, 0)
            sums[key] += value if isinstance(value, int) else 0
    return Totals(**sums)


@dataclass(frozen=True)
class InputSize:
    files: int
    bytes: int | None
    """None when some file's size cannot be learnt cheaply."""
    parts: int = 0
    """Units the workers read: files, or byte ranges of big files (``seqpack.inputs.ranges``); 0 means ``files``."""

    @property
    def units(self) -> int:
        return self.parts or self.files

    def units_text(self, done: int) -> str:
        noun = "parts" if self.units > self.files else "files"
        return f"{done} of {self.units} {noun}"


def input_size(files: Sequence[InputFile]) -> InputSize:
    """Sizes of the resolved input files, from the filesystem's listing (no file is opened)."""
    from apache_beam.io.filesystems import FileSystems

    paths = sorted({f.path for f in files})
    try:
        results = FileSystems.match(paths)
    except Exception:  # noqa: BLE001 - any filesystem error only means we show no percentage
        return InputSize(len(paths), None, len(files))
    if not all(result.metadata_list for result in results):
        return InputSize(len(paths), None, len(files))
    return InputSize(len(paths), sum(result.metadata_list[0].size_in_bytes for result in results), len(files))


# ------------------------------------------------------------------------------------------------ the line


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def size_text(count: float) -> str:
    """Bytes in decimal units: ``812 B``, ``4.1 MB``, ``1.2 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def count_text(count: float) -> str:
    """Counts readable at a glance: ``52,100`` below ten million, then ``52.1M``, ``1.2G``."""
    if count >= 1e9:
        return f"{count / 1e9:.1f}G"
    if count >= 1e7:
        return f"{count / 1e6:.1f}M"
    return f"{int(count):,}"


class _Rate:
    """Speed of one counter since it was first seen moving (a phase's start is not known more precisely)."""

    def __init__(self) -> None:
        self.start: tuple[float, float] | None = None

    def update(self, now: float, value: float) -> float | None:
        if value <= 0:
            return None
        if self.start is None:
            self.start = (now, value)
            return None
        t0, v0 = self.start
        return (value - v0) / (now - t0) if now > t0 and value > v0 else None


def _eta(remaining: float, rate: float | None) -> str:
    return f" · ~{clock_text(remaining / rate)} left" if rate and remaining > 0 else ""


class ProgressFormatter:
    """Turns successive totals into progress lines; keeps the rates between calls."""

    def __init__(self, size: InputSize) -> None:
        self.size = size
        self.bytes_rate, self.read_rate = _Rate(), _Rate()
        self.tokenize_rate, self.token_rate = _Rate(), _Rate()

    def line(self, totals: Totals, elapsed: float) -> str:
        read_rate = self.read_rate.update(elapsed, totals.records_read)
        bytes_rate = self.bytes_rate.update(elapsed, totals.bytes_read)
        tokenize_rate = self.tokenize_rate.update(elapsed, totals.records_tokenized)
        token_rate = self.token_rate.update(elapsed, totals.tokens)
        prefix = f"seqpack: {clock_text(elapsed)}"
        if totals.records_tokenized == 0:
            if totals.records_read == 0 and totals.bytes_read == 0:
                return f"{prefix} starting workers"
            return f"{prefix} {self._reading(totals, read_rate, bytes_rate)}"
        return f"{prefix} {self._tokenizing(totals, tokenize_rate, token_rate, bytes_rate)}"

    def _reading(self, totals: Totals, read_rate: float | None, bytes_rate: float | None) -> str:
        records = f"{totals.records_read:,} records" + (f" ({count_text(read_rate)}/s)" if read_rate else "")
        if self._reading_done(totals):
            done = f"{totals.records_read:,} records ({size_text(totals.bytes_read)})"
            return f"read {done} · spreading them over the workers"
        if not self.size.bytes:
            return f"reading · {records} · {size_text(totals.bytes_read)}"
        share, left = self._bytes_done(totals, bytes_rate)
        return f"reading {share} ({self.size.units_text(totals.files_read)}) · {records}{left}"

    def _bytes_done(self, totals: Totals, bytes_rate: float | None) -> tuple[str, str]:
        """``"N% of X MB"`` of the input read, and the time left at ``bytes_rate``."""
        fraction = min(totals.bytes_read / self.size.bytes, 0.99)
        left = _eta(self.size.bytes - totals.bytes_read, bytes_rate)
        return f"{fraction:.0%} of {size_text(self.size.bytes)}", left

    def _reading_done(self, totals: Totals) -> bool:
        return totals.files_read >= self.size.units

    def _tokenizing(
        self, totals: Totals, rate: float | None, token_rate: float | None, bytes_rate: float | None = None
    ) -> str:
        expected = totals.records_read - totals.records_rejected
        tokens = f"{count_text(totals.tokens)} tokens" + (f" ({count_text(token_rate)}/s)" if token_rate else "")
        if not self._reading_done(totals) or expected <= 0:  # the phases overlap (reading fused with tokenizing)
            counts = f"{totals.records_read:,} records read · {totals.records_tokenized:,} tokenized · {tokens}"
            if not self.size.bytes:
                return f"reading and tokenizing · {counts}"
            share, left = self._bytes_done(totals, bytes_rate)
            return f"reading and tokenizing {share} · {counts}{left}"
        if totals.records_tokenized >= expected:
            return (
                f"tokenized {totals.records_tokenized:,} records ({count_text(totals.tokens)} tokens) · "
                "packing and writing shards"
            )
        fraction = totals.records_tokenized / expected
        per_second = f" ({count_text(rate)}/s)" if rate else ""
        return (
            f"tokenizing {fraction:.0%} · {totals.records_tokenized:,} of {expected:,} records{per_second} · "
            f"{tokens}{_eta(expected - totals.records_tokenized, rate)}"
        )


# ------------------------------------------------------------------------------------------------ the thread


class LiveProgress:
    """Prints a progress line to ``stream`` every ``interval`` seconds while the block runs.

    Not reentrant across threads of one process: the workers learn the directory from an environment variable.
    """

    def __init__(
        self,
        files: Sequence[InputFile],
        *,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = list(files)
        self.interval = interval if interval is not None else interval_from_env()
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.directory = ""

    def __enter__(self) -> LiveProgress:
        self.directory = tempfile.mkdtemp(prefix="seqpack-progress-")
        self._saved = os.environ.get(PROGRESS_DIR_ENV)
        os.environ[PROGRESS_DIR_ENV] = self.directory  # worker subprocesses inherit it when they start
        formatter = ProgressFormatter(input_size(self.files))
        self._thread = threading.Thread(target=self._loop, args=(formatter, self.clock()), daemon=True,
                                        name="seqpack-progress")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._saved is None:
            os.environ.pop(PROGRESS_DIR_ENV, None)
        else:
            os.environ[PROGRESS_DIR_ENV] = self._saved
        shutil.rmtree(self.directory, ignore_errors=True)

    def _loop(self, formatter: ProgressFormatter, start: float) -> None:
        while not self._stop.wait(self.interval):
            line = formatter.line(read_totals(self.directory), self.clock() - start)
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: progress is a courtesy, never a failure
                return


@contextmanager
def live_progress(files: Sequence[InputFile], *, enabled: bool) -> Iterator[None]:
    """``LiveProgress`` when ``enabled``, else nothing: one ``with`` in the driver either way."""
    if not enabled:
        yield
        return
    with LiveProgress(files):
        yield
