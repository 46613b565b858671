"""Token lists in one buffer: built from lists, cut, picked and laid out as pairs exactly as the lists would be."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.token_lists import TokenLists, lay_out_pairs

id_lists = st.lists(st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=12), max_size=20)


@given(id_lists)
def test_lists_come_back_as_they_went_in(lists: list[list[int]]) -> None:
    tokens = TokenLists.from_lists(lists)
    assert tokens.ids.dtype == np.int32 and tokens.offsets.dtype == np.int64
    assert len(tokens) == len(lists) and tokens.lengths.tolist() == [len(ids) for ids in lists]
    assert tokens.tolists() == lists and [ids.tolist() for ids in tokens] == lists


@given(id_lists, st.randoms())
def test_take_picks_and_repeats_texts(lists: list[list[int]], random) -> None:
    picked = [random.randrange(len(lists)) for _ in range(random.randint(0, 30))] if lists else []
    taken = TokenLists.from_lists(lists).take(np.array(picked, np.int64))
    assert taken.tolists() == [lists[i] for i in picked]


@given(st.data())
@settings(max_examples=200)
def test_pairs_are_laid_out_as_concatenated_lists(data: st.DataObject) -> None:
    """Prefix, source, target and suffix of each pair, one pair after the other, whatever the lengths (empty
    sides, no prefix or suffix, several ids each); sources may come from a buffer that starts past 0."""
    sources = data.draw(id_lists)
    targets = data.draw(st.lists(st.lists(st.integers(0, 1000), max_size=12), min_size=len(sources),
                                 max_size=len(sources)))
    prefix = data.draw(st.lists(st.integers(0, 1000), max_size=3))
    suffix = data.draw(st.lists(st.integers(0, 1000), max_size=3))
    skip = data.draw(st.integers(0, 3))
    shifted = TokenLists.from_lists([[7] * skip, *sources])  # text 0 is not one of ours: a view past it
    shifted = TokenLists(shifted.ids, shifted.offsets[1:])
    ids, lengths = lay_out_pairs(prefix, shifted, TokenLists.from_lists(targets), suffix)
    expected = [prefix + source + target + suffix for source, target in zip(sources, targets, strict=True)]
    assert ids.dtype == np.int32
    assert ids.tolist() == [i for example in expected for i in example]
    assert lengths.tolist() == [len(example) for example in expected]


def test_a_pair_needs_a_source_and_a_target() -> None:
    with pytest.raises(ValueError, match="2 sources and 1 targets"):
        lay_out_pairs((), TokenLists.from_lists([[1], [2]]), TokenLists.from_lists([[3]]), ())
