"""Checks on packed blocks, from the shards alone: does every example take loss where the run meant it to?

``seqpack audit`` (:mod:`seqpack.tools.audit`) reads each block's columns and asks this module what is wrong
with each example in it. Pure numpy, no Beam and no torch, so the same checks can later run inside the
pipeline. Each finding kind has a code and a one-line meaning (``FINDINGS``).

    facts = AuditFacts.of(manifest)
    for finding in audit_block(facts, input_ids=..., labels=..., attention_mask=..., position_ids=...,
                               seq_lens=...):
        print(finding.code, finding.example)

What is expected is not a finding: every packed example's first label is -100 (``masking.masks_example_starts``),
so label checks look only at trained positions and "all trained" ignores the first token; with
``--train-on all`` or ``source+target`` every token is meant to be trained.

Pieces. With ``--packing wrap`` an example may be cut across rows: the first example of a row may be the end of
one, and the last example of a full row the start of one. With ``--overlong split`` an example may be cut into
pieces of at most ``max_length`` tokens, which the shards do not tell apart from whole examples. Checks about an
example's start and end (no trained token, all trained, BOS at the start, EOS at the end, truncation) are only
made on examples that are surely whole: never with ``--overlong split``, and with ``--packing wrap`` not on a
row's edge pieces. Checks within an example (labels equal to ids, position ids that count up, a BOS after the
start, an EOS never trained) are made on every piece; a row's first piece under ``wrap`` may count its positions
from where the example left off. Counts are of examples as the shards cut them (``seq_lens``), pieces included.

Chat datasets (``--template chat``): a turn ends with EOS or one of ``END_OF_TURN_TOKENS`` the tokenizer has (the
last trained token, or the one before it, since templates may train the newline after it); a BOS inside a
conversation is not a finding (some templates write one per turn, as Llama 2's does); a doubled BOS at the start
still is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqpack import IGNORE_INDEX
from seqpack.masking import OVERLONG_ALIASES, TRUNCATING

NO_TRAINED = "no-trained"
ALL_TRAINED = "all-trained"
DOUBLED_BOS = "doubled-bos"
BOS_INSIDE = "bos-inside"
EOS_UNTRAINED = "eos-untrained"
EOS_MISSING = "eos-missing"
LABEL_MISMATCH = "label-mismatch"
POSITIONS = "positions"
PROMPT_LOST = "prompt-lost"
TARGET_CUT = "target-cut"

FINDINGS: dict[str, str] = {
    NO_TRAINED: "no token takes loss: the example teaches nothing",
    ALL_TRAINED: "every token is trained although the prompt should be masked",
    DOUBLED_BOS: "the example starts with BOS twice (the template and the tokenizer both added one)",
    BOS_INSIDE: "a BOS token inside the example, after its start",
    EOS_UNTRAINED: "EOS / end-of-turn tokens are present but none is trained: the model never learns to stop",
    EOS_MISSING: "the trained text does not end with a trained EOS / end-of-turn token",
    LABEL_MISMATCH: "a trained label differs from the input id at its position",
    POSITIONS: "position ids do not restart at 0 and count up by one within the example",
    PROMPT_LOST: "truncated to max_length with none of the prompt left (only the answer is trained, unprompted)",
    TARGET_CUT: "truncated to max_length through the trained text: the answer is cut, its EOS lost",
}
"""Every finding code, in the order they are reported, with what it means."""

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|eot|>")
"""Added tokens that end a chat turn, when the tokenizer has them (chat datasets: besides EOS)."""


@dataclass(frozen=True)
class AuditFacts:
    """What the checks need to know about how the dataset was made (``AuditFacts.of(manifest)``)."""

    max_length: int
    bos_id: int | None = None
    eos_ids: frozenset[int] = frozenset()
    """EOS and, for chat datasets, the end-of-turn tokens."""
    masks_prompts: bool = True
    """``--train-on target``: prompt (or non-assistant) tokens should take no loss."""
    expects_eos: bool = True
    """Trained text should end with a trained EOS / end-of-turn token (pairs: ``--add-eos``; chat: always)."""
    chat: bool = False
    wrap: bool = False
    """``--packing wrap``: examples may straddle rows."""
    overlong: str = "truncate-left"

    @classmethod
    def of(cls, manifest: Any, end_of_turn_ids: Iterable[int] = (), config: Mapping[str, Any] | None = None
           ) -> AuditFacts:
        """From a manifest: its tokenizer's special ids and the run's ``config`` (older or hand-written
        manifests without a setting get ``seqpack run``'s default). For a chat dataset, ``end_of_turn_ids`` are
        the tokenizer's end-of-turn tokens (``end_of_turn_ids_of``): without any, whether a turn ends with its
        token cannot be told, and that check is not made. ``config``: another configuration than the manifest's
        (one source's, ``for_sources``)."""
        config = (manifest.config or {}) if config is None else config
        chat = config.get("template", "plain") == "chat"
        tokenizer = manifest.tokenizer
        eos = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
        turns = set(end_of_turn_ids) | end_of_turn_ids_of(tokenizer.added_tokens or {}) if chat else set()
        train_on = config.get("train_on", "target")
        return cls(
            max_length=manifest.max_length,
            bos_id=tokenizer.bos_id,
            eos_ids=frozenset(eos | turns),
            masks_prompts=train_on == "target",
            expects_eos=bool(turns) if chat else bool(eos) and bool(config.get("add_eos", True)),
            chat=chat,
            wrap=config.get("packing", manifest.packing) == "wrap",
            # A manifest without the setting predates truncate-target: it was built with the left cut.
            overlong=OVERLONG_ALIASES.get(config.get("overlong", "truncate"), config.get("overlong", "truncate")),
        )


def for_sources(manifest: Any, end_of_turn_ids: Iterable[int] = ()) -> list[AuditFacts]:
    """A mixture's facts by source id: each source's options over the run's configuration (empty without
    sources)."""
    turns = list(end_of_turn_ids)
    return [AuditFacts.of(manifest, turns, {**(manifest.config or {}), **source}) for source in manifest.sources]


def end_of_turn_ids_of(vocabulary: Mapping[str, int]) -> set[int]:
    """The ids of the known end-of-turn tokens (``END_OF_TURN_TOKENS``) a vocabulary has."""
    return {vocabulary[name] for name in END_OF_TURN_TOKENS if name in vocabulary}


@dataclass(frozen=True)
class Finding:
    code: str
    example: int
    """Index of the example in its row (0 = first)."""


def example_findings(
    facts: AuditFacts, ids: np.ndarray, labels: np.ndarray, positions: np.ndarray, *, whole: bool, first_in_row: bool
) -> list[str]:
    """The finding codes of one example (or piece, ``whole=False``): see the module docstring for which checks
    are made on pieces."""
    codes: list[str] = []
    trained = labels != IGNORE_INDEX
    if whole:
        codes += _boundary_findings(facts, ids, trained)
    if facts.bos_id is not None and len(ids) > 1:
        inside = np.flatnonzero(ids[1:] == facts.bos_id) + 1
        doubled = whole and ids[0] == facts.bos_id and ids[1] == facts.bos_id
        if doubled:
            codes.append(DOUBLED_BOS)
        if len(inside) > int(doubled) and not facts.chat:
            codes.append(BOS_INSIDE)
    if facts.eos_ids and trained.any():
        is_eos = np.isin(ids, list(facts.eos_ids))
        if is_eos.any() and not (is_eos & trained).any():
            codes.append(EOS_UNTRAINED)
    if np.any(labels[trained] != ids[trained]):
        codes.append(LABEL_MISMATCH)
    start = int(positions[0]) if len(positions) and facts.wrap and first_in_row else 0
    if not np.array_equal(positions, np.arange(start, start + len(positions))):
        codes.append(POSITIONS)
    return [code for code in FINDINGS if code in codes]


def _boundary_findings(facts: AuditFacts, ids: np.ndarray, trained: np.ndarray) -> list[str]:
    """Checks about a whole example's start and end: loss at all, a masked prompt, the final EOS, truncation."""
    if not trained.any():
        return [NO_TRAINED]
    codes = []
    full = len(ids) >= facts.max_length and facts.overlong in TRUNCATING
    if facts.masks_prompts and len(ids) > 1 and trained[1:].all():
        # A BOS first and then only trained text is what truncation leaves when it cuts the whole prompt.
        codes.append(PROMPT_LOST if full else ALL_TRAINED)
    if facts.expects_eos and not _ends_with_trained_eos(facts, ids, trained):
        codes.append(TARGET_CUT if full else EOS_MISSING)
    return codes


def _ends_with_trained_eos(facts: AuditFacts, ids: np.ndarray, trained: np.ndarray) -> bool:
    """Pairs: the last trained token is EOS. Chat: one of the last two is an end-of-turn token (templates often
    write a newline after it, and train it too)."""
    last = np.flatnonzero(trained)[-2 if facts.chat else -1 :]
    return bool(np.isin(ids[last], list(facts.eos_ids)).any())


def audit_block(
    facts: AuditFacts,
    *,
    input_ids: np.ndarray,
    labels: np.ndarray,
    attention_mask: np.ndarray,
    position_ids: np.ndarray,
    seq_lens: np.ndarray,
    source_ids: np.ndarray | None = None,
    by_source: Sequence[AuditFacts] = (),
) -> Iterator[Finding]:
    """The findings of one block row, example by example (cut by ``seq_lens``; what follows is padding, which
    ``attention_mask`` says and which is not checked). In a mixture each example is checked with its source's
    facts (``source_ids``, aligned with ``seq_lens``; ``by_source`` from ``for_sources``)."""
    ids, labs, pos = (np.asarray(a, dtype=np.int64) for a in (input_ids, labels, position_ids))
    lengths = [int(n) for n in np.asarray(seq_lens)]
    real = int(np.asarray(attention_mask).sum())
    start = 0
    for index, length in enumerate(lengths):
        end = start + length
        edge = index == 0 or (index == len(lengths) - 1 and real >= facts.max_length)
        mine = facts if source_ids is None else by_source[int(source_ids[index])]
        whole = mine.overlong != "split" and not (facts.wrap and edge)
        for code in example_findings(mine, ids[start:end], labs[start:end], pos[start:end], whole=whole,
                                     first_in_row=index == 0):
            yield Finding(code, index)
        start = end
