"""Tokenize a rendering once, whole, and find the tokens of its trained spans by their character offsets.

seqpack's default tokenizes each piece on its own (a conversation's turns, ``--chat-boundary turn``; a pair's
source and target, ``--pair-boundary split``): the first trained token is then what the model produces after the
prompt at inference. ``apply_chat_template(tokenize=True)`` tokenizes the whole text instead, and a token can
merge across the boundary (a newline before content that starts with spaces becomes one ``"\\n "`` token). The
joint mode (``joint``) gives exactly the whole-text ids: the text is encoded once, with the offsets of the
fast tokenizer, and a token is trained when it starts inside a trained span. An example with a span edge that
falls inside a token has no exact mask; it is rejected (``boundary_inside_token``), never guessed at.

    >>> encoder = offsets_encoder(tokenizer)
    >>> ids, trained = joint_segments(encoder, [("<|im_start|>assistant\\n", False), ("Hi<|im_end|>", True)])

Pure (no Beam): the tokenize step (``transforms.joint``) calls it for batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seqpack.prompt_templates import RenderError
from seqpack.tokenizer import PROBE_TEXTS

CHAT_BOUNDARIES = ("turn", "joint")
"""``--chat-boundary``: ``turn`` tokenizes each segment of a conversation on its own (the default), ``joint``
the whole rendering at once."""
PAIR_BOUNDARIES = ("split", "joint")
"""``--pair-boundary``: ``split`` tokenizes source and target separately (the default), ``joint`` as one text."""
REASON = "boundary_inside_token"
"""The reason code of an example whose trained span starts or ends inside a token (``schemas.rejected``)."""

Offsets = Sequence[tuple[int, int]]
Encoded = tuple[list[int], list[tuple[int, int]]]
"""A text's ids and each id's ``(start, end)`` characters in it."""
Encoder = Callable[[list[str]], list[Encoded]]
Segment = tuple[str, bool]

PROBES = (*PROBE_TEXTS, "line\n  indented", "a\n\n  b  ")


class BoundaryError(RenderError):
    """A trained span's edge falls inside a token of the whole text: no exact mask exists for the example."""

    def __init__(self, detail: str) -> None:
        super().__init__(REASON, detail)


def offsets_encoder(tokenizer: Any) -> Encoder:
    """A batch encoder of ids with untrimmed character offsets, giving the ids the tokenizer's own call gives.

    ``tokenizer`` is a ``transformers`` fast tokenizer or a Rust ``tokenizers.Tokenizer``. The encoder is a copy
    of its Rust tokenizer without the post-processor: with ``add_special_tokens=False`` a post-processor changes
    no id, but GPT-2's ``ByteLevel(trim_offsets=True)`` trims spaces off the offsets, and a ``"\\n "`` token
    that crosses a boundary would look as if it ended before it. Raises ``ValueError`` (with the fix) for a slow
    tokenizer, or when the copy's ids differ from the tokenizer's on probe texts.
    """
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"tokenizer {name!r} is not a fast (Rust) tokenizer, so it gives no character offsets: the joint "
            "boundary needs them. Pass a tokenizer with a tokenizer.json, or use --chat-boundary turn / "
            "--pair-boundary split"
        )
    definition = json.loads(backend.to_str())
    definition.update(post_processor=None, truncation=None, padding=None)
    copy = Tokenizer.from_str(json.dumps(definition))

    def encode(texts: list[str]) -> list[Encoded]:
        return [(encoding.ids, encoding.offsets) for encoding in copy.encode_batch(texts, add_special_tokens=False)]

    expected = _reference_ids(tokenizer, list(PROBES))
    actual = [ids for ids, _ in encode(list(PROBES))]
    if actual != expected:
        raise ValueError(
            "this tokenizer's Rust backend gives other ids than the tokenizer itself (it changes text in Python), "
            "so its offsets cannot place the boundary: use --chat-boundary turn / --pair-boundary split"
        )
    return encode


