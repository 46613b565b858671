"""An order-free digest of a set of packed examples: the proof that ``seqpack compact`` kept every example.

A generation's examples are what a trainer sees of them: each example's ``input_ids`` and ``labels`` as they lie
in a block (cut out by ``seq_lens``), and its split. Each example is hashed alone (16-byte BLAKE2b), and the
digest is the number of examples with the sum of their hashes modulo 2**128. Addition does not care about order,
so the digest is the same however the examples are packed, shuffled, spread over shards or over generations, and
two sets agree only if they hold the same examples the same number of times (up to a 2**-128 chance).

The label ``-100`` that packing puts on each example's first token (``masking.masks_example_starts``) is part of
the labels hashed; repacking puts it back on the same token, so it survives compaction, and the digest checks it.
Pure: numpy and pyarrow, no Beam.

    digest = ExamplesDigest()
    digest.add_blocks("train", blocks.input_ids, blocks.labels, blocks.row_offsets, blocks.seq_len_offsets,
                      blocks.seq_lens)
    str(digest)         # 'blake2b128-sum:3:…' (recorded as a generation's examples_digest)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DIGEST_METHOD = "blake2b128-sum"
"""Names the digest in its text form (``METHOD:count:hex``), so another method can never compare equal."""
_MODULUS = 1 << 128
_PERSON = b"seqpack-example"


@dataclass
class ExamplesDigest:
    """How many examples were added, and the sum of their hashes modulo 2**128."""

    count: int = 0
    total: int = 0

    def __str__(self) -> str:
        return f"{DIGEST_METHOD}:{self.count}:{self.total:032x}"

    def merge(self, other: ExamplesDigest) -> ExamplesDigest:
        self.count += other.count
        self.total = (self.total + other.total) % _MODULUS
        return self

    def add_example(self, split: str, input_ids: np.ndarray, labels: np.ndarray) -> None:
        digest = hashlib.blake2b(digest_size=16, person=_PERSON)
        digest.update(split.encode("utf-8") + b"\0")
        digest.update(np.ascontiguousarray(input_ids, dtype="<i4").tobytes())
        digest.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())
        self.count += 1
        self.total = (self.total + int.from_bytes(digest.digest(), "big")) % _MODULUS

    def add_blocks(self, split: str, input_ids: np.ndarray, labels: np.ndarray, row_offsets: np.ndarray,
                   seq_len_offsets: np.ndarray, seq_lens: np.ndarray) -> None:
        """Every example of some blocks, laid out flat as ``packing.PackedBlocks`` holds them."""
        for start, stop in example_bounds(row_offsets, seq_len_offsets, seq_lens):
            self.add_example(split, input_ids[start:stop], labels[start:stop])

    def add_table(self, split: str, table: pa.Table | pa.RecordBatch) -> None:
        """Every example of some rows of a shard (the block schema, ``schemas.columns.BLOCK_SCHEMA``)."""
        self.add_blocks(split, *block_arrays(table))


def combined(parts: Iterable[ExamplesDigest]) -> ExamplesDigest:
    """The digest of the union of the parts' examples."""
    total = ExamplesDigest()
    for part in parts:
        total.merge(part)
    return total


def example_bounds(row_offsets: np.ndarray, seq_len_offsets: np.ndarray, seq_lens: np.ndarray) -> np.ndarray:
    """``[start, stop)`` of every example in the flat token arrays, in block order: a block's examples lie one
    after the other from its first token (padding, if any, follows them)."""
    row_offsets = np.asarray(row_offsets, dtype=np.int64)
    counts = np.diff(np.asarray(seq_len_offsets, dtype=np.int64))
    lengths = np.asarray(seq_lens, dtype=np.int64)
    if not len(lengths):
        return np.empty((0, 2), np.int64)
    row_of = np.repeat(np.arange(len(counts)), counts)
    before = np.cumsum(lengths) - lengths
    first = np.asarray(seq_len_offsets, dtype=np.int64)[:-1][row_of]
    starts = row_offsets[row_of] + before - before[first]
    stops = starts + lengths
    if (stops > row_offsets[1:][row_of]).any():
        raise ValueError("the blocks' seq_lens add up to more tokens than their rows hold")
    return np.stack([starts, stops], axis=1)


def block_arrays(table: pa.Table | pa.RecordBatch) -> tuple[np.ndarray, ...]:
    """A shard's rows as flat arrays: ``input_ids, labels, row_offsets, seq_len_offsets, seq_lens``."""
    if isinstance(table, pa.Table):
        table = table.combine_chunks()
        columns = {name: table.column(name).chunk(0) if table.column(name).num_chunks else None
                   for name in ("input_ids", "labels", "seq_lens")}
        if any(column is None for column in columns.values()):
            return (np.empty(0, np.int32), np.empty(0, np.int32), np.zeros(1, np.int64), np.zeros(1, np.int64),
                    np.empty(0, np.int32))
    else:
        columns = {name: table.column(name) for name in ("input_ids", "labels", "seq_lens")}
    ids, labels, seq_lens = columns["input_ids"], columns["labels"], columns["seq_lens"]
    row_offsets = np.asarray(ids.offsets, dtype=np.int64)
    label_offsets = np.asarray(labels.offsets, dtype=np.int64)
    if not np.array_equal(row_offsets - row_offsets[0], label_offsets - label_offsets[0]):
        raise ValueError("the rows of labels and input_ids differ in length")
    seq_offsets = np.asarray(seq_lens.offsets, dtype=np.int64)
    return (
        np.asarray(ids.values)[row_offsets[0] : row_offsets[-1]],
        np.asarray(labels.values)[label_offsets[0] : label_offsets[-1]],
        row_offsets - row_offsets[0],
        seq_offsets - seq_offsets[0],
        np.asarray(seq_lens.values)[seq_offsets[0] : seq_offsets[-1]],
    )
