"""build_example: overlong policies and the masked prefix, checked against plain-list reasoning."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack import IGNORE_INDEX
from seqpack.masking import Piece, build_example, build_masked_example

ids = st.lists(st.integers(min_value=3, max_value=1000), min_size=0, max_size=60)


def piece_labels(piece: Piece) -> np.ndarray:
    """Labels of a piece on its own: its ids, with -100 where it takes no loss (the packer's rule, one piece)."""
    return np.where(piece.label_mask(), piece.ids, IGNORE_INDEX).astype(np.int32)


def test_short_example_is_kept_whole_with_source_masked() -> None:
    outcome = build_example([1, 10, 11], [20, 21, 2], max_length=16)
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [1, 10, 11, 20, 21, 2]
    assert piece_labels(piece).tolist() == [IGNORE_INDEX] * 3 + [20, 21, 2]
    assert not outcome.truncated and outcome.tokens_in == 6


def test_train_on_source_and_target_masks_nothing() -> None:
    (piece,) = build_example([1, 10], [20, 2], max_length=16, train_on="source+target").pieces
    assert piece.n_masked == 0


@pytest.mark.parametrize("policy", ["truncate-left", "truncate"])  # "truncate" is truncate-left's old name
def test_truncate_left_keeps_target_and_bos_and_cuts_source_from_the_left(policy: str) -> None:
    outcome = build_example([1, 10, 11, 12, 13], [20, 21, 2], max_length=6, keep_prefix=1, overlong=policy)
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [1, 12, 13, 20, 21, 2]
    assert piece.n_masked == 3
    assert outcome.truncated and outcome.truncated_tokens == 2


def test_truncate_left_cuts_an_overlong_target_on_the_right_and_loses_the_prompt() -> None:
    outcome = build_example([1, 10], [20, 21, 22, 23, 2], max_length=4, keep_prefix=1, overlong="truncate-left")
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [1, 20, 21, 22]
    assert piece.n_masked == 1
    assert outcome.prompt_lost and outcome.target_cut


# The default, truncate-target: the whole prompt always, the target's end cut (with its EOS), or a drop.
def test_default_keeps_a_long_prompt_whole_and_cuts_the_targets_end_without_eos() -> None:
    outcome = build_example([1, 10, 11, 12, 13], [20, 21, 2], max_length=6, keep_prefix=1, end_tokens=1)
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [1, 10, 11, 12, 13, 20] and piece.n_masked == 5
    assert outcome.truncated and outcome.target_cut and not outcome.prompt_lost
    assert outcome.truncated_tokens == 2


def test_default_cuts_a_long_target_after_the_whole_prompt() -> None:
    outcome = build_example([1, 10], [20, 21, 22, 23, 2], max_length=4, keep_prefix=1, end_tokens=1)
    assert outcome.pieces[0].ids.tolist() == [1, 10, 20, 21]
    assert outcome.target_cut and not outcome.prompt_lost and outcome.truncated_tokens == 3


def test_default_drops_the_eos_even_when_only_the_eos_does_not_fit() -> None:
    outcome = build_example([1, 10], [20, 21, 2], max_length=4, end_tokens=1)
    assert outcome.pieces[0].ids.tolist() == [1, 10, 20, 21] and outcome.target_cut
    outcome = build_example([1, 10], [20, 21, 8, 2], max_length=4, end_tokens=2)  # a two-token suffix goes whole
    assert outcome.pieces[0].ids.tolist() == [1, 10, 20, 21] and outcome.truncated_tokens == 2


@pytest.mark.parametrize("source_length", [6, 7])
def test_default_drops_an_example_whose_prompt_alone_fills_max_length(source_length: int) -> None:
    outcome = build_example(list(range(3, 3 + source_length)), [20, 2], max_length=6, end_tokens=1)
    assert outcome.pieces == [] and outcome.dropped_reason == "prompt_too_long"
    assert outcome.dropped_tokens == source_length + 2 and not outcome.truncated


def test_default_keeps_a_conversations_start_and_ends_on_its_last_trained_token() -> None:
    ids = np.arange(10, 22)
    trained = np.array([0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1], bool)  # prompt, answer, prompt, answer, ...
    outcome = build_masked_example(ids, trained, max_length=6)
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [10, 11, 12, 13] and piece.label_mask().tolist() == [False, False, True, True]
    assert outcome.target_cut and not outcome.prompt_lost and outcome.truncated_tokens == 8


def test_default_drops_a_conversation_whose_first_prompt_fills_max_length() -> None:
    trained = np.array([0] * 8 + [1, 1], bool)
    outcome = build_masked_example(np.arange(10), trained, max_length=8)
    assert outcome.dropped_reason == "prompt_too_long" and outcome.dropped_tokens == 10


def test_truncate_left_can_keep_no_trained_token_of_a_conversation() -> None:
    """What the tokenize step then rejects (``no_trained_tokens``) instead of writing."""
    trained = np.array([0, 1, 1] + [0] * 9, bool)  # a long final user turn
    outcome = build_masked_example(np.arange(12), trained, max_length=8, overlong="truncate-left")
    assert outcome.pieces and not outcome.trains


def test_drop_counts_the_tokens() -> None:
    outcome = build_example([1, 10], [20, 21, 2], max_length=4, overlong="drop")
    assert outcome.pieces == [] and outcome.dropped_reason == "overlong" and outcome.dropped_tokens == 5


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="overlong"):
        build_example([1] * 5, [2] * 5, max_length=8, overlong="squeeze")


