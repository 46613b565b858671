"""``--dedup exact``: drop exact duplicates, keeping the first occurrence by (input file, line).

"First" must not depend on which worker saw a record first, so it is decided by origin, after grouping
every copy of a record together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from seqpack.transforms.bundle_stats import StatsDoFn
from seqpack.transforms.rejected import split_origin

DROPPED_REASON = "duplicate"


def content_key(element: tuple) -> bytes:
    """A hash of everything but the origin (the last field): the same pair or conversation, the same key."""
    text = json.dumps(element[:-1], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def origin_order(element: tuple) -> tuple[str, int]:
    path, line = split_origin(element[-1])
    return path, line or 0


class KeepFirstDoFn(StatsDoFn):
    """All copies of one record in, the first by origin out; the others are counted as dropped."""

    def process(self, group: tuple[bytes, Iterable[tuple]]) -> Iterator[Any]:
        _, copies = group
        copies = list(copies)
        yield min(copies, key=origin_order)
        if len(copies) > 1:
            self.count("examples_dropped", len(copies) - 1)
            self.count_keyed("dropped_by_reason", DROPPED_REASON, len(copies) - 1)


class DropExactDuplicates(beam.PTransform):
    """Rendered elements (tuples whose last field is the origin) in; one per distinct content out."""

    def expand(self, elements: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            elements
            | "KeyByContent" >> beam.Map(lambda element: (content_key(element), element))
            | "GroupCopies" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstDoFn()).with_outputs("stats", main="kept")
        )
