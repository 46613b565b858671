"""``rejected/rejected.jsonl``: the reason codes a rejected record can carry, what each means, and a line's fields.

One catalogue for every step that rejects records (the readers, templates, chat rendering, tokenizing), the report
that explains them and docs/format.md (a test checks that every code the source emits is here, and that the doc
lists exactly these):

    >>> REASONS["ragged_csv_row"]
    'the CSV/TSV row has a different number of fields than the header'
"""

from __future__ import annotations

from typing import TypedDict

MAX_JSON_DEPTH = 100
"""JSON nested deeper than this is rejected (``json_too_deep``). A fixed limit, well below Python's recursion
limit, makes the outcome the same on every worker whatever its stack depth, and keeps later steps (Beam coders,
pickling) from recursing deeply."""
RAW_PREFIX_BYTES = 64 << 10
"""How much of an over-long record (or of an unparsable file remainder) a line's ``raw`` keeps."""

READ_REASONS: dict[str, str] = {
    "invalid_utf8": "the record's bytes are not valid UTF-8 (raw keeps the bytes as they are)",
    "nul_byte": "the record holds a NUL (0x00) byte, usually a sign of binary or UTF-16 data",
    "invalid_json": "the record is not valid JSON; the detail gives the parser's message and position",
    "json_too_deep": f"the JSON value nests deeper than {MAX_JSON_DEPTH} levels",
    "lone_surrogate": "a JSON string holds an unpaired surrogate escape such as \\ud800, which is not text",
    "not_an_object": "the JSON value is valid but not an object (e.g. a list or a string), so it has no fields",
    "ragged_csv_row": "the CSV/TSV row has a different number of fields than the header",
    "invalid_csv": "the csv module could not parse the row (e.g. a bare carriage return in an unquoted field)",
    "record_too_large": "the record is larger than max_record_bytes; raw keeps only its first "
    f"{RAW_PREFIX_BYTES >> 10} KiB",
    "unreadable_file": "the file (or its rest, after the records already read) could not be read or parsed: "
    "corrupt, truncated, of another format, or an I/O error; the detail says which and where",
}
"""The codes of the readers (``seqpack.inputs``): the record could not be parsed into fields."""

LATER_REASONS: dict[str, str] = {
    "missing_field": "the record lacks the source or target field the template needs",
    "null_field": "the source or target field is null",
    "not_a_string": "the source or target field is not a string",
    "empty_target": "the target is empty, or tokenizes to no tokens (for a conversation: no assistant token to "
    "train on)",
    "no_trained_tokens": "no token of the example takes loss once it is cut to fit --max-length and packed (e.g. "
    "--overlong truncate-left kept only a long final user turn, or a one-token example whose only token is its "
    "first, which never takes loss): there is nothing to learn from it",
    "chat_template_error": "the chat template failed, or went over a rendering limit (steps, size, time), for this "
    "record; the detail says which",
    "template_not_prefix_stable": "the chat template rewrites earlier text as the conversation grows (a message "
    "count, reasoning stripped from older turns), so the assistant turns cannot be located exactly; the detail "
    "shows where the renderings differ",
    "no_assistant_turn": "the conversation has no assistant message, so there is nothing to train on",
    "assistant_turn_first": "the conversation starts with an assistant message, with no prompt before it: add a "
    "system or user message first",
    "bad_message": "a message is not an object, or lacks a string role or content (or its tool_calls is not a "
    "list); the detail names the message",
    "unknown_role": "a message's role is not one seqpack knows: map it with --role-map NAME=ROLE (e.g. human=user)",
    "not_a_list": "the messages field is not a list of messages",
    "empty_conversation": "the messages field is an empty list",
}
"""The codes of later steps (templates, chat rendering, tokenizing): the record parsed, but makes no example."""

REASONS: dict[str, str] = {**READ_REASONS, **LATER_REASONS}
"""Every reason code, with its one-line description."""


class _RequiredFields(TypedDict):
    reason: str
    """A code of ``REASONS``."""
    detail: str
    """What exactly was wrong, and where."""
    file: str
    """The file (or dataset label) the record came from."""
    line: int | None
    """Its line, row or element number; None for a whole file."""
    raw: str
    """The record as text, invalid bytes replaced (at most ``RAW_PREFIX_BYTES`` of an over-long one)."""


class RejectedLine(_RequiredFields, total=False):
    """One line of ``rejected.jsonl``, its fields written in this order; the writer builds it, the report reads it."""

    raw_base64: str
    """The exact raw bytes, present only when they are not valid UTF-8."""
    source: str
    """In a mixture (``RunConfig.sources``): the name of the source the record came from."""
