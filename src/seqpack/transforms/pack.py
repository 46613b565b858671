"""Best-fit packing of each shuffle bucket into blocks (the shuffle itself: ``transforms.shuffle``).

``ShuffleAndPack`` turns the spill files' descriptions into buckets (key ranges sized by ``--bucket-tokens``),
gathers each bucket in key order, packs it, and shuffles its block order with the seed. The result depends only
on the set of examples, never on how they were spread over workers or files, nor on how buckets are gathered:
``spill`` (each bucket reads its slice of every spill file, ``transforms.shuffle``) and ``runner`` (each spill
file is cut into per-bucket chunks that go through a ``GroupByKey``, ``transforms.shuffle_runner``) write the
same bytes. In a mixture each bucket's examples are weighted once gathered (``weighting.weighted``), so
they travel through either shuffle once, however many copies are written.

Removing the shuffle changes the data: examples would be packed and written in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from seqpack.example_columns import ExampleColumns
from seqpack.faults import lose_one_example
from seqpack.mixing import MixturePlan
from seqpack.packing import PackedBlocks, pack_columns
from seqpack.transforms.shuffle import Bucket, SpillFile, block_order, bucket_count, read_bucket
from seqpack.transforms.shuffle_runner import Chunk, CutSpillDoFn, bucket_markers, decode_chunks
from seqpack.weighting import bucket_sizing_tokens, weighted

SHUFFLES = ("spill", "runner")
"""How buckets are gathered (``--shuffle``, resolved from ``auto`` by ``pipeline.runners.resolve_shuffle``)."""


@dataclass(frozen=True)
class ShardBlocks:
    """Bucket ``index`` of ``count`` of ``split``, packed: written as its own shard, or as a part of one shared
    with the next buckets (``--shard-bytes``, ``transforms.shard_groups``)."""

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


def pack_bucket(bucket: Bucket, examples: ExampleColumns, options: PackOptions,
                plan: MixturePlan | None = None) -> ShardBlocks:
    """A bucket's examples (in any order) packed in key order into its shard's blocks, in the seeded order (both
    shuffles); in a mixture (``plan``) each example as many times as the plan says. The examples are packed
    through their key order, never sorted token by token: each token moves once, into its block."""
    split, index, count = bucket
    order, parts = examples.key_order(), None
    if plan is not None:
        order, parts = weighted(plan, split, examples, block_tokens=options.max_length, order=order)
    if lose_one_example() and len(order):  # a test hook: the accounting must catch this
        order = order[:-1]
    blocks = pack_columns(
        examples,
        strategy=options.packing,
        max_length=options.max_length,
        pad_id=options.pad_id,
        mask_boundaries=options.mask_boundaries,
        parts=parts,
        order=order,
        row_order=block_order(options.seed, split, index),
    )
    return ShardBlocks(split, index, count, blocks, len(order))


class PackBucketDoFn(beam.DoFn):
    """A bucket in (with every spill file as a side input); its packed, block-shuffled ``ShardBlocks`` out."""

    def __init__(self, options: PackOptions) -> None:
        self.options = options

    def process(self, bucket: Bucket, spills: Sequence[SpillFile], plan: MixturePlan | None = None
                ) -> Iterator[ShardBlocks]:
        examples = read_bucket(bucket, spills, with_trained=self.options.with_trained, in_key_order=False)
        yield pack_bucket(bucket, examples, self.options, plan)


class PackGroupedBucketDoFn(beam.DoFn):
    """A bucket with its chunks from the runner's shuffle in; its packed, block-shuffled ``ShardBlocks`` out."""

    def __init__(self, options: PackOptions) -> None:
        self.options = options

    def process(self, grouped: tuple[Bucket, Iterable[bytes]], plan: MixturePlan | None = None
                ) -> Iterator[ShardBlocks]:
        bucket, chunks = grouped
        examples = decode_chunks(chunks, with_trained=self.options.with_trained, in_key_order=False)
        yield pack_bucket(bucket, examples, self.options, plan)


def _buckets(split_count: tuple[str, int]) -> Iterator[Bucket]:
    split, buckets = split_count
    for index in range(buckets):
        yield split, index, buckets


class ShuffleAndPack(beam.PTransform):
    """``SpillFile`` descriptions in, one ``ShardBlocks`` per bucket out.

    The number of buckets of a split follows from its total tokens, so memory per bucket stays bounded by
    ``--bucket-tokens`` whatever the dataset size; every shard named ``part-i-of-n`` exists, even one whose
    key range happens to hold no example. ``shuffle`` (``SHUFFLES``) picks how a bucket gathers its examples;
    the output is the same. ``plan``: a mixture's ``MixturePlan`` (a one-element PCollection, from
    ``transforms.mix.PlanMixture``); the splits' buckets are then sized by the tokens it writes (or reads, if more).
    """

    def __init__(self, options: PackOptions, *, shuffle: str = "spill", plan: beam.PCollection | None = None) -> None:
        super().__init__()
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle must be one of {', '.join(SHUFFLES)}, got {shuffle!r}")
        self.options = options
        self.shuffle = shuffle
        self.plan = plan

    def expand(self, spills: beam.PCollection) -> beam.PCollection:
        bucket_tokens = self.options.bucket_tokens
        if self.plan is None:
            tokens = (
                spills
                | "TokensPerSplit" >> beam.Map(lambda spill: (spill.split, spill.tokens))
                | "SumTokens" >> beam.CombinePerKey(sum)
            )
        else:  # what the mixture writes, repeats included, or what it reads if that is more
            tokens = self.plan | "TokensPerSplit" >> beam.FlatMap(
                lambda plan: sorted(bucket_sizing_tokens(plan).items())
            )
        buckets_per_split = tokens | "BucketsPerSplit" >> beam.MapTuple(
            lambda split, tokens: (split, bucket_count(tokens, bucket_tokens))
        )
        side = {} if self.plan is None else {"plan": beam.pvalue.AsSingleton(self.plan)}
        if self.shuffle == "runner":
            return self._through_the_runner(spills, buckets_per_split, side)
        return (
            buckets_per_split
            | "Buckets" >> beam.FlatMap(_buckets)
            # Buckets are few and small: spread them so that every worker packs some.
            | "SpreadBuckets" >> beam.Reshuffle()
            | "PackBuckets" >> beam.ParDo(PackBucketDoFn(self.options), beam.pvalue.AsList(spills), **side)
        )

    def _through_the_runner(self, spills: beam.PCollection, buckets_per_split: beam.PCollection,
                            side: dict[str, beam.pvalue.AsSingleton]) -> beam.PCollection:
        """Each spill file read once and cut into per-bucket chunks; the runner's shuffle gathers each bucket."""
        chunks = spills | "CutSpills" >> beam.ParDo(
            CutSpillDoFn(with_trained=self.options.with_trained), beam.pvalue.AsDict(buckets_per_split)
        ).with_output_types(Chunk)
        markers = buckets_per_split | "EveryBucket" >> beam.FlatMap(bucket_markers).with_output_types(Chunk)
        return (
            (chunks, markers)
            | "AllChunks" >> beam.Flatten().with_output_types(Chunk)
            # The global shuffle: without it each worker would pack only its own examples, in input order.
            | "GroupBuckets" >> beam.GroupByKey()
            | "PackBuckets" >> beam.ParDo(PackGroupedBucketDoFn(self.options), **side)
        )
