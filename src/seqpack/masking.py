"""Build one training example from tokenized source and target, apply the overlong policy, make labels.

An example is carried through the pipeline compactly as its token ids plus ``n_masked``, the number of
leading tokens that take no loss; labels are only materialised when a block is written. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

OVERLONG_POLICIES = ("truncate-target", "truncate-left", "split", "drop")
"""How an example longer than ``max_length`` is made to fit (README "Overlong examples" compares them).
``truncate-target`` (the default) keeps the whole prompt and cuts the target's end, with no EOS on a cut target,
and drops an example whose prompt alone does not leave room for one target token (``prompt_too_long``);
``truncate-left`` cuts the prompt from the left, then the target; ``split`` cuts the example into pieces;
``drop`` skips it."""
DEFAULT_OVERLONG = "truncate-target"
OVERLONG_ALIASES = {"truncate": "truncate-left"}
"""Older names still accepted: ``truncate`` was seqpack's default before ``truncate-target``, and datasets built
with it record ``overlong: "truncate"`` in their manifests."""
TRUNCATING = ("truncate-target", "truncate-left")
TRAIN_ON = ("target", "source+target", "all")


@dataclass(frozen=True)
class Piece:
    """A packable unit: a whole example, or one max_length piece of a split one."""

    ids: np.ndarray
    n_masked: int
    """Leading tokens with label -100 (the source, or the part of it that lies in this piece)."""
    trained: np.ndarray | None = None
    """For conversations: which tokens take loss (any pattern); when set, it replaces ``n_masked``."""

    def label_mask(self) -> np.ndarray:
        """True where the token takes loss."""
        if self.trained is not None:
            return self.trained
        mask = np.ones(len(self.ids), dtype=bool)
        mask[: self.n_masked] = False
        return mask

    def mask_payload(self) -> int | bytes:
        """The mask in compact form for the shuffle: the prefix length, or the packed bits of ``trained``."""
        return self.n_masked if self.trained is None else np.packbits(self.trained).tobytes()


@dataclass
class Outcome:
    """What became of one example: its pieces (empty when dropped) and the counts for the statistics."""

    pieces: list[Piece] = field(default_factory=list)
    tokens_in: int = 0
    source_tokens: int = 0
    target_tokens: int = 0
    truncated_tokens: int = 0
    dropped_tokens: int = 0
    truncated: bool = False
    prompt_lost: bool = False
    """Truncation kept none of the prompt (beyond the tokenizer's own prefix, such as BOS)."""
    target_cut: bool = False
    """Truncation cut trained tokens: the answer is incomplete (and a pair's target lost its EOS)."""
    split: bool = False
    dropped_reason: str | None = None

    @property
    def trains(self) -> bool:
        """Whether any token of the pieces takes loss: an example that does not is rejected
        (``no_trained_tokens``), as it would only add padding-like weight to a batch."""
        return any(piece.label_mask().any() for piece in self.pieces)


def _concat(*parts: list[int] | np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int32) for p in parts]) if parts else np.empty(0, np.int32)


def canonical_policy(overlong: str) -> str:
    """The policy an ``--overlong`` name means (``truncate`` is ``truncate-left``); ValueError for an unknown one."""
    policy = OVERLONG_ALIASES.get(overlong, overlong)
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"unknown overlong policy {overlong!r}; use one of {', '.join(OVERLONG_POLICIES)}")
    return policy


def _dropped(outcome: Outcome, reason: str = "overlong") -> Outcome:
    """``--overlong drop`` (or a prompt too long to keep whole): no pieces, every token counted as dropped."""
    outcome.pieces = []
    outcome.dropped_reason = reason
    outcome.dropped_tokens = outcome.tokens_in
    return outcome


def build_example(
    source_ids: list[int] | np.ndarray,
    target_ids: list[int] | np.ndarray,
    *,
    max_length: int,
    overlong: str = DEFAULT_OVERLONG,
    train_on: str = "target",
    keep_prefix: int = 0,
    end_tokens: int = 0,
) -> Outcome:
    """Combine source and target ids (specials already included) into pieces under ``max_length``.

    ``truncate-target`` keeps the whole source (the prompt) and cuts the target's end; the target's last
    ``end_tokens`` (its EOS, the tokenizer's suffix) go with any cut, so that a cut answer never teaches the model
    to stop there. When the source alone leaves no room for a target token, the example is dropped
    (``prompt_too_long``): training on an answer to a question the model cannot see teaches it to make things up.
    ``truncate-left`` keeps the whole target when it fits and cuts the source from the left; when the target alone
    is too long, the source is dropped and the target is cut on the right. ``keep_prefix`` leading source tokens
    (the tokenizer's own prefix, such as BOS) are never cut by it. ``split`` cuts the example into max_length
    pieces, ``drop`` skips it.

        >>> build_example([1, 5, 6], [7, 8, 2], max_length=4, end_tokens=1).pieces[0].ids.tolist()
        [1, 5, 6, 7]
        >>> build_example([1, 5, 6], [7, 2], max_length=4, overlong="truncate-left").pieces[0].ids.tolist()
        [5, 6, 7, 2]
    """
    policy = canonical_policy(overlong)
    source = np.asarray(source_ids, dtype=np.int32)
    target = np.asarray(target_ids, dtype=np.int32)
    total = len(source) + len(target)
    outcome = Outcome(tokens_in=total, source_tokens=len(source), target_tokens=len(target))
    n_masked = masked_prefix(len(source), train_on)
    if total <= max_length:
        outcome.pieces.append(Piece(_concat(source, target), n_masked))
        return outcome
    if policy == "drop":
        return _dropped(outcome)
    if policy == "split":
        ids = _concat(source, target)
        outcome.split = True
        for start in range(0, total, max_length):
            chunk = ids[start : start + max_length]
            outcome.pieces.append(Piece(chunk, int(np.clip(n_masked - start, 0, len(chunk)))))
        return outcome
    if policy == "truncate-target":
        return _truncate_target(outcome, source, target, max_length=max_length, n_masked=n_masked,
                                end_tokens=end_tokens)
    outcome.truncated = True
    outcome.truncated_tokens = total - max_length
    prefix = source[: min(keep_prefix, len(source), max_length)]
    room = max_length - len(prefix)
    rest = source[len(prefix) :]
    if len(target) <= room:
        kept_source = _concat(prefix, rest[len(rest) - (room - len(target)) :])
        outcome.prompt_lost = len(rest) > 0 and len(kept_source) == len(prefix)
        outcome.pieces.append(Piece(_concat(kept_source, target), len(kept_source) if train_on == "target" else 0))
    else:
        outcome.prompt_lost = len(rest) > 0
        outcome.target_cut = True
        outcome.pieces.append(Piece(_concat(prefix, target[:room]), len(prefix) if train_on == "target" else 0))
    return outcome


