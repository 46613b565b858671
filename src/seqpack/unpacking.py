"""Packed blocks cut back into their examples, so that ``seqpack compact`` can pack them again. Pure numpy.

A block written by ``bfd`` or ``none`` packing holds whole examples, one after the other, their lengths in
``seq_lens``. Each example comes back as its ``input_ids`` and the loss mask its labels show (``labels != -100``):

- a pair example's mask is a masked prefix, so it comes back as ``n_masked`` (the leading tokens without loss);
- a conversation's mask can have any pattern, so it comes back as ``trained`` (``with_trained``).

Packing the examples again writes the same labels: the label is the token where the mask says so, and the first
token of each example, which packing masks (``masking.masks_example_starts``), comes back already masked. The key
of each example (the order of the global shuffle) is computed from what comes back, with the dataset's seed, so
compacting the same generations twice gives the same shards. ``wrap`` packing cuts examples across blocks: its
blocks cannot be cut back into whole examples, and ``seqpack compact`` refuses it.

    >>> columns = examples_of_blocks(ids, labels, row_offsets, seq_len_offsets, seq_lens, seed=0, with_trained=False)
"""

from __future__ import annotations

import numpy as np

from seqpack import IGNORE_INDEX
from seqpack.example_columns import ExampleBuffer, ExampleColumns, gather_index
from seqpack.examples_digest import example_bounds
from seqpack.keys import example_key, example_keys


class NotWholeExamples(ValueError):
    """Blocks whose labels are not the examples' tokens under a loss mask: packing them again would change them."""


def examples_of_blocks(
    input_ids: np.ndarray,
    labels: np.ndarray,
    row_offsets: np.ndarray,
    seq_len_offsets: np.ndarray,
    seq_lens: np.ndarray,
    *,
    seed: int,
    with_trained: bool,
) -> ExampleColumns:
    """The examples of some blocks (flat arrays, as ``examples_digest.block_arrays`` gives them), keyed and sorted
    by key, ready to be spilled (``transforms.shuffle.write_spill``)."""
    bounds = example_bounds(row_offsets, seq_len_offsets, seq_lens)
    lengths = (bounds[:, 1] - bounds[:, 0]).astype(np.int64)
    index = gather_index(bounds[:, 0], lengths)
    ids = np.asarray(input_ids, dtype=np.int32)[index]
    example_labels = np.asarray(labels, dtype=np.int32)[index]
    trained = example_labels != IGNORE_INDEX
    if not np.array_equal(example_labels[trained], ids[trained]):
        raise NotWholeExamples("a label is neither -100 nor its token: these are not blocks seqpack packed")
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buffer = ExampleBuffer()
    if with_trained:
        keys = b"".join(
            example_key(ids[lo:hi], np.packbits(trained[lo:hi]).tobytes(), 0, seed)
            for lo, hi in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        )
        buffer.extend(keys, lengths, ids, np.zeros(len(lengths), np.int32), trained)
    else:
        n_masked = masked_prefixes(trained, offsets)
        buffer.extend(example_keys(ids, offsets, n_masked, seed), lengths, ids, n_masked)
    return buffer.build()


def masked_prefixes(trained: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each pair example's masked prefix length; an error if some example's mask is not a prefix."""
    lengths = np.diff(offsets)
    example_of = np.repeat(np.arange(len(lengths)), lengths)
    n_trained = np.bincount(example_of, weights=trained, minlength=len(lengths)).astype(np.int64)
    n_masked = lengths - n_trained
    position = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    if not np.array_equal(position >= np.repeat(n_masked, lengths), trained):
        raise NotWholeExamples(
            "a pair example's loss mask is not a masked prefix: these are not blocks seqpack packed from pairs"
        )
    return n_masked.astype(np.int32)
