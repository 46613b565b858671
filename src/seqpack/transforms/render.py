"""Render records through the prompt template into (source text, target text, origin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from seqpack.chat import conversation_from_record
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


class ChatRenderDoFn(StatsDoFn):
    """Records in, ``(messages, origin)`` out: conversations read in the configured style, validated."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def process(self, record: Record) -> Iterator[Any]:
        self.count("records_read")
        cfg = self.config
        try:
            messages = conversation_from_record(
                record.fields,
                style=cfg.chat_style,
                messages_field=cfg.messages_field,
                role_map=cfg.role_map or None,
                source_field=cfg.source_field,
                target_field=cfg.target_field,
                system=cfg.system,
            )
        except RenderError as error:
            yield beam.pvalue.TaggedOutput(
                REJECTED_TAG, Rejected(error.reason, record.origin, raw_json(record.fields), error.detail)
            )
            return
        yield messages, record.origin


def raw_json(fields: dict[str, Any]) -> bytes:
    """A record's fields as JSON bytes, for ``rejected/`` (values JSON cannot hold are shown with repr)."""
    import json

    return json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8", "replace")
