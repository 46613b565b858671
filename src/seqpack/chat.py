"""Conversations through the tokenizer's own chat template, with an exact loss mask on the assistant turns.

Three pure steps, no Beam: ``conversation_from_record`` turns a record (OpenAI ``messages``, ShareGPT
``conversations`` or a source/target pair) into a list of messages; ``render_segments`` renders it with the
tokenizer's chat template (as ``tokenizer.apply_chat_template`` would, within the work limits of
``seqpack.chat_sandbox``) and cuts the text into (text, trained?) segments; ``tokenize_segments``
tokenizes the segments of many conversations in one call and concatenates them, so the boundary between
masked and trained tokens is exact (the seqpack principle, as for pairs).

    >>> messages = conversation_from_record({"source": "Hi", "target": "Hello!"}, system="Be brief.")
    >>> ids, trained = tokenize_segments(tok, [render_segments(tok, messages)])[0]

The assistant spans are found without ``{% generation %}`` markers: the conversation is rendered up to each
assistant turn (with the generation prompt) and up to the end of that turn, and every such rendering must be a
prefix of the next one and of the full rendering. A template that rewrites earlier text as the conversation
grows (a message count at the top, reasoning stripped from older turns) is rejected, never guessed at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from seqpack.chat_sandbox import (
    REASON,
    RenderLimits,
    TemplateLimitError,
    chat_template_of,
    compile_chat_template,
    render_budget,
    render_chat,
)
from seqpack.prompt_templates import RenderError, _require_target, _text_field

DEFAULT_LIMITS = RenderLimits()

Message = dict[str, Any]
"""``{"role": ..., "content": str}``, plus ``tool_calls`` / ``tool_call_id`` / ``name`` when the record had them."""
Segment = tuple[str, bool]
"""A piece of the rendered conversation and whether it takes loss."""

ROLES = ("system", "user", "assistant", "tool")
STYLES = ("auto", "messages", "sharegpt", "pair")
TRAIN_ON = ("assistant", "last", "all")
DEFAULT_ROLE_MAP: Mapping[str, str] = {role: role for role in ROLES}
SHAREGPT_ROLE_MAP: Mapping[str, str] = {
    **DEFAULT_ROLE_MAP,
    "human": "user",
    "gpt": "assistant",
    "function_call": "assistant",  # LLaMA-Factory's ShareGPT: the assistant's tool call, trained like a reply
    "function": "tool",
    "observation": "tool",
}
_LIST_FIELDS = {"messages": ("messages", "role", "content"), "sharegpt": ("conversations", "from", "value")}
_PASSTHROUGH_TEXT_KEYS = ("tool_call_id", "name")


# --- records → messages -------------------------------------------------------------------------------------


def conversation_from_record(
    record: Mapping[str, Any],
    *,
    style: str = "auto",
    messages_field: str | None = None,
    role_map: Mapping[str, str] | None = None,
    source_field: str = "source",
    target_field: str = "target",
    system: str | None = None,
) -> list[Message]:
    """Read one record as a conversation of ``system``/``user``/``assistant``/``tool`` messages.

    ``style="auto"`` picks ``messages`` (OpenAI), then ``conversations`` (ShareGPT), then the source/target pair,
    by which field is present; with ``messages_field`` set it reads that field and tells OpenAI from ShareGPT
    items by their keys. ``role_map`` is merged over the style's defaults (ShareGPT: human→user, gpt→assistant,
    tool/function/observation→tool). ``system`` is the system prompt of a pair, and of a conversation that has
    no system message of its own. Raises ``RenderError`` with a stable reason for a record that cannot be used.

        >>> conversation_from_record({"conversations": [{"from": "human", "value": "Hi"},
        ...                                             {"from": "gpt", "value": "Hello!"}]})
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    if style not in STYLES:
        raise ValueError(f"unknown conversation style {style!r}: use one of {', '.join(STYLES)}")
    style, field = _resolve_style(record, style, messages_field, source_field, target_field)
    if style == "pair":
        source = _text_field(record, source_field)
        target = _require_target(_text_field(record, target_field), target_field)
        messages: list[Message] = [{"role": "user", "content": source}, {"role": "assistant", "content": target}]
    else:
        items = _list_field(record, field)
        base = SHAREGPT_ROLE_MAP if style == "sharegpt" else DEFAULT_ROLE_MAP
        roles = _merge_role_map(base, role_map)
        _, role_key, content_key = _LIST_FIELDS[style]
        messages = [_message(item, n, role_key, content_key, roles) for n, item in enumerate(items)]
    if system and not any(message["role"] == "system" for message in messages):
        messages.insert(0, {"role": "system", "content": system})
    _check_conversation(messages)
    return messages


