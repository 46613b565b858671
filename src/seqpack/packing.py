"""Pack examples into fixed-length blocks without cross-contamination. Pure numpy, no Beam or torch.

Three strategies:

- ``bfd``: best-fit decreasing bin packing; an example is never split across blocks. O(n log max_length).
- ``wrap``: concatenate the examples in order and cut every ``max_length`` tokens (examples may straddle).
- ``none``: one example per row, unpadded.

The result is a set of flat arrays (``PackedBlocks``) ready to become a shard without per-token Python loops.

    >>> blocks = bfd_assign([3, 2, 2], capacity=4)
    >>> blocks
    [[0], [1, 2]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from seqpack import IGNORE_INDEX
from seqpack.example_columns import ExampleColumns, slices_by_copy

PACKING_STRATEGIES = ("bfd", "wrap", "none")


class _CapacityIndex:
    """Open blocks indexed by remaining capacity, answering "smallest capacity >= n" in O(log capacity).

    A segment tree over capacity values 0..capacity whose nodes count the open blocks below them.
    """

    def __init__(self, capacity: int) -> None:
        self.size = 1 << (capacity + 1).bit_length()
        self.tree = [0] * (2 * self.size)
        self.blocks_by_room: list[list[int]] = [[] for _ in range(capacity + 1)]

    def add(self, room: int, block: int) -> None:
        self.blocks_by_room[room].append(block)
        self._update(room, 1)

    def pop(self, room: int) -> int:
        self._update(room, -1)
        return self.blocks_by_room[room].pop()

    def _update(self, room: int, delta: int) -> None:
        node = room + self.size
        tree = self.tree
        while node:
            tree[node] += delta
            node >>= 1

    def smallest_at_least(self, need: int) -> int:
        """The smallest remaining capacity >= ``need`` among open blocks, or -1 if none fits."""
        tree = self.tree
        node = need + self.size
        if node >= 2 * self.size:
            return -1
        if tree[node]:
            return need
        while node > 1:
            if not node & 1 and tree[node + 1]:
                node += 1
                while node < self.size:
                    node = 2 * node if tree[2 * node] else 2 * node + 1
                return node - self.size
            node >>= 1
        return -1


def bfd_assign(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of the items in each block, no block over ``capacity``.

    Items are placed longest first (ties in index order, so the result is deterministic) into the open
    block with the least room that still fits them; a new block is opened when none does.

    Items of equal length are placed together, which gives exactly the item-by-item result: once an item of
    length ``n`` goes into the block with the least room ``r >= n``, that block (now ``r - n``) stays the
    best fit for the next item of that length until less than ``n`` is left, so each block takes
    ``r // n`` items at once. The work is per (length, block touched), not per item.
    """
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    ranked = np.argsort(-sizes, kind="stable")  # longest first, ties in index order
    ranked_sizes = sizes[ranked]
    run_starts = [0, *(np.flatnonzero(np.diff(ranked_sizes)) + 1).tolist()]  # one run per distinct length
    order = ranked.tolist()
    index = _CapacityIndex(capacity)
    blocks: list[list[int]] = []
    for start, end in zip(run_starts, [*run_starts[1:], len(order)], strict=True):
        if start == end:
            continue
        need = int(ranked_sizes[start])
        if need > capacity:
            raise ValueError(
                f"item {order[start]} has {need} tokens, more than the block capacity {capacity}"
            )
        _place_equal_items(order, start, end, need, capacity, index, blocks)
    return blocks


