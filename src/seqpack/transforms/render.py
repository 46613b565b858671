"""Render lists of records into text: pairs through the prompt template, conversations through the tokenizer's
chat template. A list in, one list out: the batch stays a batch until tokenization."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam

from seqpack.chat import Segment, conversation_from_record, render_segments
from seqpack.inputs import Record, Rejected
from seqpack.prompt_templates import RenderError, Template
from seqpack.tokenizer import load_for_run
from seqpack.transforms.bundle_stats import StatsDoFn

REJECTED_TAG = "rejected"


class RenderedPair(NamedTuple):
    """A pair ready to tokenize: the masked text, the trained text, and where the record came from."""

    source: str
    target: str
    origin: str


class RenderedChat(NamedTuple):
    """A conversation ready to tokenize: as read (it chooses the validation split, and ``rejected/`` shows it), its
    chat-template text cut into ``(text, trained?)`` segments, and where the record came from."""

    messages: list[dict[str, Any]]
    segments: list[Segment]
    origin: str


Rendered = RenderedPair | RenderedChat
"""What ``Render`` emits: named fields, ``origin`` always last (``transforms.dedup`` keys on the others)."""


class _RenderBase(StatsDoFn):
    """Renders every record of a list; the ones that cannot be rendered go to ``rejected``."""

    def render(self, fields: dict[str, Any], origin: str) -> Rendered | Rejected:
        raise NotImplementedError

    def process(self, records: Sequence[Record]) -> Iterator[Any]:
        self.count("records_read", len(records))
        rendered = []
        for record in records:
            try:
                result = self.render(record.fields, record.origin)
            except RenderError as error:
                result = Rejected(error.reason, record.origin, raw_json(record.fields), error.detail)
            if isinstance(result, Rejected):
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, result)
            else:
                rendered.append(result)
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


@dataclass(frozen=True, kw_only=True)
class ChatTemplate:
    """The tokenizer whose chat template renders conversations, and which turns are trained on."""

    tokenizer: str
    trust_remote_code: bool = False
    added_tokens: tuple[str, ...] = ()
    train_on: str = "assistant"


class ChatRenderDoFn(_RenderBase):
    """Lists of records in, lists of ``RenderedChat`` out: conversations read in the configured style and rendered
    with the tokenizer's chat template (see ``seqpack.chat.render_segments``; a template that is not
    prefix-stable rejects the record rather than guessing which tokens are the assistant's).

    The tokenizer is loaded once per worker in ``setup``.
    """

    def __init__(self, chat_fields: ChatFields, template: ChatTemplate) -> None:
        self.chat_fields = chat_fields
        self.template = template

    def setup(self) -> None:
        spec = self.template
        self.tokenizer = load_for_run(
            spec.tokenizer, trust_remote_code=spec.trust_remote_code, extra_tokens=spec.added_tokens
        )

    def render(self, fields: dict[str, Any], origin: str) -> RenderedChat | Rejected:
        messages = self.conversation(fields)
        try:
            segments = render_segments(self.tokenizer, messages, train_on=self.template.train_on)
        except RenderError as error:  # rejected/ shows the conversation as seqpack read it
            return Rejected(error.reason, origin, raw_json({"messages": messages}), error.detail)
        return RenderedChat(messages, segments, origin)

    def conversation(self, fields: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.chat_fields
        return conversation_from_record(
            fields,
            style=cfg.style,
            messages_field=cfg.messages_field,
            role_map=dict(cfg.role_map) or None,
            source_field=cfg.source_field,
            target_field=cfg.target_field,
            system=cfg.system,
        )


def raw_json(fields: dict[str, Any]) -> bytes:
    """A record's fields as JSON bytes, for ``rejected/`` (values JSON cannot hold are shown with repr)."""
    return json.dumps(fields, ensure_ascii=False, default=repr).encode("utf-8", "replace")