def _truncate_target(
    outcome: Outcome, source: np.ndarray, target: np.ndarray, *, max_length: int, n_masked: int, end_tokens: int
) -> Outcome:
    """``truncate-target`` for a pair over ``max_length``: the whole source, then as much of the target's text
    (never its ``end_tokens``) as fits."""
    room = max_length - len(source)
    if room <= 0:
        return _dropped(outcome, "prompt_too_long")
    kept = target[: min(room, len(target) - min(end_tokens, len(target)))]
    if not len(kept):
        return _dropped(outcome, "prompt_too_long")
    outcome.truncated = outcome.target_cut = True
    outcome.truncated_tokens = outcome.tokens_in - len(source) - len(kept)
    outcome.pieces.append(Piece(_concat(source, kept), n_masked))
    return outcome


def build_masked_example(
    ids: np.ndarray,
    trained: np.ndarray,
    *,
    max_length: int,
    overlong: str = DEFAULT_OVERLONG,
    keep_prefix: int = 0,
) -> Outcome:
    """Like ``build_example`` for an arbitrary loss mask (conversations: several trained turns).

    ``truncate-target`` keeps the conversation's start (the system prompt and the first turns) and cuts its end,
    and then the untrained tokens after the last trained one kept (a prompt with no answer teaches nothing); when
    not one trained token fits, the example is dropped (``prompt_too_long``). ``truncate-left`` keeps the
    ``keep_prefix`` leading tokens and the *last* tokens, cutting from the left after the prefix; ``split`` and
    ``drop`` work as for pairs.
    """
    policy = canonical_policy(overlong)
    ids = np.asarray(ids, dtype=np.int32)
    trained = np.asarray(trained, dtype=bool)
    total = len(ids)
    n_trained = int(trained.sum())
    outcome = Outcome(tokens_in=total, source_tokens=total - n_trained, target_tokens=n_trained)
    if total <= max_length:
        outcome.pieces.append(Piece(ids, 0, trained))
        return outcome
    if policy == "drop":
        return _dropped(outcome)
    if policy == "split":
        outcome.split = True
        for start in range(0, total, max_length):
            stop = start + max_length
            outcome.pieces.append(Piece(ids[start:stop], 0, trained[start:stop]))
        return outcome
    if policy == "truncate-target":
        head = np.flatnonzero(trained[:max_length])
        if not len(head):
            return _dropped(outcome, "prompt_too_long")
        end = int(head[-1]) + 1
        outcome.truncated = True
        outcome.target_cut = bool(trained[end:].any())
        outcome.truncated_tokens = total - end
        outcome.pieces.append(Piece(ids[:end], 0, trained[:end]))
        return outcome
    outcome.truncated = True
    outcome.truncated_tokens = total - max_length
    prefix = min(keep_prefix, max_length)
    cut_from = total - (max_length - prefix)
    keep = np.r_[0:prefix, cut_from:total]
    outcome.target_cut = bool(trained[prefix:cut_from].any())
    outcome.prompt_lost = bool((~trained[prefix:cut_from]).any()) and bool(trained[cut_from:].all())
    outcome.pieces.append(Piece(ids[keep], 0, trained[keep]))
    return outcome


def masks_example_starts(train_on: str, *, chat: bool) -> bool:
    """Whether each packed example's first token gets label -100, so that no example learns to predict the
    next one: always, except for pairs with ``--train-on all`` (which trains across boundaries on purpose)."""
    return not (train_on == "all" and not chat)


def masked_prefix(source_tokens: Any, train_on: str) -> Any:
    """How many leading tokens of a pair example take no loss: its source with ``--train-on target``, else none.
    Works on one length or an array of them (the tokenize step's array path)."""
    return source_tokens if train_on == "target" else source_tokens * 0


def filtered_reason(
    source_tokens: int, target_tokens: int, *, min_target_tokens: int = 0, max_source_tokens: int | None = None
) -> str | None:
    """Why ``--min-target-tokens`` / ``--max-source-tokens`` drop an example, or None to keep it."""
    if target_tokens < min_target_tokens:
        return "target_too_short"
    if max_source_tokens is not None and source_tokens > max_source_tokens:
        return "source_too_long"
    return None


def filtered_mask(
    source_tokens: np.ndarray, target_tokens: np.ndarray, *, min_target_tokens: int = 0,
    max_source_tokens: int | None = None,
) -> np.ndarray:
    """``filtered_reason(...) is not None`` for many examples at once."""
    dropped = target_tokens < min_target_tokens
    if max_source_tokens is not None:
        dropped |= source_tokens > max_source_tokens
    return dropped