def _place_equal_items(
    order: list[int], start: int, end: int, need: int, capacity: int, index: _CapacityIndex, blocks: list[list[int]]
) -> int:
    """Place ``order[start:end]`` (all of length ``need``) best-fit; return ``end``."""
    while start < end:
        room = index.smallest_at_least(need)
        if room < 0:
            block, room = len(blocks), capacity
            blocks.append([])
        else:
            block = index.pop(room)
        take = min(room // need, end - start) if need > 0 else end - start
        blocks[block].extend(order[start : start + take])
        start += take
        room -= take * need
        if room > 0:
            index.add(room, block)
    return end


@dataclass(frozen=True)
class Segments:
    """Which slice of which piece lies in which block, in block order: the output of a strategy."""

    block: np.ndarray
    item: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    n_blocks: int


def _whole_item_segments(blocks: list[list[int]], lengths: Sequence[int]) -> Segments:
    items = np.fromiter((i for block in blocks for i in block), dtype=np.int64)
    block_ids = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    stops = np.asarray(lengths, dtype=np.int64)[items] if len(items) else np.empty(0, np.int64)
    return Segments(block_ids, items, np.zeros(len(items), np.int64), stops, len(blocks))


def wrap_segments(lengths: Sequence[int], capacity: int) -> Segments:
    """Concatenate the items in order and cut every ``capacity`` tokens."""
    block, item, start, stop = [], [], [], []
    position = 0
    for i, length in enumerate(lengths):
        offset = 0
        while offset < length:
            take = min(length - offset, capacity - position % capacity)
            block.append(position // capacity)
            item.append(i)
            start.append(offset)
            stop.append(offset + take)
            offset += take
            position += take
    n_blocks = -(-position // capacity)
    return Segments(*(np.asarray(a, dtype=np.int64) for a in (block, item, start, stop)), n_blocks)


def reorder_blocks(segments: Segments, row_order: np.ndarray) -> Segments:
    """The same segments with block ``row_order[i]`` renumbered ``i``, still in block order (a block's segments
    keep their order within it)."""
    row_order = np.asarray(row_order, dtype=np.int64)
    if not np.array_equal(np.sort(row_order), np.arange(segments.n_blocks)):
        raise ValueError(f"row_order must be a permutation of the {segments.n_blocks} blocks")
    renumbered = np.empty(segments.n_blocks, np.int64)
    renumbered[row_order] = np.arange(segments.n_blocks)
    block = renumbered[segments.block]
    by_row = np.argsort(block, kind="stable")
    return Segments(block[by_row], segments.item[by_row], segments.start[by_row], segments.stop[by_row],
                    segments.n_blocks)


def assign_segments(strategy: str, lengths: Sequence[int], capacity: int) -> Segments:
    if strategy == "bfd":
        return _whole_item_segments(bfd_assign(lengths, capacity), lengths)
    if strategy == "wrap":
        return wrap_segments(lengths, capacity)
    if strategy == "none":
        return _whole_item_segments([[i] for i in range(len(lengths))], lengths)
    raise ValueError(f"unknown packing strategy {strategy!r}; use one of {PACKING_STRATEGIES}")


@dataclass(frozen=True)
class PackedBlocks:
    """Blocks as flat arrays: rows cut by ``row_offsets``, per-row example lengths cut by ``seq_len_offsets``."""

    row_offsets: np.ndarray
    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    seq_len_offsets: np.ndarray
    seq_lens: np.ndarray
    source_ids: np.ndarray | None = None
    """In a mixture: each example's (segment's) source id, aligned with ``seq_lens``."""

    @property
    def rows(self) -> int:
        return len(self.row_offsets) - 1

    @property
    def real_tokens(self) -> int:
        return int(self.seq_lens.sum())

    @property
    def examples(self) -> int:
        return len(self.seq_lens)


def assemble(
    examples: ExampleColumns,
    segments: Segments,
    *,
    max_length: int,
    pad_id: int,
    pad: bool,
    mask_boundaries: bool = True,
) -> PackedBlocks:
    """Lay the segments out as blocks, build labels and position ids, and pad rows to ``max_length``.

    Labels are -100 on each example's masked tokens and, when ``mask_boundaries``, on the first token of every
    segment: that label would make the last token of the previous example predict the next example. Segments
    must be in block order, as every strategy gives them. Short segments are laid out with whole-array steps,
    long ones slice by slice (``slices_by_copy``): the same arrays, whichever is faster.
    """
    seg_lens = (segments.stop - segments.start).astype(np.int64)
    real_per_block = np.bincount(segments.block, weights=seg_lens, minlength=segments.n_blocks).astype(np.int64)
    row_lengths = np.full(segments.n_blocks, max_length, np.int64) if pad else real_per_block
    row_offsets = np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)
    total = int(row_offsets[-1])

    input_ids = np.full(total, pad_id, np.int32)
    labels = np.full(total, IGNORE_INDEX, np.int32)
    attention_mask = np.zeros(total, np.int8)
    position_ids = np.zeros(total, np.int32)

    # Where each segment starts in the flat output: its block's start + the tokens of earlier segments there.
    before = np.cumsum(seg_lens) - seg_lens
    first_of_block = np.searchsorted(segments.block, segments.block, side="left")
    seg_out = row_offsets[segments.block] + before - before[first_of_block]
    if slices_by_copy(seg_lens):
        _lay_out_by_copy(examples, segments, seg_out, input_ids, labels, attention_mask, position_ids)
    else:
        _lay_out_by_index(examples, segments, before, real_per_block, max_length if pad else None,
                          input_ids, labels, attention_mask, position_ids)
    if mask_boundaries and len(seg_lens):
        labels[seg_out[seg_lens > 0]] = IGNORE_INDEX
    seq_counts = np.bincount(segments.block, minlength=segments.n_blocks)
    return PackedBlocks(
        row_offsets=row_offsets,
        input_ids=input_ids,
        labels=labels,
        attention_mask=attention_mask,
        position_ids=position_ids,
        seq_len_offsets=np.concatenate([[0], np.cumsum(seq_counts)]).astype(np.int64),
        seq_lens=seg_lens.astype(np.int32),
        source_ids=None if examples.source is None else examples.source[segments.item],
    )


def _lay_out_by_index(
    examples: ExampleColumns, segments: Segments, before: np.ndarray, real_per_block: np.ndarray, pad_to: int | None,
    input_ids: np.ndarray, labels: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
) -> None:
    """Fill the token columns with whole-array steps over flat indices: fastest for short segments. The real
    tokens are gathered in block order, then put in place whole: as they are in unpadded rows, through a
    (block, position) mask in rows padded to ``pad_to`` tokens; no output token needs an index of its own."""
    seg_lens = (segments.stop - segments.start).astype(np.int64)
    position = np.arange(int(seg_lens.sum()), dtype=np.int64) - np.repeat(before, seg_lens)  # within its segment
    source = np.repeat(examples.offsets[segments.item] + segments.start, seg_lens) + position
    tokens = examples.ids[source]
    if examples.trained is not None:
        trained = examples.trained[source]
    else:  # pairs: a token takes loss from the example's n_masked-th token on
        trained = position >= np.repeat(examples.n_masked[segments.item] - segments.start, seg_lens)
    del source
    real = None if pad_to is None else (np.arange(pad_to) < real_per_block[:, None]).ravel()
    for out, values in ((input_ids, tokens), (labels, np.where(trained, tokens, IGNORE_INDEX)),
                        (position_ids, position)):
        if real is None:
            out[:] = values
        else:
            out[real] = values
    attention_mask[:] = 1 if real is None else real


def _lay_out_by_copy(
    examples: ExampleColumns, segments: Segments, seg_out: np.ndarray,
    input_ids: np.ndarray, labels: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
) -> None:
    """Fill the token columns one segment at a time, each a few slice copies: fastest for long segments, where
    the flat indices of ``_lay_out_by_index`` would cost an int64 per token and several passes over them."""
    ids, trained = examples.ids, examples.trained
    trained_out = np.zeros(len(input_ids), bool)
    positions = np.arange(int(np.max(segments.stop - segments.start, initial=0)), dtype=np.int32)
    starts = (examples.offsets[segments.item] + segments.start).tolist()
    masked_before = (examples.n_masked[segments.item] - segments.start).tolist()
    for src, out, begin, stop, masked in zip(starts, seg_out.tolist(), segments.start.tolist(),
                                             segments.stop.tolist(), masked_before, strict=True):
        length = stop - begin
        input_ids[out : out + length] = ids[src : src + length]
        attention_mask[out : out + length] = 1
        position_ids[out : out + length] = positions[:length]
        if trained is not None:
            trained_out[out : out + length] = trained[src : src + length]
        else:  # pairs: the example's first n_masked tokens are the prompt
            skip = min(max(masked, 0), length)
            trained_out[out + skip : out + length] = True
    np.copyto(labels, input_ids, where=trained_out)


def pack_columns(
    examples: ExampleColumns,
    *,
    strategy: str,
    max_length: int,
    pad_id: int,
    mask_boundaries: bool = True,
    parts: Sequence[int] | None = None,
    order: np.ndarray | None = None,
    row_order: Callable[[int], np.ndarray] | None = None,
) -> PackedBlocks:
    """Pack examples (in the order given) into blocks with ``strategy``; see the module docstring.

    ``order``: the examples to pack, as indices into ``examples`` in packing order, an example as often as it
    appears (a bucket's key order, a mixture's copies); None: every example, as given. Packing through an order
    gives the blocks of ``examples.take(order)`` while moving each token once, straight into its block.
    ``parts``: offsets ``[0, ..., n]`` cutting the packing order into runs that ``bfd`` packs apart, each into
    blocks of its own (a mixture's rounds of copies: ``weighting.weighted``); the other strategies ignore them.
    ``row_order``: given the number of blocks packed, the order to write them in (row ``i`` is packed block
    ``row_order(n)[i]``; a shard's seeded block shuffle): the blocks are laid out in that order at once, so
    shuffling them costs no second copy of every token."""
    lengths = (examples.lengths if order is None else examples.lengths[order]).tolist()
    if strategy == "bfd" and parts is not None and len(parts) > 2:
        blocks = [[start + item for item in block] for start, stop in zip(parts, parts[1:], strict=False)
                  for block in bfd_assign(lengths[start:stop], max_length)]
        segments = _whole_item_segments(blocks, lengths)
    else:
        segments = assign_segments(strategy, lengths, max_length)
    if order is not None:  # positions in the packing order -> the examples they name
        segments = replace(segments, item=np.asarray(order, dtype=np.int64)[segments.item])
    if row_order is not None:
        segments = reorder_blocks(segments, row_order(segments.n_blocks))
    return assemble(
        examples,
        segments,
        max_length=max_length,
        pad_id=pad_id,
        pad=strategy != "none",
        mask_boundaries=mask_boundaries,
    )