def _resolve_style(
    record: Mapping[str, Any], style: str, messages_field: str | None, source_field: str, target_field: str
) -> tuple[str, str]:
    """The concrete style and the field holding the message list (unused for pairs)."""
    if style != "auto":
        return style, messages_field or _LIST_FIELDS.get(style, ("",))[0]
    if messages_field is not None:
        items = record.get(messages_field)
        first = items[0] if isinstance(items, list) and items else None
        return ("sharegpt" if isinstance(first, Mapping) and "from" in first else "messages"), messages_field
    for name, (field, _, _) in _LIST_FIELDS.items():
        if field in record:
            return name, field
    if source_field in record or target_field in record:
        return "pair", ""
    raise RenderError(
        "missing_field",
        f"the record has none of 'messages', 'conversations' or {source_field!r}/{target_field!r} "
        f"(fields present: {sorted(record)[:10]})",
    )


def _list_field(record: Mapping[str, Any], field: str) -> list[Any]:
    if field not in record:
        raise RenderError("missing_field", f"field {field!r} is missing (fields present: {sorted(record)[:10]})")
    items = record[field]
    if not isinstance(items, list):
        raise RenderError("not_a_list", f"field {field!r} is a {type(items).__name__}, not a list of messages")
    if not items:
        raise RenderError("empty_conversation", f"field {field!r} is an empty list")
    return items


def _merge_role_map(base: Mapping[str, str], extra: Mapping[str, str] | None) -> Mapping[str, str]:
    """The user's mapping over the defaults; a target outside the four roles is a usage error, not a record's."""
    if not extra:
        return base
    bad = {name: role for name, role in extra.items() if role not in ROLES}
    if bad:
        raise ValueError(f"role map {bad} maps to unknown roles: map every name to one of {', '.join(ROLES)}")
    return {**base, **extra}


def _message(item: Any, index: int, role_key: str, content_key: str, roles: Mapping[str, str]) -> Message:
    """Validate one message and normalise it to ``{"role", "content"}`` (+ tool fields when present)."""
    if not isinstance(item, Mapping):
        raise RenderError("bad_message", f"message {index} is a {type(item).__name__}, not an object")
    raw_role = item.get(role_key)
    if not isinstance(raw_role, str):
        what = "has no" if raw_role is None else "has a non-string"
        raise RenderError("bad_message", f"message {index} {what} {role_key!r} (keys: {sorted(item)[:10]})")
    role = roles.get(raw_role)
    if role is None:
        raise RenderError(
            "unknown_role", f"message {index} has {role_key} {raw_role!r}; known: {', '.join(sorted(roles))}"
        )
    tool_calls = item.get("tool_calls") if role == "assistant" else None
    content = item.get(content_key)
    if content is None and tool_calls:
        content = ""  # OpenAI writes content: null next to tool_calls
    if not isinstance(content, str):
        what = "has no" if content is None else f"has a {type(content).__name__} as"
        raise RenderError("bad_message", f"message {index} ({raw_role}) {what} {content_key!r}; a string is needed")
    message: Message = {"role": role, "content": content}
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise RenderError("bad_message", f"message {index} has 'tool_calls' that is not a list")
        message["tool_calls"] = tool_calls
    message.update({key: item[key] for key in _PASSTHROUGH_TEXT_KEYS if isinstance(item.get(key), str)})
    return message


def _check_conversation(messages: list[Message]) -> None:
    if not messages:
        raise RenderError("empty_conversation", "the conversation has no messages")
    if not any(message["role"] == "assistant" for message in messages):
        roles = [message["role"] for message in messages]
        raise RenderError("no_assistant_turn", f"nothing to train on: no assistant message among roles {roles}")


# --- messages → (text, trained?) segments -------------------------------------------------------------------


