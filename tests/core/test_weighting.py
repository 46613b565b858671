"""A mixture's weighting applied to a bucket: the plan's copies, packed so that no block holds two copies of one
example (when the rounds of copies are large enough), and the statistics that keep every source's identity."""

from __future__ import annotations

import numpy as np
import pytest

from seqpack import mixing
from seqpack.example_columns import ExampleColumns, empty_columns, offsets_of
from seqpack.packing import PackedBlocks, pack_columns
from seqpack.schemas import stats as stats_format
from seqpack.weighting import (
    APART_MIN_BLOCKS,
    MIXTURE_REASON,
    bucket_sizing_tokens,
    mixture_stats,
    share_line,
    weighted,
    written_tokens,
)

NAMES = ["small", "large"]
MAX_LENGTH = 64


def bucket(sizes: list[int], seed: int = 0) -> ExampleColumns:
    """Key-sorted examples of sources 0, 1, ... (``sizes[s]`` each); each example's ids start with its index."""
    rng = np.random.default_rng(seed)
    source = np.repeat(np.arange(len(sizes)), sizes).astype(np.int16)
    lengths = rng.integers(2, 20, len(source))
    offsets = offsets_of(lengths)
    ids = rng.integers(10, 1000, int(offsets[-1])).astype(np.int32)
    ids[offsets[:-1]] = np.arange(len(source))  # a block's examples are told apart by their first id
    columns = ExampleColumns(key_hi=rng.integers(0, 2**64, len(source), dtype=np.uint64),
                             key_lo=rng.integers(0, 2**64, len(source), dtype=np.uint64), offsets=offsets, ids=ids,
                             n_masked=np.ones(len(source), np.int32), source=source)
    return columns.sorted_by_key()


def plan_for(columns: ExampleColumns, weights: list[float]) -> mixing.MixturePlan:
    keys = (columns.source, columns.key_hi, columns.key_lo)
    hist = mixing.histogram("train", *keys, columns.lengths, seed=3)
    bounds = mixing.boundary(hist, NAMES, weights)
    return mixing.resolve(bounds, mixing.boundary_sample(bounds, "train", *keys, columns.lengths))


@pytest.fixture(scope="module")
def columns() -> ExampleColumns:
    return bucket([400, 3000])


@pytest.fixture(scope="module")
def plan(columns: ExampleColumns) -> mixing.MixturePlan:
    return plan_for(columns, [0.7, 0.3])  # "small" up-sampled (several copies), "large" down-sampled


def test_weighted_writes_the_plans_copies(columns: ExampleColumns, plan: mixing.MixturePlan) -> None:
    order, parts = weighted(plan, "train", columns, block_tokens=MAX_LENGTH)
    out = columns.take(order)
    expected = mixing.copies(plan, "train", columns.source, columns.key_hi, columns.key_lo)
    by_index = np.zeros(len(columns), np.int64)
    by_index[columns.ids[columns.offsets[:-1]]] = expected  # an example's first id is its index
    assert np.array_equal(np.bincount(out.ids[out.offsets[:-1]], minlength=len(columns)), by_index)
    assert parts[0] == 0 and parts[-1] == len(out) and parts == sorted(parts)
    assert out.tokens == written_tokens(plan)["train"]
    assert plan.sources[("train", 0)].repeats >= 2 and plan.sources[("train", 1)].repeats == 0


def blocks_with_copies(blocks: PackedBlocks) -> int:
    """How many blocks hold two copies of one example (told apart by their first id)."""
    found = 0
    for row in range(blocks.rows):
        lengths = blocks.seq_lens[blocks.seq_len_offsets[row] : blocks.seq_len_offsets[row + 1]]
        firsts = blocks.input_ids[blocks.row_offsets[row] + np.concatenate([[0], np.cumsum(lengths)[:-1]])]
        found += len(set(firsts.tolist())) != len(firsts)
    return found


def test_no_block_holds_two_copies_of_one_example(columns: ExampleColumns, plan: mixing.MixturePlan) -> None:
    order, parts = weighted(plan, "train", columns, block_tokens=MAX_LENGTH)
    out = columns.take(order)
    assert len(parts) > 2  # the rounds are large enough to be packed apart
    apart = pack_columns(out, strategy="bfd", max_length=MAX_LENGTH, pad_id=0, parts=parts)
    together = pack_columns(out, strategy="bfd", max_length=MAX_LENGTH, pad_id=0)
    assert blocks_with_copies(apart) == 0
    assert blocks_with_copies(together) > 0  # best-fit alone puts some copies side by side
    assert together.rows <= apart.rows <= together.rows + len(parts)  # about a block per part


