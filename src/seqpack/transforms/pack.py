"""The seeded global shuffle into bounded buckets, and best-fit packing of each bucket.

Removing the shuffle changes the data: examples would be packed and written in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from seqpack.faults import lose_one_example
from seqpack.masking import Piece
from seqpack.packing import PackedBlocks, pack
from seqpack.pipeline.config import RunConfig

SPLIT_CODES = {"train": 0, "validation": 1}


def bucket_count(tokens: int, bucket_tokens: int) -> int:
    """How many buckets (and shards) a split of ``tokens`` tokens gets: each holds about ``bucket_tokens``."""
    return max(1, -(-tokens // bucket_tokens))


def bucket_of(key: bytes, buckets: int) -> int:
    return int.from_bytes(key[:8], "big") % buckets


@dataclass(frozen=True)
class ShardBlocks:
    """One bucket's packed blocks, to be written as shard ``index`` of ``count`` of ``split``."""

    split: str
    index: int
    count: int
    blocks: PackedBlocks
    pieces_whole: int
    """Pieces that start in this shard (a piece cut by ``wrap`` counts once)."""


class PackBucketDoFn(beam.DoFn):
    """Sort a bucket by its seeded keys, pack it, and shuffle the block order with the seed."""

    def __init__(self, config: RunConfig, pad_id: int) -> None:
        self.config = config
        self.pad_id = pad_id

    def process(self, element: tuple[tuple[str, int, int], Iterable[Any]]) -> Iterator[ShardBlocks]:
        (split, index, count), parts = element
        examples = sorted((example for part in parts if part for example in part), key=lambda v: v[0])
        if lose_one_example() and examples:  # a test hook: the accounting must catch this
            examples.pop()
        pieces = [Piece.from_payload(ids, mask) for _, ids, mask in examples]
        cfg = self.config
        blocks = pack(
            pieces,
            strategy=cfg.packing,
            max_length=cfg.max_length,
            pad_id=self.pad_id,
            mask_boundaries=not (cfg.train_on == "all" and not cfg.is_chat),
        )
        rng = np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])
        blocks = blocks.take_rows(rng.permutation(blocks.rows))
        yield ShardBlocks(split, index, count, blocks, len(pieces))


def _tokens(batch: tuple[str, list[tuple[bytes, bytes, Any]]]) -> tuple[str, int]:
    split, examples = batch
    return split, sum(len(ids) for _, ids, _ in examples) // 4


def _assign(
    batch: tuple[str, list[tuple[bytes, bytes, Any]]], counts: dict[str, int]
) -> Iterator[tuple[tuple[str, int, int], list]]:
    """Split a batch of examples by bucket: one element per (batch, bucket), not one per example."""
    split, examples = batch
    buckets = counts[split]
    by_bucket: dict[int, list] = {}
    for example in examples:
        by_bucket.setdefault(bucket_of(example[0], buckets), []).append(example)
    for bucket, members in by_bucket.items():
        yield (split, bucket, buckets), members


def _markers(split_count: tuple[str, int]) -> Iterator[tuple[tuple[str, int, int], None]]:
    split, buckets = split_count
    for index in range(buckets):
        yield (split, index, buckets), None


class ShuffleAndPack(beam.PTransform):
    """Examples in, one ``ShardBlocks`` per bucket out.

    The number of buckets of a split follows from its total tokens, so memory per bucket stays bounded by
    ``--bucket-tokens`` whatever the dataset size. A marker per bucket makes sure every shard named
    ``part-i-of-n`` exists even if a bucket happens to receive no example.
    """

    def __init__(self, config: RunConfig, pad_id: int) -> None:
        super().__init__()
        self.config = config
        self.pad_id = pad_id

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        """``examples`` holds ``(split, [(key, ids, mask), ...])`` batches (see ``transforms.tokenize``)."""
        bucket_tokens = self.config.bucket_tokens
        counts = (
            examples
            | "TokensPerSplit" >> beam.Map(_tokens)
            | "SumTokens" >> beam.CombinePerKey(sum)
            | "BucketsPerSplit" >> beam.MapTuple(lambda split, tokens: (split, bucket_count(tokens, bucket_tokens)))
        )
        keyed = examples | "AssignBucket" >> beam.FlatMap(_assign, counts=beam.pvalue.AsDict(counts))
        markers = counts | "BucketMarkers" >> beam.FlatMap(_markers)
        return (
            (keyed, markers)
            | "WithMarkers" >> beam.Flatten()
            # The global shuffle: every example meets the others of its bucket here.
            | "GroupBuckets" >> beam.GroupByKey()
            | "PackBuckets" >> beam.ParDo(PackBucketDoFn(self.config, self.pad_id))
        )
