"""Mixture weights: every source lands within half an example of its target, whatever the cut of the data."""

from __future__ import annotations

import doctest
import json
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack import mixing
from seqpack.mixing import (
    WEIGHT_BY,
    MixtureError,
    MixturePlan,
    boundary,
    boundary_sample,
    copies,
    histogram,
    merge,
    resolve,
    shares,
)
from seqpack.transforms.shuffle import bucket_of


@dataclass(frozen=True)
class Examples:
    """One split's examples, as a spill file would give them (plus their source)."""

    source_ids: np.ndarray
    key_hi: np.ndarray
    key_lo: np.ndarray
    lengths: np.ndarray

    def rows(self, index: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.source_ids[index], self.key_hi[index], self.key_lo[index], self.lengths[index]

    def amounts(self, weight_by: str) -> np.ndarray:
        return self.lengths if weight_by == "tokens" else np.ones_like(self.lengths)


def make_examples(sizes: list[int], rng: np.random.Generator, *, duplicates: int = 0,
                  max_length: int = 50) -> Examples:
    """``sizes[s]`` random examples of source ``s``; ``duplicates`` of them copied again (same key and length)."""
    ids = np.repeat(np.arange(len(sizes)), sizes)
    hi, lo = (rng.integers(0, 2**64, len(ids), dtype=np.uint64) for _ in range(2))
    lengths = rng.integers(1, max_length + 1, len(ids))
    again = rng.integers(0, len(ids), duplicates if len(ids) else 0)
    return Examples(*(np.concatenate([a, a[again]]) for a in (ids, hi, lo, lengths)))


def plan_of(data: Examples, weights: list[float], *, weight_by: str = "tokens", seed: int = 7,
            bins_log2: int = mixing.BINS_LOG2, parts: int = 1, rng: np.random.Generator | None = None,
            total_tokens: int | None = None, split: str = "train") -> MixturePlan:
    """Both passes over ``data`` cut at random into ``parts`` spill files, merged in a random order."""
    rng = rng or np.random.default_rng(0)
    cut = rng.integers(0, parts, len(data.source_ids))
    pieces = [data.rows(np.flatnonzero(cut == p)) for p in range(parts)]
    hists = [histogram(split, *piece, seed=seed, bins_log2=bins_log2) for piece in pieces]
    order = rng.permutation(parts)
    names = [f"source{s}" for s in range(len(weights))]
    bounds = boundary(merge(hists[i] for i in order), names, weights, weight_by=weight_by,
                      total_tokens=total_tokens)
    samples = [boundary_sample(bounds, split, *piece) for piece in pieces]
    return resolve(bounds, merge(samples[i] for i in rng.permutation(parts)))


mixtures = st.fixed_dictionaries(
    {
        "sizes": st.lists(st.integers(1, 60), min_size=1, max_size=4),
        "weights": st.lists(st.one_of(st.just(0.0), st.floats(0.01, 1.0)), min_size=4, max_size=4).filter(any),
        "weight_by": st.sampled_from(WEIGHT_BY),
        "seed": st.integers(-(2**70), 2**70),
        "duplicates": st.integers(0, 30),
        "rng": st.integers(0, 2**32 - 1),
    }
)


def build(m: dict) -> tuple[Examples, list[float], np.random.Generator]:
    rng = np.random.default_rng(m["rng"])
    weights = m["weights"][: len(m["sizes"])]
    weights = weights if any(weights) else [1.0] + weights[1:]
    return make_examples(m["sizes"], rng, duplicates=m["duplicates"]), weights, rng


@settings(max_examples=120, deadline=None)
@given(mixtures, st.sampled_from([1, 3, 16]))
def test_each_source_lands_within_half_an_example_of_its_target(m: dict, bins_log2: int) -> None:
    data, weights, rng = build(m)
    plan = plan_of(data, weights, weight_by=m["weight_by"], seed=m["seed"], bins_log2=bins_log2, parts=3, rng=rng)
    written = copies(plan, "train", data.source_ids, data.key_hi, data.key_lo)
    amounts = data.amounts(m["weight_by"])
    for source, entry in ((s, plan.sources[("train", s)]) for s in range(len(weights))):
        rows = data.source_ids == source
        assert set(written[rows].tolist()) <= {entry.repeats, entry.repeats + 1}
        achieved = int((written[rows] * amounts[rows]).sum())
        assert achieved == (entry.written_tokens if m["weight_by"] == "tokens" else entry.written_examples)
        assert int(written[rows].sum()) == entry.written_examples
        assert int((written[rows] * data.lengths[rows]).sum()) == entry.written_tokens
        assert (entry.dropped_examples, entry.repeated_examples) == (
            int((written[rows] == 0).sum()), int(np.maximum(written[rows] - 1, 0).sum()))
        assert abs(achieved - entry.target) <= amounts[rows].max() / 2 + 1e-9 * entry.target
    asked = np.array(weights) / sum(weights)
    total = amounts.sum()
    assert [entry.target for entry in plan.sources.values()] == pytest.approx(asked * total)


@settings(max_examples=60, deadline=None)
@given(mixtures, st.integers(2, 6))
def test_plan_and_copies_do_not_depend_on_the_cut_merge_order_bins_or_buckets(m: dict, parts: int) -> None:
    data, weights, rng = build(m)
    args = {"weight_by": m["weight_by"], "seed": m["seed"]}
    one = plan_of(data, weights, **args, parts=1, bins_log2=16)
    other = plan_of(data, weights, **args, parts=parts, bins_log2=2, rng=rng)
    assert one.to_dict() == other.to_dict()
    whole = copies(one, "train", data.source_ids, data.key_hi, data.key_lo)
    buckets = bucket_of(data.key_hi, 5)
    by_bucket = np.zeros_like(whole)
    for bucket in range(5):  # a bucket computes the copies of its own examples only
        rows = np.flatnonzero(buckets == bucket)
        by_bucket[rows] = copies(other, "train", data.source_ids[rows], data.key_hi[rows], data.key_lo[rows])
    assert whole.sum() == by_bucket.sum()
    for source in range(len(weights)):  # identical examples may swap which of them gets the extra copy
        for key in set(zip(data.key_hi.tolist(), data.key_lo.tolist(), strict=True)):
            rows = (data.source_ids == source) & (data.key_hi == key[0]) & (data.key_lo == key[1])
            assert whole[rows].sum() == by_bucket[rows].sum()


def test_a_mixture_both_down_samples_and_repeats() -> None:
    data = make_examples([300, 20], np.random.default_rng(1))
    plan = plan_of(data, [0.5, 0.5], weight_by="examples")
    written = copies(plan, "train", data.source_ids, data.key_hi, data.key_lo)
    big, small = written[data.source_ids == 0], written[data.source_ids == 1]
    assert set(big.tolist()) == {0, 1} and big.sum() == 160
    assert set(small.tolist()) == {8} and small.sum() == 160
    assert [round(share.achieved, 6) for share in shares(plan)] == [0.5, 0.5]


def test_the_sample_spreads_over_the_whole_key_range() -> None:
    """Ranked by the key itself, the sample would be the low buckets; by the selection hash it is everywhere."""
    data = make_examples([4000], np.random.default_rng(2))
    plan = plan_of(data, [1.0], total_tokens=int(data.lengths.sum() * 1.25))
    extra = copies(plan, "train", data.source_ids, data.key_hi, data.key_lo) == 2
    assert 0.15 < extra.mean() < 0.35
    buckets = bucket_of(data.key_hi, 8)
    assert all(0.1 < extra[buckets == b].mean() < 0.4 for b in range(8))


def test_total_tokens_sets_the_size_in_tokens_and_through_mean_lengths_in_examples() -> None:
    data = make_examples([50, 200, 30], np.random.default_rng(3), max_length=40)
    weights = [0.2, 0.3, 0.5]
    by_tokens = plan_of(data, weights, total_tokens=10_000)
    assert sum(entry.written_tokens for entry in by_tokens.sources.values()) == pytest.approx(10_000, abs=60)
    by_examples = plan_of(data, weights, weight_by="examples", total_tokens=10_000)
    mean = [data.lengths[data.source_ids == s].mean() for s in range(3)]
    entries = list(by_examples.sources.values())
    assert sum(e.target * length for e, length in zip(entries, mean, strict=True)) == pytest.approx(10_000)
    assert [e.target for e in entries] == pytest.approx(np.array(weights) * entries[0].target / 0.2)


def test_total_tokens_is_shared_among_splits_as_their_tokens_are() -> None:
    rng = np.random.default_rng(4)
    train, validation = make_examples([80, 40], rng), make_examples([8, 4], rng)
    hist = merge([histogram("train", *train.rows(slice(None)), seed=1),
                  histogram("validation", *validation.rows(slice(None)), seed=1)])
    bounds = boundary(hist, ["a", "b"], [1.0, 1.0], total_tokens=5_000)
    for split, data in (("train", train), ("validation", validation)):
        share = data.lengths.sum() / (train.lengths.sum() + validation.lengths.sum())
        targets = [p.target for (s, _), p in bounds.plans.items() if s == split]
        assert sum(targets) == pytest.approx(5_000 * share)


def test_a_weighted_source_without_examples_is_an_error_naming_it() -> None:
    data = make_examples([10, 10], np.random.default_rng(5))
    hist = histogram("train", *data.rows(slice(None)), seed=0)
    with pytest.raises(MixtureError, match=r"'code' \(weight 0.2\) has no train examples.*weight 0"):
        boundary(hist, ["chat", "math", "code"], [0.4, 0.4, 0.2])
    assert boundary(hist, ["chat", "math", "code"], [0.5, 0.5, 0.0]).plans  # weight 0: nothing asked
    with pytest.raises(MixtureError, match="finite, >= 0"):
        boundary(hist, ["chat", "math"], [0.5, -1.0])
    with pytest.raises(MixtureError, match="one of tokens, examples"):
        boundary(hist, ["chat", "math"], [0.5, 0.5], weight_by="bytes")


def test_a_small_validation_split_may_miss_a_source_and_says_so() -> None:
    data = make_examples([10, 10], np.random.default_rng(6))
    hist = histogram("validation", *data.rows(slice(None)), seed=0)
    bounds = boundary(hist, ["chat", "math", "code"], [0.4, 0.4, 0.2])
    plan = resolve(bounds, boundary_sample(bounds, "validation", *data.rows(slice(None))))
    achieved = {share.name: (share.asked, share.achieved) for share in shares(plan)}
    assert achieved["code"] == (pytest.approx(0.2), 0.0)
    assert achieved["chat"][1] == pytest.approx(0.5, abs=0.1)


def test_identical_examples_at_the_boundary_are_split_and_need_the_whole_bucket() -> None:
    rng = np.random.default_rng(7)
    same = Examples(np.zeros(10, np.int64), np.full(10, 5, np.uint64), np.full(10, 9, np.uint64), np.ones(10, np.int64))
    other = make_examples([0, 10], rng, max_length=1)
    data = Examples(*(np.concatenate(pair) for pair in zip(same.rows(slice(None)), other.rows(slice(None)),
                                                              strict=True)))
    plan = plan_of(data, [0.25, 0.75], weight_by="examples", parts=4, rng=rng)
    written = copies(plan, "train", data.source_ids, data.key_hi, data.key_lo)
    assert written[:10].sum() == 5 and plan.sources[("train", 0)].threshold[3] == 5
    with pytest.raises(ValueError, match="whole bucket"):
        copies(plan, "train", data.source_ids[:3], data.key_hi[:3], data.key_lo[:3])


def test_plan_round_trips_through_json_and_histograms_through_pickle() -> None:
    data = make_examples([40, 7, 25], np.random.default_rng(8), duplicates=5)
    plan = plan_of(data, [0.5, 0.3, 0.2], parts=2)
    again = MixturePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert np.array_equal(copies(again, "train", data.source_ids, data.key_hi, data.key_lo),
                          copies(plan, "train", data.source_ids, data.key_hi, data.key_lo))
    hist = histogram("train", *data.rows(slice(None)), seed=3)
    back = pickle.loads(pickle.dumps(hist))
    for key, counts in hist.counts.items():
        assert np.array_equal(back.counts[key].examples, counts.examples)
        assert np.array_equal(back.counts[key].tokens, counts.tokens)
        assert back.counts[key].max_tokens == counts.max_tokens
    assert len(pickle.dumps(hist)) < 10_000  # sparse: not 3 sources x 2 x 2**16 int64


def test_module_example_runs() -> None:
    assert doctest.testmod(mixing).failed == 0


def test_a_sample_of_the_whole_source_is_counted_as_one_more_repeat() -> None:
    data = make_examples([10, 10], np.random.default_rng(9))
    plan = plan_of(data, [0.98, 0.02], weight_by="examples")  # 19.6 examples: nearest is all 10 twice
    entry = plan.sources[("train", 0)]
    assert (entry.repeats, entry.threshold, entry.selected_examples) == (2, mixing.NOTHING, 0)
    assert copies(plan, "train", data.source_ids, data.key_hi, data.key_lo)[:10].tolist() == [2] * 10
