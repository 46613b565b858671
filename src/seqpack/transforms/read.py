"""Read the resolved input files into records, in parallel, with every bad record kept as a rejection.

    >>> files = resolve_inputs(["gs://bucket/data/*.jsonl"])      # in the driver, before the pipeline
    >>> read = pipeline | "ReadRecords" >> ReadRecords(files)
    >>> read.records, read.rejected                                 # PCollections of Record and Rejected

``records`` holds ``seqpack.inputs.Record`` objects (fields dict + origin). Beam encodes them with its
fallback coder, which pickles a slotted dataclass compactly (the class name once, then the two
values); the read path never unpickles input data. Records come out in no particular order: downstream
steps that need determinism order by ``origin``, which is unique and stable.
"""

from __future__ import annotations

import bz2
import gzip
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.faults import checkpoint
from seqpack.inputs import (
    DEFAULT_MAX_RECORD_BYTES,
    InputError,
    InputFile,
    Record,
    expand_inputs,
    iter_input_lists,
    split_inputs,
)
from seqpack.transforms.progress_counts import ProgressCounter, progress_from_env

REJECTED_TAG = "rejected"
_EXTRAS = {"gs": "gcp", "s3": "aws"}


def beam_match(pattern: str) -> list[str]:
    """The files a glob (or exact path) matches on any filesystem Beam knows."""
    if "://" not in pattern and not posixpath.dirname(pattern):
        # Beam's local filesystem matches nothing for a bare relative glob such as '*.jsonl'
        return [path.removeprefix("./") for path in beam_match(f"./{pattern}")]
    try:
        [result] = FileSystems.match([pattern])
    except (ValueError, OSError) as error:  # no filesystem for the scheme, no credentials, no network
        scheme = pattern.split("://", 1)[0] if "://" in pattern else ""
        hint = f" (is seqpack[{_EXTRAS[scheme]}] installed and configured?)" if scheme in _EXTRAS else ""
        raise InputError(f"cannot list {pattern!r}{hint}: {error}") from None
    return [metadata.path for metadata in result.metadata_list]


class _ClosesRaw:
    """A decompressor over a Beam file that closes the file too (Python's leave a file they were handed open)."""

    _raw: BinaryIO

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            self._raw.close()


class _GzipReader(_ClosesRaw, gzip.GzipFile):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw


class _Bz2Reader(_ClosesRaw, bz2.BZ2File):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(raw, mode="rb")
        self._raw = raw


_STRICT_DECOMPRESSORS = {".gz": _GzipReader, ".gzip": _GzipReader, ".bz2": _Bz2Reader}
"""Beam's own decompression ends a truncated .gz or .bz2 file quietly at the cut, so the records after it would
vanish from the accounting; Python's raises ``EOFError`` there, which the reader turns into a rejection."""


def beam_open(path: str) -> BinaryIO:
    """Open a file on any Beam filesystem, decompressing ``.gz``/``.bz2``/``.zst``/... by suffix."""
    strict = next((cls for suffix, cls in _STRICT_DECOMPRESSORS.items() if path.lower().endswith(suffix)), None)
    if strict is not None:
        return strict(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def resolve_inputs(patterns: Sequence[str]) -> list[InputFile]:
    """Globs, files and directories to a sorted list of files, big local JSON lines files cut into byte ranges
    (``seqpack.inputs.ranges``); ``InputError`` (a ``ValueError``) if any pattern matches nothing or names a file
    seqpack cannot read. Runs in the driver, before any work."""
    return split_inputs(expand_inputs(patterns, match=beam_match, open_binary=beam_open))


RECORDS_PER_BATCH = 512
"""Records travel in lists of this many: the runner's per-element cost is paid per list, not per record."""


class ReadFileDoFn(beam.DoFn):
    """One input file in; lists of its records on the main output, its rejections on ``rejected``."""

    progress: ProgressCounter | None = None
    """Live progress counts, only in a local run that shows progress (see ``transforms.progress_counts``)."""

    def __init__(
        self, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, batch_size: int = RECORDS_PER_BATCH
    ) -> None:
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size
        # records_read counts every record met, rejected ones included, as stats.json's identity expects.
        self.records_read = beam.metrics.Metrics.counter("seqpack", "records_read")
        self.records_rejected = beam.metrics.Metrics.counter("seqpack", "records_rejected")

    def setup(self) -> None:
        self.progress = progress_from_env()

    def process(self, input_file: InputFile) -> Iterator[Any]:
        progress = self.progress
        open_binary = beam_open if progress is None else progress.counting_open
        pending: list[Record] = []
        for items in iter_input_lists(input_file, open_binary, max_record_bytes=self.max_record_bytes):
            records = [item for item in items if type(item) is Record]
            rejected = len(items) - len(records)
            if progress is not None:
                progress.read_records(len(items), rejected=rejected)
            if rejected:
                self.records_read.inc(rejected)
                self.records_rejected.inc(rejected)
                for item in items:
                    if type(item) is not Record:
                        yield beam.pvalue.TaggedOutput(REJECTED_TAG, item)
            pending.extend(records)
            whole = len(pending) - len(pending) % self.batch_size
            yield from self._emit(pending[:whole])
            pending = pending[whole:]
        yield from self._emit(pending)
        if progress is not None:
            progress.file_read()

    def _emit(self, records: list[Record]) -> Iterator[list[Record]]:
        """``records`` in lists of ``batch_size`` (the last one may be shorter)."""
        size = self.batch_size
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            checkpoint("read")
            self.records_read.inc(len(batch))  # per list: a metric update per record costs more than reading
            yield batch

    def finish_bundle(self) -> None:
        if self.progress is not None:
            self.progress.flush()


class ReadOutputs(NamedTuple):
    records: beam.PCollection
    """Lists of ``Record`` (up to ``RECORDS_PER_BATCH`` each)."""
    rejected: beam.PCollection


class ReadRecords(beam.PTransform):
    """Resolved input files (or byte ranges of them, see ``resolve_inputs``) in; ``ReadOutputs(records,
    rejected)`` out (a named pair of PCollections)."""

    def __init__(
        self,
        files: Sequence[InputFile],
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        batch_size: int = RECORDS_PER_BATCH,
    ) -> None:
        super().__init__()
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be positive, got {max_record_bytes}")
        self.files = list(files)
        self.max_record_bytes = max_record_bytes
        self.batch_size = batch_size

    def expand(self, pbegin: beam.pvalue.PBegin) -> ReadOutputs:
        parse = beam.ParDo(ReadFileDoFn(max_record_bytes=self.max_record_bytes, batch_size=self.batch_size))
        read = (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            # Without this, Create's single bundle would fuse with reading: one worker would read every file.
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseFiles" >> parse.with_outputs(REJECTED_TAG, main="records")
        )
        if all(unit.is_range for unit in self.files):
            # Every file is read in ranges of bounded size: records stay in the worker that read them, and
            # reading, rendering and tokenizing run fused, with no record crossing a process boundary.
            return ReadOutputs(read.records, read[REJECTED_TAG])
        # A file read whole is read by one worker; spreading its record lists lets every worker tokenize.
        # This changes only where records are processed, never which records there are.
        records = read.records | "SpreadRecords" >> beam.Reshuffle()
        return ReadOutputs(records, read[REJECTED_TAG])
