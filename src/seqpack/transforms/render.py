"""Render lists of records through the prompt template: pairs ``(source_text, target_text, origin)`` or
conversations ``(messages, origin)``. A list in, one list out: the batch stays a batch until tokenization."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam

from seqpack.chat import conversation_from_record
from seqpack.inputs import Record, Rejected
from seqpack.prompt_templates import RenderError, Template
from seqpack.transforms.bundle_stats import StatsDoFn

REJECTED_TAG = "rejected"


class RenderedPair(NamedTuple):
    """A pair ready to tokenize: the masked text, the trained text, and where the record came from."""

    source: str
    target: str
    origin: str


class RenderedChat(NamedTuple):
    """A conversation ready to tokenize, and where the record came from."""

    messages: list[dict[str, Any]]
    origin: str


Rendered = RenderedPair | RenderedChat
"""What ``Render`` emits: named fields, ``origin`` always last (``transforms.dedup`` keys on the others)."""


class _RenderBase(StatsDoFn):
    """Renders every record of a list; the ones that cannot be rendered go to ``rejected``."""

    def render(self, fields: dict[str, Any], origin: str) -> Rendered:
        raise NotImplementedError

    def process(self, records: Sequence[Record]) -> Iterator[Any]:
        self.count("records_read", len(records))
        rendered = []
        for record in records:
            try:
                rendered.append(self.render(record.fields, record.origin))
            except RenderError as error:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG, Rejected(error.reason, record.origin, raw_json(record.fields), error.detail)
                )
        if rendered:
            yield rendered


class RenderDoFn(_RenderBase):
    """Lists of records in, lists of ``(source_text, target_text, origin)`` out."""

    def __init__(self, template: Template) -> None:
        self.template = template

    def render(self, fields: dict[str, Any], origin: str) -> RenderedPair:
        source, target = self.template.render(fields)
        return RenderedPair(source, target, origin)


@dataclass(frozen=True, kw_only=True)
class ChatFields:
    """Where a record holds its conversation (``seqpack.chat.conversation_from_record``'s arguments)."""

    style: str = "auto"
    messages_field: str | None = None
    role_map: tuple[tuple[str, str], ...] = ()
    source_field: str = "source"
    target_field: str = "target"
    system: str | None = None


class ChatRenderDoFn(_RenderBase):
    """Lists of records in, lists of ``(messages, origin)`` out: conversations read in the configured style."""

    def __init__(self, chat_fields: ChatFields) -> None:
        self.chat_fields = chat_fields

    def render(self, fields: dict[str, Any], origin: str) -> RenderedChat:
        cfg = self.chat_fields
        messages = conversation_from_record(
            fields,
            style=cfg.style,
            messages_field=cfg.messages_field,
            role_map=dict(cfg.role_map) or None,
            source_field=cfg.source_field,
            target_field=cfg.target_field,
            system=cfg.system,
        )
        return RenderedChat(messages, origin)


def raw_json(fields: dict[str, Any]) -> bytes:
    """A record's fields as JSON bytes, for ``rejected/`` (values JSON cannot hold are shown with repr)."""
    return json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8", "replace")
