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


def test_truncate_keeps_target_and_bos_and_cuts_source_from_the_left() -> None:
    outcome = build_example([1, 10, 11, 12, 13], [20, 21, 2], max_length=6, keep_prefix=1)
    (piece,) = outcome.pieces
    assert piece.ids.tolist() == [1, 12, 13, 20, 21, 2]
    assert piece.n_masked == 3
    assert outcome.truncated and outcome.truncated_tokens == 2


def test_truncate_cuts_an_overlong_target_on_the_right() -> None:
    (piece,) = build_example([1, 10], [20, 21, 22, 23, 2], max_length=4, keep_prefix=1).pieces
    assert piece.ids.tolist() == [1, 20, 21, 22]
    assert piece.n_masked == 1


def test_drop_counts_the_tokens() -> None:
    outcome = build_example([1, 10], [20, 21, 2], max_length=4, overlong="drop")
    assert outcome.pieces == [] and outcome.dropped_reason == "overlong" and outcome.dropped_tokens == 5


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="overlong"):
        build_example([1] * 5, [2] * 5, max_length=8, overlong="squeeze")


@settings(max_examples=200, deadline=None)
@given(ids, ids.filter(bool), st.integers(min_value=8, max_value=40), st.sampled_from(["truncate", "split", "drop"]))
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
    if policy == "truncate" and len(source) + len(target) > max_length:
        assert len(joined) == max_length
        if len(target) <= max_length:
            assert joined[-len(target):] == target


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=3, max_value=1000), st.booleans()), min_size=1, max_size=80),
    st.integers(min_value=8, max_value=40),
    st.sampled_from(["truncate", "split", "drop"]),
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
    if policy == "truncate" and len(ids) > max_length:
        (piece,) = outcome.pieces
        keep = min(prefix, max_length)
        tail = max_length - keep
        assert piece.ids.tolist() == ids[:keep].tolist() + ids[len(ids) - tail :].tolist()
        assert piece_labels(piece).tolist() == [
            int(t) if m else IGNORE_INDEX for t, m in zip(piece.ids, piece.label_mask(), strict=True)
        ]
