"""Render records through the prompt template into (source text, target text, origin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from seqpack.readers import Record, Rejected
from seqpack.templates import RenderError, Template
from seqpack.transforms.bundle_stats import StatsDoFn

REJECTED_TAG = "rejected"


class RenderDoFn(StatsDoFn):
    """Records in, ``(source_text, target_text, origin)`` out; unrenderable records go to ``rejected``."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self.records_read = beam.metrics.Metrics.counter("seqpack", "records_rendered")

    def process(self, record: Record) -> Iterator[Any]:
        self.count("records_read")
        try:
            source, target = self.template.render(record.fields)
        except RenderError as error:
            yield beam.pvalue.TaggedOutput(
                REJECTED_TAG, Rejected(error.reason, record.origin, raw_json(record.fields), error.detail)
            )
            return
        yield source, target, record.origin


def raw_json(fields: dict[str, Any]) -> bytes:
    """A record's fields as JSON bytes, for ``rejected/`` (values JSON cannot hold are shown with repr)."""
    import json

    return json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8", "replace")
