"""Keep every rejected record, raw, with its reason and origin, in ``rejected/rejected.jsonl``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.inputs import Rejected
from seqpack.schemas import REJECTED_FILE, RejectedLine
from seqpack.schemas import stats as stats_format
from seqpack.transforms.write import write_atomically


def split_origin(origin: str) -> tuple[str, int | None]:
    """``"data/a.jsonl:12"`` → ``("data/a.jsonl", 12)``; an origin without a line number keeps it whole."""
    path, _, line = origin.rpartition(":")
    return (path, int(line)) if path and line.isdigit() else (origin, None)


def rejected_line(rejected: Rejected, source: str | None = None) -> str:
    """One JSON line: reason, detail, file, line and the raw record (base64 too when it is not UTF-8); in a
    mixture, the name of the record's source."""
    path, line = split_origin(rejected.origin)
    entry = RejectedLine(
        reason=rejected.reason,
        detail=rejected.detail,
        file=path,
        line=line,
        raw=rejected.raw.decode("utf-8", "replace"),
    )
    if source is not None:
        entry["source"] = source
    try:
        rejected.raw.decode("utf-8")
    except UnicodeDecodeError:
        entry["raw_base64"] = base64.b64encode(rejected.raw).decode("ascii")
    return json.dumps(entry, ensure_ascii=False)


def _sort_key(rejected: Rejected) -> tuple[str, int, str]:
    path, line = split_origin(rejected.origin)
    return path, line or 0, rejected.reason


class WriteRejectedDoFn(beam.DoFn):
    """All rejections in one group: sorted by origin (deterministic), written once, counted."""

    def __init__(self, staging: str) -> None:
        self.staging = staging

    def process(self, element: tuple[None, Iterable[tuple[str, Rejected]]]) -> Iterator[dict[str, Any]]:
        _, items = element
        # In a mixture an item is (stage, rejected, source name): the line and the source's counts name it.
        ordered = sorted(items, key=lambda item: (_sort_key(item[1]), item[2:]))
        text = "".join(rejected_line(item[1], *item[2:]) + "\n" for item in ordered)
        write_atomically(FileSystems.join(self.staging, REJECTED_FILE), text.encode("utf-8"))
        stats = stats_format.empty_stats()
        for stage, rejected, *source in ordered:
            read = stage == "read"  # the reader could not make a record of it, so no later step counted it
            stats["records_rejected"] += 1
            stats["rejected_by_reason"][rejected.reason] = stats["rejected_by_reason"].get(rejected.reason, 0) + 1
            stats["records_read"] += int(read)
            if source:
                counts = stats_format.source_stats(stats, source[0])
                counts["records_rejected"] += 1
                counts["records_read"] += int(read)
        yield stats


class WriteRejected(beam.PTransform):
    """``(stage, Rejected)`` pairs in; writes ``rejected/rejected.jsonl`` and outputs their statistics."""

    def __init__(self, staging: str) -> None:
        super().__init__()
        self.staging = staging

    def expand(self, rejected: beam.PCollection) -> beam.PCollection:
        return (
            rejected
            | "OneGroup" >> beam.Map(lambda item: (None, item))
            | "Gather" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(WriteRejectedDoFn(self.staging))
        )