@settings(max_examples=200, deadline=None)
@given(ids, ids.filter(bool), st.integers(min_value=8, max_value=40),
       st.sampled_from(["truncate-left", "split", "drop"]))
def test_policies_conserve_tokens(source: list[int], target: list[int], max_length: int, policy: str) -> None:
    outcome = build_example(source, target, max_length=max_length, overlong=policy)
    kept = sum(len(p.ids) for p in outcome.pieces)
    assert kept + outcome.truncated_tokens + outcome.dropped_tokens == len(source) + len(target)
    assert all(len(p.ids) <= max_length for p in outcome.pieces)
    joined = np.concatenate([p.ids for p in outcome.pieces]).tolist() if outcome.pieces else []
    if policy == "split":
        assert joined == source + target
        masked = [t for p in outcome.pieces for t in p.ids[: p.n_masked].tolist()]
        assert masked == source, "exactly the source tokens are masked, across pieces"
    if policy == "truncate-left" and len(source) + len(target) > max_length:
        assert len(joined) == max_length
        if len(target) <= max_length:
            assert joined[-len(target):] == target


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=3, max_value=1000), st.booleans()), min_size=1, max_size=80),
    st.integers(min_value=8, max_value=40),
    st.sampled_from(["truncate-left", "truncate-target", "split", "drop"]),
    st.integers(min_value=0, max_value=2),
)
def test_masked_examples_keep_each_tokens_mask(tokens: list, max_length: int, policy: str, prefix: int) -> None:
    ids = np.array([t for t, _ in tokens], np.int32)
    trained = np.array([m for _, m in tokens], bool)
    outcome = build_masked_example(ids, trained, max_length=max_length, overlong=policy, keep_prefix=prefix)
    kept = sum(len(p.ids) for p in outcome.pieces)
    assert kept + outcome.truncated_tokens + outcome.dropped_tokens == len(ids)
    for piece in outcome.pieces:
        assert len(piece.ids) <= max_length
    if policy == "split":
        assert np.concatenate([p.label_mask() for p in outcome.pieces]).tolist() == trained.tolist()
    if policy == "truncate-target" and len(ids) > max_length and outcome.pieces:
        (piece,) = outcome.pieces
        assert piece.ids.tolist() == ids[: len(piece.ids)].tolist(), "the conversation's start is kept"
        assert piece.label_mask()[-1] and piece.label_mask().tolist() == trained[: len(piece.ids)].tolist()
    if policy == "truncate-left" and len(ids) > max_length:
        (piece,) = outcome.pieces
        keep = min(prefix, max_length)
        tail = max_length - keep
        assert piece.ids.tolist() == ids[:keep].tolist() + ids[len(ids) - tail :].tolist()
        assert piece_labels(piece).tolist() == [
            int(t) if m else IGNORE_INDEX for t, m in zip(piece.ids, piece.label_mask(), strict=True)
        ]


EOS = 2


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=3, max_value=1000), min_size=0, max_size=60),
    st.lists(st.integers(min_value=3, max_value=1000), min_size=1, max_size=60),
    st.integers(min_value=8, max_value=40),
    st.booleans(),
    st.sampled_from(["target", "source+target"]),
)
def test_default_never_writes_a_cut_prompt_nor_an_eos_after_a_cut_target(
    source: list[int], text: list[int], max_length: int, bos: bool, train_on: str
) -> None:
    """The default policy's promise: a written example holds its whole prompt; a target is whole (with its
    EOS) or cut (without it); nothing is lost without being counted."""
    source = [1] * bos + source
    target = text + [EOS]
    outcome = build_example(source, target, max_length=max_length, train_on=train_on, keep_prefix=int(bos),
                            end_tokens=1)
    kept = sum(len(p.ids) for p in outcome.pieces)
    assert kept + outcome.truncated_tokens + outcome.dropped_tokens == len(source) + len(target)
    assert not outcome.prompt_lost and not outcome.split
    if outcome.dropped_reason:
        assert outcome.dropped_reason == "prompt_too_long" and len(source) >= max_length
        return
    (piece,) = outcome.pieces
    got = piece.ids.tolist()
    assert len(got) <= max_length and got[: len(source)] == source
    assert piece.n_masked == (len(source) if train_on == "target" else 0)
    written_target = got[len(source) :]
    if outcome.target_cut:
        assert len(source) + len(target) > max_length and EOS not in written_target
        assert written_target and written_target == text[: len(written_target)]
    else:
        assert written_target == target
