"""Best-fit packing of each shuffle bucket into blocks (the shuffle itself: ``transforms.shuffle``).

``ShuffleAndPack`` turns the spill files' descriptions into buckets (key ranges sized by ``--bucket-tokens``),
reads each bucket in key order, packs it, and shuffles its block order with the seed. The result depends only
on the set of examples, never on how they were spread over workers or files.

Removing the shuffle changes the data: examples would be packed and written in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from seqpack.faults import lose_one_example
from seqpack.packing import PackedBlocks, pack_columns
from seqpack.transforms.shuffle import Bucket, SpillFile, bucket_count, permute_blocks, read_bucket


@dataclass(frozen=True)
class ShardBlocks:
    """One bucket's packed blocks, to be written as shard ``index`` of ``count`` of ``split``."""

    split: str
    index: int
    count: int
    blocks: PackedBlocks
    pieces_whole: int
    """Pieces that start in this shard (a piece cut by ``wrap`` counts once)."""


@dataclass(frozen=True, kw_only=True)
class PackOptions:
    """What packing needs of a run's configuration."""

    max_length: int
    packing: str
    bucket_tokens: int
    seed: int
    pad_id: int
    with_trained: bool
    """Examples carry a per-token loss mask (conversations), not a masked-prefix length."""
    mask_boundaries: bool
    """Label -100 on each example's first token (``masking.masks_example_starts``)."""


class PackBucketDoFn(beam.DoFn):
    """A bucket in (with every spill file as a side input); its packed, block-shuffled ``ShardBlocks`` out."""

    def __init__(self, options: PackOptions) -> None:
        self.options = options

    def process(self, bucket: Bucket, spills: Sequence[SpillFile]) -> Iterator[ShardBlocks]:
        cfg = self.options
        split, index, count = bucket
        examples = read_bucket(bucket, spills, with_trained=cfg.with_trained)
        if lose_one_example() and len(examples):  # a test hook: the accounting must catch this
            examples = examples.slice(0, len(examples) - 1)
        blocks = pack_columns(
            examples,
            strategy=cfg.packing,
            max_length=cfg.max_length,
            pad_id=cfg.pad_id,
            mask_boundaries=cfg.mask_boundaries,
        )
        blocks = permute_blocks(blocks, cfg.seed, split, index)
        yield ShardBlocks(split, index, count, blocks, len(examples))


def _buckets(split_count: tuple[str, int]) -> Iterator[Bucket]:
    split, buckets = split_count
    for index in range(buckets):
        yield split, index, buckets


class ShuffleAndPack(beam.PTransform):
    """``SpillFile`` descriptions in, one ``ShardBlocks`` per bucket out.

    The number of buckets of a split follows from its total tokens, so memory per bucket stays bounded by
    ``--bucket-tokens`` whatever the dataset size; every shard named ``part-i-of-n`` exists, even one whose
    key range happens to hold no example.
    """

    def __init__(self, options: PackOptions) -> None:
        super().__init__()
        self.options = options

    def expand(self, spills: beam.PCollection) -> beam.PCollection:
        bucket_tokens = self.options.bucket_tokens
        return (
            spills
            | "TokensPerSplit" >> beam.Map(lambda spill: (spill.split, spill.tokens))
            | "SumTokens" >> beam.CombinePerKey(sum)
            | "BucketsPerSplit" >> beam.MapTuple(lambda split, tokens: (split, bucket_count(tokens, bucket_tokens)))
            | "Buckets" >> beam.FlatMap(_buckets)
            # Buckets are few and small: spread them so that every worker packs some.
            | "SpreadBuckets" >> beam.Reshuffle()
            | "PackBuckets" >> beam.ParDo(PackBucketDoFn(self.options), beam.pvalue.AsList(spills))
        )