def test_weighting_through_a_key_order_takes_the_same_copies(columns: ExampleColumns,
                                                             plan: mixing.MixturePlan) -> None:
    """The packing step weights a bucket as read, unsorted, through its key order: the same examples, in the
    same order, as weighting the sorted bucket."""
    shuffled = columns.take(np.random.default_rng(3).permutation(len(columns)))
    order, parts = weighted(plan, "train", shuffled, block_tokens=MAX_LENGTH, order=shuffled.key_order())
    sorted_order, sorted_parts = weighted(plan, "train", columns, block_tokens=MAX_LENGTH)
    assert parts == sorted_parts
    assert np.array_equal(shuffled.take(order).ids, columns.take(sorted_order).ids)
    assert np.array_equal(shuffled.take(order).source, columns.take(sorted_order).source)


def test_small_rounds_join_the_part_before(columns: ExampleColumns) -> None:
    few = bucket([5, 3000], seed=1)  # five examples asked to make 70%: hundreds of tiny rounds
    _, parts = weighted(plan_for(few, [0.7, 0.3]), "train", few, block_tokens=MAX_LENGTH)
    assert len(parts) <= 3
    assert all(b - a for a, b in zip(parts, parts[1:], strict=False))
    assert int(few.lengths[few.source == 0].sum()) < APART_MIN_BLOCKS * MAX_LENGTH


def test_statistics_keep_every_sources_identity(columns: ExampleColumns, plan: mixing.MixturePlan) -> None:
    read = {name: int((columns.source == s).sum()) for s, name in enumerate(NAMES)}
    stats = stats_format.empty_stats()
    for name, count in read.items():  # what the tokenize step counted: every example once
        stats_format.source_stats(stats, name).update(records_read=count, examples_written=count)
    stats["examples_by_split"] = {"train": len(columns)}
    merged = stats_format.merge_stats([stats, mixture_stats(plan)])
    order, _ = weighted(plan, "train", columns, block_tokens=MAX_LENGTH)
    out = columns.take(order)
    assert sum(merged["examples_by_split"].values()) == len(out)
    for s, name in enumerate(NAMES):
        counts = merged["sources"][name]
        assert counts["examples_written"] == int((out.source == s).sum())
        assert counts["examples_written"] - counts["examples_repeated"] + counts["examples_dropped"] == read[name]
    assert merged["dropped_by_reason"][MIXTURE_REASON] == merged["sources"]["large"]["examples_dropped"] > 0
    assert merged["mixture"]["examples_repeated"] == merged["sources"]["small"]["examples_repeated"] > 0


def test_two_generations_shares_add_up(columns: ExampleColumns, plan: mixing.MixturePlan) -> None:
    other = plan_for(bucket([400, 3000], seed=2), [0.7, 0.3])
    first, second = mixture_stats(plan), mixture_stats(other)
    merged = stats_format.merge_stats([first, second])["mixture"]
    for (split, source), mine in plan.sources.items():
        (share,) = [s for s in merged["shares"] if (s["split"], s["name"]) == (split, mine.name)]
        assert share["written"] == mine.written_tokens + other.sources[(split, source)].written_tokens
        assert share["asked"] == pytest.approx(0.7 if source == 0 else 0.3)
    assert sum(s["achieved"] for s in merged["shares"]) == pytest.approx(1.0)
    assert merged["examples_repeated"] == first["mixture"]["examples_repeated"] + second["mixture"][
        "examples_repeated"]
    line = share_line({"mixture": merged}, "out/v000002/mixture.json")
    assert line.startswith("  mixture by tokens: small 70.0% (asked 70.0%), large 30.0% (30.0%) · ")


def test_a_bucket_with_empty_spill_ranges_is_weighted(columns: ExampleColumns, plan: mixing.MixturePlan) -> None:
    """A spill file with nothing in a bucket's key range gives empty columns without source ids: they join the
    others' (or make an empty bucket) instead of failing the run."""
    nothing = empty_columns()
    joined = ExampleColumns.concat([nothing, columns.slice(0, 10), nothing])
    assert len(joined) == 10 and joined.source is not None
    order, parts = weighted(plan, "train", ExampleColumns.concat([nothing, nothing]), block_tokens=MAX_LENGTH)
    assert len(order) == 0 and parts == [0, 0]


def test_buckets_are_sized_by_what_a_split_writes_or_reads_if_more(columns: ExampleColumns,
                                                                  plan: mixing.MixturePlan) -> None:
    read = columns.tokens
    assert bucket_sizing_tokens(plan) == {"train": max(read, written_tokens(plan)["train"])}
    keys = (columns.source, columns.key_hi, columns.key_lo)
    hist = mixing.histogram("train", *keys, columns.lengths, seed=3)
    small = mixing.boundary(hist, NAMES, [0.7, 0.3], total_tokens=read // 10)  # a tenth: most left out
    plan = mixing.resolve(small, mixing.boundary_sample(small, "train", *keys, columns.lengths))
    assert written_tokens(plan)["train"] < read // 5 and bucket_sizing_tokens(plan) == {"train": read}
