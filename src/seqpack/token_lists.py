"""Many texts' token ids in one flat int32 buffer: what a worker's encoders give the tokenize step. Pure numpy.

A batch of short texts as one Python list (or numpy view) per text costs an object per text at every step after
the encoder: measured on 1.48 M gettext pairs, making the fast encoder's per-text views, counting their lengths
and concatenating them took longer than encoding. As one buffer and its offsets, a batch is counted, picked and
laid out as examples with whole-array steps (``lay_out_pairs``).

    >>> lists = TokenLists.from_lists([[5, 6], [], [7]])
    >>> len(lists), lists.lengths.tolist(), lists[0].tolist()
    (3, [2, 0, 1], [5, 6])
    >>> ids, lengths = lay_out_pairs((1,), lists, TokenLists.from_lists([[8], [9], [10, 11]]), (2,))
    >>> ids.tolist(), lengths.tolist()
    ([1, 5, 6, 8, 2, 1, 9, 2, 1, 7, 10, 11, 2], [5, 3, 5])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from seqpack.example_columns import gather_index, gather_slices, offsets_of

BatchEncode = Callable[[list[str]], "TokenLists"]
"""Texts to their ids, without special tokens, in one buffer: what a worker encodes with."""


@dataclass(frozen=True)
class TokenLists:
    """``n`` texts' ids: text ``i`` is ``ids[offsets[i]:offsets[i+1]]`` (``ids`` int32, ``offsets`` int64)."""

    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> TokenLists:
        """From one sequence of ids per text (the Hugging Face backends' lists), in one pass over the ids."""
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        offsets = offsets_of(lengths)
        ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        """Text ``index``'s ids, a view into the buffer."""
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[index] for index in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def tolists(self) -> list[list[int]]:
        return [ids.tolist() for ids in self]

    def take(self, indices: np.ndarray) -> TokenLists:
        """The texts at ``indices``, in that order (repeats allowed), in a buffer of their own."""
        indices = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[indices]
        lengths = self.offsets[indices + 1] - starts
        return TokenLists(gather_slices(self.ids, starts, lengths), offsets_of(lengths))


def lay_out_pairs(prefix: Sequence[int], sources: TokenLists, targets: TokenLists, suffix: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair as one example, ``prefix + source + target + suffix``, one after the other: (the int32 ids,
    each example's length). Each side's buffer is written into place at once (one flat index per token), the
    prefix and suffix into every example at once."""
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources and {len(targets)} targets: a pair needs one of each")
    head, tail = np.asarray(prefix, dtype=np.int32), np.asarray(suffix, dtype=np.int32)
    source_lengths, target_lengths = sources.lengths, targets.lengths
    lengths = len(head) + source_lengths + target_lengths + len(tail)
    starts = offsets_of(lengths)[:-1]
    ids = np.empty(int(lengths.sum()), np.int32)
    ids[gather_index(starts + len(head), source_lengths)] = sources.ids[sources.offsets[0] : sources.offsets[-1]]
    target_starts = starts + len(head) + source_lengths
    ids[gather_index(target_starts, target_lengths)] = targets.ids[targets.offsets[0] : targets.offsets[-1]]
    if len(head):
        ids[(starts[:, None] + np.arange(len(head))).ravel()] = np.tile(head, len(starts))
    if len(tail):
        ids[((target_starts + target_lengths)[:, None] + np.arange(len(tail))).ravel()] = np.tile(tail, len(starts))
    return ids, lengths
