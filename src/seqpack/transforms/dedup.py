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
from seqpack.transforms.render import Rendered

DROPPED_REASON = "duplicate"


def content_key(element: Rendered) -> bytes:
    """A hash of everything but the origin: the same pair or conversation, the same key."""
    content = [value for name, value in zip(element._fields, element, strict=True) if name != "origin"]
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def origin_order(element: Rendered) -> tuple[str, int]:
    path, line = split_origin(element.origin)
    return path, line or 0


class KeepFirstDoFn(StatsDoFn):
    """All copies of one record in, the first by origin out; the others are counted as dropped."""

    def process(self, group: tuple[bytes, Iterable[Rendered]]) -> Iterator[Any]:
        _, copies = group
        copies = list(copies)
        yield min(copies, key=origin_order)
        if len(copies) > 1:
            self.count("examples_dropped", len(copies) - 1)
            self.count_keyed("dropped_by_reason", DROPPED_REASON, len(copies) - 1)


class DropExactDuplicates(beam.PTransform):
    """Rendered pairs or conversations in; one per distinct content out."""

    def expand(self, elements: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            elements
            | "KeyByContent" >> beam.Map(lambda element: (content_key(element), element))
            | "GroupCopies" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstDoFn()).with_outputs("stats", main="kept")
        )