def render_segments(
    tokenizer: Any, messages: list[Message], *, train_on: str = "assistant", limits: RenderLimits = DEFAULT_LIMITS
) -> list[Segment]:
    """Render ``messages`` with the tokenizer's chat template and cut the text into (text, trained?) segments.

    The segments concatenate to ``apply_chat_template(messages, tokenize=False)``. A trained segment is what the
    model produces after the generation prompt: the assistant content and its end-of-turn marker
    (``<|im_end|>``, ``<|eot_id|>``, ``</s>``), plus anything else the template writes there (Mistral's leading
    space, Llama-3's ``trim``). Whitespace after the end-of-turn marker (ChatML's newline) is left untrained: the
    next prompt starts with it, and at inference generation stops at the marker. ``train_on``: ``assistant``
    (every assistant turn), ``last`` (the final one), ``all`` (the whole text).

    Raises ``RenderError`` (``template_not_prefix_stable``, ``chat_template_error``, ``assistant_turn_first``,
    ``no_assistant_turn``) for a record, ``ValueError`` when the tokenizer has no usable chat template. All the
    renderings of one record share the work ``limits`` (``seqpack.chat_sandbox``): a template that loops or grows
    without bound rejects the record (``chat_template_error``) instead of hanging or exhausting the worker.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"unknown train_on {train_on!r}: use one of {', '.join(TRAIN_ON)}")
    template = require_chat_template(tokenizer, try_sample=False)

    def render(prefix: list[Message], add_generation_prompt: bool) -> str:
        return _render(template, tokenizer, prefix, add_generation_prompt=add_generation_prompt)

    with render_budget(messages, limits):
        full = render(messages, False)
        if train_on == "all":
            return [(full, True)] if full else []
        turns = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
        if not turns:
            raise RenderError("no_assistant_turn", "the conversation has no assistant message to train on")
        if train_on == "last":
            turns = turns[-1:]
        spans = _assistant_spans(render, messages, turns, full)
    return _cut(full, spans)


def require_chat_template(tokenizer: Any, *, try_sample: bool = True) -> Any:
    """Fail up front, with the fix, when the tokenizer cannot render conversations; return its compiled template.

    Compiling runs none of the template, so it is safe on a hostile one; ``try_sample`` then renders a two-message
    conversation within the usual limits, so that a template that would go over them on every record (an endless
    loop, a huge string) stops the run before any work instead of rejecting everything.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"tokenizer {name!r} has no chat template: pass a tokenizer that has one (an instruct/chat model's "
            "tokenizer, or set tokenizer.chat_template and save it) to use the chat template"
        )
    template = compile_chat_template(chat_template_of(tokenizer))
    if try_sample:
        _try_sample(template, tokenizer)
    return template


SAMPLE_CONVERSATION: list[Message] = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]


def _try_sample(template: Any, tokenizer: Any) -> None:
    with render_budget(SAMPLE_CONVERSATION, DEFAULT_LIMITS):
        try:
            render_chat(template, tokenizer, SAMPLE_CONVERSATION, add_generation_prompt=False)
        except TemplateLimitError as exc:
            raise ValueError(
                f"the chat template goes over a limit on a two-message conversation ({exc.detail}), so it would "
                "reject every record: fix the template (or pass a tokenizer with another one)"
            ) from exc
        except Exception:  # a template may refuse this sample (roles, a system message): the records decide
            pass


def _render(template: Any, tokenizer: Any, messages: list[Message], *, add_generation_prompt: bool) -> str:
    """One rendering, counted against the record's budget; a template's runtime error is the record's."""
    try:
        return render_chat(template, tokenizer, messages, add_generation_prompt=add_generation_prompt)
    except RenderError:
        raise
    except Exception as exc:  # the template is code: raise_exception(), undefined names, type errors
        raise RenderError(REASON, f"{type(exc).__name__}: {exc}") from exc


def _assistant_spans(
    render: Callable[[list[Message], bool], str], messages: list[Message], turns: list[int], full: str
) -> list[tuple[int, int]]:
    """Character spans of the trained assistant turns in ``full``, from renderings of growing prefixes.

    The renderings before and after each turn, then the full text, must each be a prefix of the next:
    then the text between "before" and "after" is exactly what the template writes for that turn.
    """
    spans = []
    previous, previous_label = "", "the start"
    for turn in turns:
        if turn == 0:
            raise RenderError(
                "assistant_turn_first",
                "message 0 is an assistant turn: there is no prompt to render before it "
                "(add a system or user message first)",
            )
        before = render(messages[:turn], True)
        after = render(messages[: turn + 1], False)
        label = f"assistant turn at message {turn}"
        _require_prefix(previous, before, f"{previous_label} vs messages[:{turn}] + generation prompt ({label})")
        _require_prefix(before, after, f"messages[:{turn}] + generation prompt vs messages[:{turn + 1}] ({label})")
        start = len(before)
        spans.append((start, start + len(after[start:].rstrip())))
        previous, previous_label = after, f"messages[:{turn + 1}]"
    _require_prefix(previous, full, f"{previous_label} vs the whole conversation")
    return spans