def _reference_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The ids the tokenizer itself gives (``apply_chat_template(tokenize=True)`` calls it this way)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def tokens_before(offsets: Offsets, position: int, text: str, what: str) -> int:
    """How many tokens lie before character ``position``: those that start before it (offsets come in order).
    Raises ``BoundaryError`` when the last of them ends after ``position``: it holds characters of both sides.

        >>> tokens_before([(0, 2), (2, 5)], 2, "ab cd", "the target's start")
        1
    """
    return _before(_starts(offsets), offsets, position, text, what)


def trained_mask(offsets: Offsets, spans: Sequence[tuple[int, int]], text: str) -> np.ndarray:
    """Which tokens take loss: those that start inside a trained span ``[start, end)``. Raises ``BoundaryError``
    when a span's start or end falls inside a token.

        >>> trained_mask([(0, 3), (3, 4), (4, 9)], [(3, 4)], "abc\\nHello").tolist()
        [False, True, False]
    """
    starts = _starts(offsets)
    trained = np.zeros(len(offsets), dtype=bool)
    for number, (start, end) in enumerate(spans, 1):
        first = _before(starts, offsets, start, text, f"the start of trained span {number}")
        stop = _before(starts, offsets, end, text, f"the end of trained span {number}")
        trained[first:stop] = True
    return trained


def _starts(offsets: Offsets) -> np.ndarray:
    return np.fromiter((start for start, _ in offsets), dtype=np.int64, count=len(offsets))


def _before(starts: np.ndarray, offsets: Offsets, position: int, text: str, what: str) -> int:
    count = int(np.searchsorted(starts, position, side="left"))
    if count and offsets[count - 1][1] > position:
        start, end = offsets[count - 1]
        raise BoundaryError(
            f"{what} (character {position}) falls inside the token {text[start:end]!r} (characters {start}-{end}) "
            "of the whole text: no token boundary separates the two sides"
        )
    return count


def spans_of(segments: Sequence[Segment]) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``(text, trained?)`` segments and the character spans of its trained runs.

        >>> spans_of([("Q: ", False), ("A", True), ("!", True), ("\\n", False)])
        ('Q: A!\\n', [(3, 5)])
    """
    spans: list[tuple[int, int]] = []
    position = 0
    for text, trained in segments:
        end = position + len(text)
        if trained and text:
            if spans and spans[-1][1] == position:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((position, end))
        position = end
    return "".join(text for text, _ in segments), spans


def joint_segments(
    encode: Encoder, conversations: Sequence[Sequence[Segment]]
) -> list[tuple[np.ndarray, np.ndarray] | BoundaryError]:
    """Per conversation, its whole rendering's ids (int32) and trained mask, or the ``BoundaryError`` that
    rejects it; one encoder call for the batch (``chat.tokenize_segments``' joint counterpart)."""
    texts, spans = zip(*map(spans_of, conversations), strict=True) if conversations else ((), ())
    results: list[tuple[np.ndarray, np.ndarray] | BoundaryError] = []
    for text, trained_spans, (ids, offsets) in zip(texts, spans, encode(list(texts)), strict=True):
        try:
            trained = trained_mask(offsets, trained_spans, text)
        except BoundaryError as error:
            results.append(error)
            continue
        results.append((np.asarray(ids, dtype=np.int32), trained))
    return results


def joint_pairs(encode: Encoder, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]] | BoundaryError]:
    """Per ``(source, target)``, the ids of ``source + target`` cut at the target's first character into source
    and target ids, or the ``BoundaryError`` when that character is inside a token; one encoder call."""
    results: list[tuple[list[int], list[int]] | BoundaryError] = []
    texts = [source + target for source, target in pairs]
    for (source, _), text, (ids, offsets) in zip(pairs, texts, encode(texts), strict=True):
        try:
            cut = tokens_before(offsets, len(source), text, "the target's start")
        except BoundaryError as error:
            results.append(error)
            continue
        results.append((list(ids[:cut]), list(ids[cut:])))
    return results
