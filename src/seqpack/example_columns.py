"""Many examples as a few flat arrays: the compact form between tokenization and packing. Pure numpy.

Tokenization appends examples to an ``ExampleBuffer``; the buffer becomes ``ExampleColumns`` (sorted by key)
that are spilled to disk, and packing reads back the key range of its bucket as ``ExampleColumns`` too. No
Python object per example or per token survives past the tokenizer call.

    >>> buffer = ExampleBuffer()
    >>> buffer.add(bytes(16), np.array([5, 6, 7], np.int32), n_masked=1)
    >>> columns = buffer.build()
    >>> len(columns), columns.lengths.tolist(), columns.example_ids(0).tolist()
    (1, [3], [5, 6, 7])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from seqpack.masking import Piece

KEY_BYTES = 16
"""A key is 16 bytes; it sorts as two big-endian unsigned 64-bit numbers (``key_hi``, ``key_lo``)."""


@dataclass(frozen=True)
class ExampleColumns:
    """``n`` examples: example ``i`` is ``ids[offsets[i]:offsets[i+1]]``.

    ``n_masked[i]`` leading tokens of example ``i`` take no loss; for conversations ``trained`` (aligned with
    ``ids``) says which tokens take loss instead, in any pattern. In a mixture ``source[i]`` (int16) is the id of
    example ``i``'s source (``RunConfig.sources``); None outside mixtures.
    """

    key_hi: np.ndarray
    key_lo: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    n_masked: np.ndarray
    trained: np.ndarray | None = None
    source: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.key_hi)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1] - self.offsets[0]) if len(self.offsets) else 0

    def example_ids(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def take(self, order: np.ndarray) -> ExampleColumns:
        """The examples at ``order``, in that order (one gather per column, no per-example loop)."""
        order = np.asarray(order, dtype=np.int64)
        lengths = self.lengths[order]
        offsets = offsets_of(lengths)
        starts = self.offsets[:-1][order]
        return ExampleColumns(
            key_hi=self.key_hi[order],
            key_lo=self.key_lo[order],
            offsets=offsets,
            ids=gather_slices(self.ids, starts, lengths),
            n_masked=self.n_masked[order],
            trained=None if self.trained is None else gather_slices(self.trained, starts, lengths),
            source=None if self.source is None else self.source[order],
        )

    def slice(self, start: int, stop: int) -> ExampleColumns:
        """Examples ``start:stop``, sharing memory with these columns."""
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return ExampleColumns(
            key_hi=self.key_hi[start:stop],
            key_lo=self.key_lo[start:stop],
            offsets=self.offsets[start : stop + 1] - lo,
            ids=self.ids[lo:hi],
            n_masked=self.n_masked[start:stop],
            trained=None if self.trained is None else self.trained[lo:hi],
            source=None if self.source is None else self.source[start:stop],
        )

    def sorted_by_key(self) -> ExampleColumns:
        """Ordered by the 16-byte key (``key_order``)."""
        return self.take(self.key_order())

    def key_order(self) -> np.ndarray:
        """The indices of the examples in key order; equal keys mean equal content, so ties cannot change the
        output. In a mixture two sources may hold the same content: the source id breaks that tie. Packing takes
        this order as it is (``packing.pack_columns``), so a bucket's tokens move once, straight into blocks.

        A bucket is the concatenation of a few key-sorted runs (its slice of each spill file): a stable sort of
        the first 64 bits merges them, about 15x faster than sorting all keys. Where examples tie on those bits
        and on the rest of the key (and source), both orders keep them as they came: the same permutation."""
        order = np.argsort(self.key_hi, kind="stable")
        high = self.key_hi[order]
        tied = np.flatnonzero(high[1:] == high[:-1])
        if len(tied):
            rest = [self.key_lo] if self.source is None else [self.key_lo, self.source]
            if any(np.any(column[order[tied]] != column[order[tied + 1]]) for column in rest):
                return self._full_key_order()
        return order

    def _full_key_order(self) -> np.ndarray:
        if self.source is not None:
            return np.lexsort((self.source, self.key_lo, self.key_hi))
        return np.lexsort((self.key_lo, self.key_hi))

    def with_trained_mask(self) -> ExampleColumns:
        """The same examples with a per-token ``trained`` mask (from ``n_masked`` where they have none): a mixture
        of pairs and conversations packs both kinds together."""
        if self.trained is not None:
            return self
        starts = np.repeat(self.offsets[:-1], self.lengths)
        position = np.arange(self.offsets[0], self.offsets[-1]) - starts
        trained = np.zeros(len(self.ids), bool)
        trained[self.offsets[0] : self.offsets[-1]] = position >= np.repeat(self.n_masked, self.lengths)
        return replace(self, trained=trained)

    def with_source(self, source_id: int) -> ExampleColumns:
        """The same examples, every one tagged as coming from source ``source_id``."""
        return replace(self, source=np.full(len(self), source_id, np.int16))

    def key_range(self, low: int, high: int | None) -> tuple[int, int]:
        """Indices ``start, stop`` of the examples with ``low <= key_hi < high`` (``high=None``: no upper
        bound). The columns must be sorted by key."""
        start = int(np.searchsorted(self.key_hi, np.uint64(low), side="left"))
        stop = len(self) if high is None else int(np.searchsorted(self.key_hi, np.uint64(high), side="left"))
        return start, stop

    @classmethod
    def concat(cls, parts: Sequence[ExampleColumns]) -> ExampleColumns:
        """All examples of ``parts``, in order. Parts must agree on whether they carry ``trained`` and ``source``;
        an empty part agrees with any (a spill file's empty range has no source id to carry)."""
        if not parts:
            return empty_columns()
        parts = [part for part in parts if len(part)] or parts[:1]  # an empty part has no kind to disagree on
        kinds = {part.trained is None for part in parts}
        if len(kinds) > 1:
            raise ValueError("cannot mix examples with and without a per-token loss mask")
        if len({part.source is None for part in parts}) > 1:
            raise ValueError("cannot mix examples with and without a source id")
        return ExampleColumns(
            key_hi=np.concatenate([p.key_hi for p in parts]),
            key_lo=np.concatenate([p.key_lo for p in parts]),
            offsets=offsets_of(np.concatenate([p.lengths for p in parts])),
            ids=np.concatenate([p.ids[p.offsets[0] : p.offsets[-1]] for p in parts]),
            n_masked=np.concatenate([p.n_masked for p in parts]),
            trained=None if parts[0].trained is None else np.concatenate([p.trained for p in parts]),
            source=None if parts[0].source is None else np.concatenate([p.source for p in parts]),
        )


def empty_columns(with_trained: bool = False) -> ExampleColumns:
    return ExampleColumns(
        key_hi=np.empty(0, np.uint64),
        key_lo=np.empty(0, np.uint64),
        offsets=np.zeros(1, np.int64),
        ids=np.empty(0, np.int32),
        n_masked=np.empty(0, np.int32),
        trained=np.empty(0, bool) if with_trained else None,
    )


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """``0, l0, l0+l1, ...``: where each of the examples of ``lengths`` starts in a flat array, and the end."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def gather_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices ``starts[0]..starts[0]+lengths[0]-1, starts[1]..``: many slices gathered at once."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    begins = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - begins, lengths) + np.arange(total, dtype=np.int64)


SLICE_COPY_MIN_LENGTH = 64
"""From this mean slice length on, gathering slices copies each one (a Python step per slice, then memcpy) rather
than building a flat index (an int64 per element, and four passes over it): measured 8x faster for 350-token code
examples, and about even at 34-token ones."""


def slices_by_copy(lengths: np.ndarray) -> bool:
    """Whether slices of these lengths are gathered fastest one copy per slice (``SLICE_COPY_MIN_LENGTH``)."""
    return len(lengths) > 0 and int(np.sum(lengths)) >= SLICE_COPY_MIN_LENGTH * len(lengths)


def gather_slices(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``values[starts[0]:starts[0]+lengths[0]]``, then the next slice, ... as one array: what
    ``values[gather_index(starts, lengths)]`` gives, by whichever way is faster for these lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if not slices_by_copy(lengths):
        return values[gather_index(starts, lengths)]
    begins = np.asarray(starts, dtype=np.int64).tolist()
    return np.concatenate([values[b : b + n] for b, n in zip(begins, lengths.tolist(), strict=True)])


class ExampleBuffer:
    """Collects examples (one at a time or a batch at once) until they are built into ``ExampleColumns``."""

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._lengths: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._masked: list[np.ndarray] = []
        self._trained: list[np.ndarray] = []
        self.examples = 0
        self.tokens = 0

    def add(self, key: bytes, ids: np.ndarray, n_masked: int = 0, trained: np.ndarray | None = None) -> None:
        self.extend(
            key, np.array([len(ids)], np.int64), ids, np.array([n_masked], np.int32),
            None if trained is None else np.asarray(trained, dtype=bool),
        )

    def extend(
        self,
        keys: bytes,
        lengths: np.ndarray,
        ids: np.ndarray,
        n_masked: np.ndarray,
        trained: np.ndarray | None = None,
    ) -> None:
        """Add ``len(lengths)`` examples: their keys concatenated, lengths, flat ids, masked prefixes."""
        if len(keys) != KEY_BYTES * len(lengths):
            raise ValueError(f"expected {len(lengths)} keys of {KEY_BYTES} bytes, got {len(keys)} bytes")
        if (trained is None) != (not self._trained) and self.examples:
            raise ValueError("cannot mix examples with and without a per-token loss mask")
        self._keys.append(keys)
        self._lengths.append(lengths)
        self._ids.append(np.asarray(ids, dtype=np.int32))
        self._masked.append(np.asarray(n_masked, dtype=np.int32))
        if trained is not None:
            self._trained.append(trained)
        self.examples += len(lengths)
        self.tokens += len(ids)

    def build(self, *, sort: bool = True) -> ExampleColumns:
        """The collected examples, sorted by key unless ``sort=False``; the buffer is emptied."""
        if not self.examples:
            columns = empty_columns(with_trained=bool(self._trained))
        else:
            keys = np.frombuffer(b"".join(self._keys), dtype=">u8").reshape(-1, 2)
            columns = ExampleColumns(
                key_hi=keys[:, 0].astype(np.uint64),
                key_lo=keys[:, 1].astype(np.uint64),
                offsets=offsets_of(np.concatenate(self._lengths)),
                ids=np.concatenate(self._ids),
                n_masked=np.concatenate(self._masked),
                trained=np.concatenate(self._trained) if self._trained else None,
            )
            if sort:
                columns = columns.sorted_by_key()
        self.__init__()
        return columns


def columns_of_pieces(pieces: Sequence[Piece], keys: Sequence[bytes] | None = None) -> ExampleColumns:
    """Pieces (e.g. from ``masking.build_example``) as columns in the order given; keys are zero unless given."""
    buffer = ExampleBuffer()
    with_trained = any(piece.trained is not None for piece in pieces)
    for index, piece in enumerate(pieces):
        key = keys[index] if keys is not None else bytes(KEY_BYTES)
        buffer.add(key, piece.ids, piece.n_masked, piece.label_mask() if with_trained else None)
    return buffer.build(sort=False)
