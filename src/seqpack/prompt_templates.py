"""Prompt templates: turn one input record into (source text, target text).

The source text is everything the model is conditioned on (it is masked out of the loss); the target text
is what it learns to produce. Pure functions, no Beam or tokenizer import.

    >>> make_template("plain").render({"source": "cat", "target": "chat"})
    ('cat = ', 'chat')
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)

BUILTIN_TEMPLATES = ("plain", "alpaca", "chat")


class RenderError(ValueError):
    """A record cannot be rendered; ``reason`` is the stable code written to ``rejected/``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _text_field(record: Mapping[str, Any], name: str, *, optional: bool = False) -> str:
    if name not in record:
        if optional:
            return ""
        raise RenderError("missing_field", f"field {name!r} is missing (fields present: {sorted(record)[:10]})")
    value = record[name]
    if value is None:
        if optional:
            return ""
        raise RenderError("null_field", f"field {name!r} is null")
    if not isinstance(value, str):
        raise RenderError("not_a_string", f"field {name!r} is a {type(value).__name__}, not a string")
    return value


def _require_target(text: str, name: str) -> str:
    if not text.strip():
        what = "empty" if not text else f"blank (only whitespace: {text[:20]!r})"
        raise RenderError("empty_target", f"target field {name!r} is {what}; blank targets are rejected")
    return text


@dataclass(frozen=True)
class PlainTemplate:
    """source + separator → target (the classic ``English = French`` format); the separator is masked."""

    source_field: str = "source"
    target_field: str = "target"
    separator: str = " = "

    def render(self, record: Mapping[str, Any]) -> tuple[str, str]:
        source = _text_field(record, self.source_field)
        target = _require_target(_text_field(record, self.target_field), self.target_field)
        return source + self.separator, target


@dataclass(frozen=True)
class AlpacaTemplate:
    """The two Stanford Alpaca prompts (with and without ``input``), ending in ``### Response:``."""

    target_field: str = "output"

    def render(self, record: Mapping[str, Any]) -> tuple[str, str]:
        instruction = _text_field(record, "instruction")
        context = _text_field(record, "input", optional=True)
        target = _require_target(_text_field(record, self.target_field), self.target_field)
        if context.strip():
            return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction, input=context), target
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction), target


Piece = tuple[str, str | None]
"""Literal text (braces already unescaped) and the placeholder that follows it, if any."""


@lru_cache(maxsize=64)
def parse_format_template(text: str) -> tuple[Piece, ...]:
    """Split a ``--template`` format string into pieces; raise ``ValueError`` naming any field it cannot fill.

    Only plain ``{name}`` fields are filled: a conversion (``{target!r}``), a format spec (``{source:>10}``) or
    attribute/index access (``{target.text}``, ``{target[0]}``) would change or reach into the record's text in
    ways a training set should not depend on, and ``str.format`` would fail on them in every worker.

        >>> parse_format_template("Q: {source}\\nA: {target}")
        (('Q: ', 'source'), ('\\nA: ', 'target'))
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(
            f"template {text!r} is not a valid format string ({exc}): write literal braces as {{{{ and }}}}"
        ) from exc
    pieces = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            _check_field(text, name, spec, conversion)
        pieces.append((literal, name))
    return tuple(pieces)


def _check_field(text: str, name: str, spec: str | None, conversion: str | None) -> None:
    field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    if conversion or spec:
        what = f"a conversion ('!{conversion}')" if conversion else f"a format spec (':{spec}')"
        raise ValueError(
            f"template {text!r}: field {field} uses {what}; fields are filled with the record's text as it is, "
            f"so write it as {{{name}}}"
        )
    if not name.isidentifier():
        plain = re.split(r"[.\[]", name, maxsplit=1)[0].strip()
        fix = (
            f"write {{{plain}}} to use the field {plain!r} as it is"
            if plain.isidentifier()
            else "name a record field, e.g. {question}"
        )
        raise ValueError(
            f"template {text!r}: field {field} is not a plain field name (attribute access, indexing, positional "
            f"and empty fields are not supported): {fix}"
        )


@dataclass(frozen=True)
class FormatTemplate:
    """A user template such as ``"Q: {question}\\nA: {target}"``.

    Everything before ``{target}`` is the (masked) source, ``{target}`` and anything after it is trained on.
    ``{source}`` and ``{target}`` stand for ``--source-field`` and ``--target-field``; other names are record
    fields. Literal braces are written ``{{`` and ``}}``. Only plain ``{name}`` fields are allowed (see
    ``parse_format_template``).
    """

    text: str
    source_field: str = "source"
    target_field: str = "target"

    def __post_init__(self) -> None:
        names = [name for _, name in parse_format_template(self.text) if name is not None]
        if names.count("target") != 1:
            raise ValueError(
                f"template {self.text!r} must contain {{target}} exactly once, where the trained text goes"
            )

    def _field_name(self, placeholder: str) -> str:
        return {"source": self.source_field, "target": self.target_field}.get(placeholder, placeholder)

    def _fill(self, pieces: tuple[Piece, ...], record: Mapping[str, Any]) -> str:
        return "".join(
            literal + (_text_field(record, self._field_name(name)) if name else "") for literal, name in pieces
        )

    def render(self, record: Mapping[str, Any]) -> tuple[str, str]:
        pieces = parse_format_template(self.text)
        at = next(n for n, (_, name) in enumerate(pieces) if name == "target")
        target = _require_target(_text_field(record, self.target_field), self.target_field)
        source = self._fill(pieces[:at], record) + pieces[at][0]
        return source, target + self._fill(pieces[at + 1 :], record)


Template = PlainTemplate | AlpacaTemplate | FormatTemplate


def make_template(
    name_or_text: str = "plain",
    *,
    source_field: str = "source",
    target_field: str = "target",
    separator: str = " = ",
) -> Template:
    """Resolve ``--template``: ``plain``, ``alpaca`` or a format string containing ``{target}``."""
    if name_or_text == "plain":
        return PlainTemplate(source_field, target_field, separator)
    if name_or_text == "chat":
        raise ValueError("the chat template renders with the tokenizer: use seqpack.chat, not make_template")
    if name_or_text == "alpaca":
        return AlpacaTemplate("output" if target_field == "target" else target_field)
    if "{" in name_or_text:
        return FormatTemplate(name_or_text, source_field, target_field)
    raise ValueError(
        f"unknown template {name_or_text!r}: use one of {', '.join(BUILTIN_TEMPLATES)} "
        "or a format string with {target}, e.g. 'Q: {source}\\nA: {target}'"
    )


def template_texts(template: Template) -> list[str]:
    """The fixed text a template adds around the fields (checked for special-looking strings up front)."""
    if isinstance(template, PlainTemplate):
        return [template.separator]
    if isinstance(template, AlpacaTemplate):
        return [ALPACA_PROMPT_WITH_INPUT, ALPACA_PROMPT_NO_INPUT]
    return [template.text]
