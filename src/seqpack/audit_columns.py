"""The audit's checks (:mod:`seqpack.audit`) over many packed blocks at once: what ``seqpack run``'s shard writers
call on every bucket they write, so the audit inside every run costs it a few numpy passes per bucket rather
than a Python loop per example.

    flagged = audit_columns(facts, blocks)         # blocks: packing.PackedBlocks (flat arrays cut by offsets)
    flagged[EOS_MISSING]                           # indices, into blocks.seq_lens, of the examples it concerns
    rows, indices = example_rows(blocks)           # which row each example lies in, and where in that row

The findings are exactly ``audit.audit_block``'s, row by row (a test compares them on random blocks). Each check
works on the flat token arrays: prefix sums count trained tokens per example, and the few positions where
something stands out (a BOS, an EOS, a trained label that differs from its id, a position id that does not count
up by one) are located with ``searchsorted``, so the cost is a handful of passes over the tokens, whatever the
number of examples. Pure numpy: no Beam.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqpack import IGNORE_INDEX
from seqpack.audit import (
    ALL_TRAINED,
    BOS_INSIDE,
    DOUBLED_BOS,
    EOS_MISSING,
    EOS_UNTRAINED,
    FINDINGS,
    LABEL_MISMATCH,
    NO_TRAINED,
    POSITIONS,
    PROMPT_LOST,
    TARGET_CUT,
    AuditFacts,
)
from seqpack.masking import TRUNCATING


def example_rows(blocks: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each example of ``blocks`` (a ``PackedBlocks``), its row and its index in that row (0 = first)."""
    per_row = np.diff(np.asarray(blocks.seq_len_offsets, dtype=np.int64))
    rows = np.repeat(np.arange(len(per_row), dtype=np.int64), per_row)
    return rows, np.arange(len(rows), dtype=np.int64) - np.asarray(blocks.seq_len_offsets, dtype=np.int64)[rows]


def _counts_before(flags: np.ndarray) -> np.ndarray:
    """``counts[i]``: how many of ``flags[:i]`` are set, for i in 0..len; in int32 where it fits (a quarter of
    int64's time: this is one of the two passes over every token that cost the most)."""
    counts = np.empty(len(flags) + 1, np.int32 if len(flags) < np.iinfo(np.int32).max else np.int64)
    counts[0] = 0
    np.cumsum(flags, dtype=counts.dtype, out=counts[1:])
    return counts


def _steps(values: np.ndarray) -> np.ndarray:
    """``values[i + 1] - values[i]``, in the values' own type where no difference can overflow it (position ids
    are small; a damaged file's need not be)."""
    small = np.iinfo(np.int32).max // 2
    if values.dtype == np.int32 and len(values) and -small <= values.min() and values.max() <= small:
        return values[1:] - values[:-1]
    return np.diff(values.astype(np.int64))