def _require_prefix(shorter: str, longer: str, what: str) -> None:
    if longer.startswith(shorter):
        return
    at = len(os.path.commonprefix([shorter, longer]))
    raise RenderError(
        "template_not_prefix_stable",
        f"{what}: the shorter rendering is not a prefix of the longer one (they differ at character {at}: "
        f"{shorter[max(0, at - 20) : at + 20]!r} vs {longer[max(0, at - 20) : at + 20]!r}); the template "
        "changes earlier text as the conversation grows, so the assistant span cannot be located exactly",
    )


def _cut(full: str, spans: list[tuple[int, int]]) -> list[Segment]:
    """Alternate untrained and trained pieces of ``full``; empty pieces are left out."""
    segments: list[Segment] = []
    position = 0
    for start, end in spans:
        segments += [(full[position:start], False), (full[start:end], True)]
        position = end
    segments.append((full[position:], False))
    return [(text, trained) for text, trained in segments if text]


# --- segments → ids and mask --------------------------------------------------------------------------------


def tokenize_segments(
    tokenizer: Any, conversations: Sequence[Sequence[Segment]]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tokenize the segments of many conversations in one tokenizer call; per conversation (ids, trained).

    ``add_special_tokens=False``: chat templates write the BOS text themselves (``{{ bos_token }}``), so letting
    the tokenizer add its own would double it. Special-token text in a segment (``<|im_start|>``) becomes its
    single id because it is an added token of the tokenizer. ``ids`` is int32, ``trained`` bool, same length.
    """
    texts = [text for segments in conversations for text, _ in segments]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    results = []
    position = 0
    for segments in conversations:
        pieces = encoded[position : position + len(segments)]
        position += len(segments)
        ids = np.fromiter((i for piece in pieces for i in piece), dtype=np.int32)
        trained = np.repeat(np.array([t for _, t in segments], dtype=bool), [len(p) for p in pieces])
        results.append((ids, trained))
    return results


def check_segment_roundtrip(tokenizer: Any) -> None:
    """Fail up front when separately tokenized pieces do not concatenate back to the text.

    SentencePiece tokenizers that prepend a "▁" to every text (Llama-2, older Mistral) would put a space at the
    start of every segment; such a tokenizer cannot be used with segment-wise tokenization.
    """
    pieces = ["[user]Hello", " world", "!\n", "ok"]
    ids = [i for piece in tokenizer(pieces, add_special_tokens=False)["input_ids"] for i in piece]
    decoded = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if decoded != "".join(pieces):
        raise ValueError(
            f"tokenizing pieces of a text separately changes the text ({''.join(pieces)!r} comes back as "
            f"{decoded!r}); this tokenizer adds something to every text it encodes (often a SentencePiece prefix "
            "space), so the chat segments would not join up exactly"
        )


# --- special-looking strings --------------------------------------------------------------------------------

SPECIAL_LOOKING = re.compile(r"<\|[^\s|]*\|>|\[/?[A-Z][A-Z0-9_]*\]|</?[A-Za-z_][\w.:-]*>")
"""``<|im_start|>``, ``[SEP]``/``[/INST]``, ``<s>``/``</s>``/``<start_of_turn>``: text that looks like a token."""


def unknown_special_strings(tokenizer: Any, text: str) -> list[tuple[str, list[str]]]:
    """Special-looking strings in ``text`` that are not one token, each with the pieces it will be split into.

    For a warning on a template or a rendered sample: ``[SEP]`` in a prompt is only a separator to the model if
    it is a token of its own (``--add-special-tokens``); otherwise it is five ordinary pieces. Each string is
    reported once, in order of first appearance.

        >>> unknown_special_strings(tok, "Q: {source} [SEP] A:")
        [('[SEP]', ['[', 'SE', 'P', ']'])]
    """
    found: dict[str, list[str]] = {}
    for candidate in dict.fromkeys(match.group() for match in SPECIAL_LOOKING.finditer(text)):
        pieces = list(tokenizer.tokenize(candidate))
        if len(pieces) != 1:
            found[candidate] = pieces
    return list(found.items())