def _in_range(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """How many of the sorted ``points`` lie in ``[start, end)``, for each pair (0 where ``end <= start``)."""
    return np.maximum(np.searchsorted(points, end) - np.searchsorted(points, start), 0)


def _is_any_of(values: np.ndarray, wanted: frozenset[int]) -> np.ndarray:
    if len(wanted) <= 4:  # the usual one EOS and a few end-of-turn tokens: comparisons beat np.isin's sort
        found = np.zeros(len(values), dtype=bool)
        for token in wanted:
            found |= values == token
        return found
    return np.isin(values, np.fromiter(wanted, dtype=np.int64))


def audit_columns(facts: AuditFacts, blocks: Any) -> dict[str, np.ndarray]:
    """Finding code -> the sorted indices (into ``blocks.seq_lens``) of the examples with that finding; codes
    without any are left out, and codes come in ``FINDINGS`` order."""
    lengths = np.asarray(blocks.seq_lens, dtype=np.int64)
    if not len(lengths):
        return {}
    ids, labels = np.asarray(blocks.input_ids), np.asarray(blocks.labels)
    rows, index = example_rows(blocks)
    start, end = _bounds(blocks, lengths, rows)
    total = len(ids)
    offsets = np.asarray(blocks.seq_len_offsets, dtype=np.int64)
    per_row = np.diff(offsets)
    summed = np.concatenate([[0], np.cumsum(lengths)])
    real = summed[offsets[1:]] - summed[offsets[:-1]]  # a row's real tokens (its padding is not an example's)
    first = index == 0
    edge = first | ((index == per_row[rows] - 1) & (real[rows] >= facts.max_length))
    whole = ~(facts.wrap & edge) if facts.overlong != "split" else np.zeros(len(lengths), dtype=bool)

    trained = labels != IGNORE_INDEX
    counted = _counts_before(trained)
    n_trained = counted[end] - counted[start]
    flags: dict[str, np.ndarray] = {NO_TRAINED: whole & (n_trained == 0)}
    flags.update(_boundary(facts, ids, counted, lengths, start, end, n_trained, whole & (n_trained > 0)))
    # Indices are clamped to the arrays: an example of 0 or 1 tokens at the very end has no second token, and the
    # checks that would read one are masked out for it anyway.
    second = np.minimum(start + 1, total)
    if facts.bos_id is not None:
        bos = np.flatnonzero(ids == facts.bos_id)
        longer = lengths > 1
        doubled = whole & longer & (ids[np.minimum(start, total - 1)] == facts.bos_id) & (
            ids[np.minimum(second, total - 1)] == facts.bos_id)
        flags[DOUBLED_BOS] = doubled
        if not facts.chat:
            flags[BOS_INSIDE] = longer & (_in_range(bos, second, end) > doubled)
    if facts.eos_ids:
        eos = np.flatnonzero(_is_any_of(ids, facts.eos_ids))
        trained_eos = eos[trained[eos]]
        flags[EOS_UNTRAINED] = (n_trained > 0) & (_in_range(eos, start, end) > 0) & (
            _in_range(trained_eos, start, end) == 0)
    mismatched = np.flatnonzero(trained & (labels != ids))
    flags[LABEL_MISMATCH] = _in_range(mismatched, start, end) > 0
    flags[POSITIONS] = _bad_positions(facts, np.asarray(blocks.position_ids), start, end, lengths, first)
    return {code: np.flatnonzero(flags[code]) for code in FINDINGS if code in flags and flags[code].any()}


def _bounds(blocks: Any, lengths: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each example's first token and the token after its last, in the flat token arrays."""
    before = np.cumsum(lengths) - lengths  # tokens of all earlier examples
    row_first = np.concatenate([before, [int(lengths.sum())]])[np.asarray(blocks.seq_len_offsets[:-1])]
    start = np.asarray(blocks.row_offsets[:-1], dtype=np.int64)[rows] + before - row_first[rows]
    return start, start + lengths


def _boundary(facts: AuditFacts, ids: np.ndarray, counted: np.ndarray, lengths: np.ndarray, start: np.ndarray,
              end: np.ndarray, n_trained: np.ndarray, checked: np.ndarray) -> dict[str, np.ndarray]:
    """``audit._boundary_findings`` on every example with some trained token (``checked``)."""
    flags = {}
    full = (lengths >= facts.max_length) & (facts.overlong in TRUNCATING)
    if facts.masks_prompts:
        second = np.minimum(start + 1, len(ids))
        rest_trained = checked & (lengths > 1) & (counted[end] - counted[second] == lengths - 1)
        flags[PROMPT_LOST], flags[ALL_TRAINED] = rest_trained & full, rest_trained & ~full
    if facts.expects_eos:
        # The last trained token of an example is the one just before the first prefix count that reaches the
        # example's total; the one before it (chat), the one before the first that reaches the total less one.
        last = np.maximum(np.searchsorted(counted, counted[end]) - 1, 0)
        ends = _is_any_of(ids[np.minimum(last, len(ids) - 1)], facts.eos_ids)
        if facts.chat:
            before_last = np.maximum(np.searchsorted(counted, counted[end] - 1) - 1, 0)
            ends |= (n_trained >= 2) & _is_any_of(ids[np.minimum(before_last, len(ids) - 1)], facts.eos_ids)
        missing = checked & ~ends
        flags[TARGET_CUT], flags[EOS_MISSING] = missing & full, missing & ~full
    return flags


def _bad_positions(facts: AuditFacts, positions: np.ndarray, start: np.ndarray, end: np.ndarray,
                   lengths: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Position ids that do not start at 0 (or, a row's first piece under ``wrap``, anywhere) and count up by one."""
    steps = np.flatnonzero(_steps(positions) != 1)  # token i, where i + 1 does not follow it
    broken = _in_range(steps, start, end - 1) > 0
    free_start = first if facts.wrap else np.zeros(len(lengths), dtype=bool)
    starts_at = positions[np.minimum(start, max(len(positions) - 1, 0))] if len(positions) else np.zeros(0)
    return broken | ((lengths > 0) & ~free_start & (starts_at != 0))
