"""Exact mixture weights: how many copies of each example a mixture of sources writes. Pure numpy.

A mixture asks for shares (of tokens or of examples) that the sources' measured sizes rarely match: a source above
its share is down-sampled, one below it repeated. Per (split, source), the target amount ``T = w * total`` is
``r = floor(T / A)`` whole repeats of the source's amount ``A`` plus a remainder ``R = T - r * A`` filled by a
seeded sample: each example gets ``r`` or ``r + 1`` copies, and the source lands within half an example of ``T``.

The sample is a prefix of the source's examples ranked by a *selection hash* of their key, mixed so that it is
independent of ``key_hi``: ranking by the key itself would pick only the examples of the low buckets. The prefix
is found without holding a source's examples in one place, in two passes over small additive summaries:

1. ``histogram`` per spill file: examples and tokens per bin of the hash's top bits, per (split, source);
   ``merge`` adds them (any order, any partition). ``boundary`` turns the merged histogram and the weights into
   the repeats and, per source, the one bin where the remainder runs out.
2. ``boundary_sample`` per spill file: the hashes, keys and lengths of the examples in those bins (about
   ``N / 2**16`` each), ``merge``d likewise; ``resolve`` finds the exact threshold: a ``MixturePlan``.

``copies(plan, ...)`` gives an example its number of copies from its own key alone, so a bucket computes it as it
reads its examples, and reruns are byte-identical for any worker count. The plan does not depend on the number of
bins either: the sample is the same global prefix, the bins only say where to look for its end.

    >>> hist = histogram("train", [0, 0, 1], [1, 2, 3], [4, 5, 6], [10, 10, 40], seed=0)
    >>> bounds = boundary(hist, ["chat", "code"], [0.5, 0.5])
    >>> plan = resolve(bounds, boundary_sample(bounds, "train", [0, 0, 1], [1, 2, 3], [4, 5, 6], [10, 10, 40]))
    >>> copies(plan, "train", [0, 0, 1], [1, 2, 3], [4, 5, 6]).tolist()
    [2, 1, 1]
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import reduce
from typing import Any, TypeVar

import numpy as np

from seqpack.errors import RunFailedError

WEIGHT_BY = ("tokens", "examples")
BINS_LOG2 = 16
"""2**16 bins: a boundary bin of a source of 10**9 examples holds about 15,000 of them."""
PLAN_VERSION = 1
_SALT = 0x5345_5150_4D49_5831  # "SEQPMIX1": the selection hash differs from any other use of the key bits
_MASK64 = (1 << 64) - 1

SourceKey = tuple[str, int]
"""(split, source_id); ``source_id`` is the source's index in the job's list of sources."""
Threshold = tuple[int, int, int, int]
"""(hash, key_hi, key_lo, take): an example gets the extra copy when its (hash, key_hi, key_lo) sorts before the
first three, or equals them and is among the first ``take`` such examples. (0, 0, 0, 0) selects nothing."""
NOTHING: Threshold = (0, 0, 0, 0)


class MixtureError(RunFailedError):
    """The mixture cannot be made as asked (a weighted source has no examples, a weight is not a number)."""


def _fmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, a bijection in which every output bit depends on every input bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def selection_hash(key_hi: Any, key_lo: Any, seed: int) -> np.ndarray:
    """The rank of each example in its source's sample (uint64): a seeded mix of its whole key.

    Not ``key_hi``, which decides the bucket (a sample by key would be the low buckets); equal hashes mean equal
    keys (the same content) or a 2**-64 accident; both are ordered by the key, then by occurrence."""
    wide = seed % (1 << 128)  # a seed is 16 bytes, as in seqpack.keys
    folded = (wide & _MASK64) ^ (wide >> 64) ^ _SALT
    base = _fmix(np.array([folded], dtype=np.uint64))[0]
    hi = np.asarray(key_hi, dtype=np.uint64).reshape(-1)
    lo = np.asarray(key_lo, dtype=np.uint64).reshape(-1)
    return _fmix(_fmix(hi ^ base) ^ lo)


def _columns(source_ids: Any, key_hi: Any, key_lo: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(source_ids, dtype=np.int64).reshape(-1)
    return ids, np.asarray(key_hi, dtype=np.uint64).reshape(-1), np.asarray(key_lo, dtype=np.uint64).reshape(-1)


def _bins(hashes: np.ndarray, bins_log2: int) -> np.ndarray:
    return (hashes >> np.uint64(64 - bins_log2)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class BinCounts:
    """One (split, source): its examples and tokens per selection-hash bin (int64), and its longest example."""

    examples: np.ndarray
    tokens: np.ndarray
    max_tokens: int

    def __add__(self, other: BinCounts) -> BinCounts:
        return BinCounts(self.examples + other.examples, self.tokens + other.tokens,
                         max(self.max_tokens, other.max_tokens))

    def __getstate__(self) -> tuple:
        """Pickled sparse: a spill file's histogram has far fewer examples than bins, and Beam ships it."""
        filled = np.flatnonzero(self.examples)
        return len(self.examples), filled, self.examples[filled], self.tokens[filled], self.max_tokens

    def __setstate__(self, state: tuple) -> None:
        size, filled, examples, tokens, max_tokens = state
        dense = np.zeros((2, size), np.int64)
        dense[:, filled] = examples, tokens
        for name, value in (("examples", dense[0]), ("tokens", dense[1]), ("max_tokens", max_tokens)):
            object.__setattr__(self, name, value)


@dataclass(frozen=True, eq=False)
class Histogram:
    """Pass 1's summary: ``BinCounts`` per (split, source); additive (``merge``), so it is built per spill file."""

    seed: int
    bins_log2: int
    counts: Mapping[SourceKey, BinCounts]

    def __add__(self, other: Histogram) -> Histogram:
        _same_run(self, other)
        counts = dict(self.counts)
        for key, part in other.counts.items():
            counts[key] = counts[key] + part if key in counts else part
        return Histogram(self.seed, self.bins_log2, dict(sorted(counts.items())))


def _same_run(a: Histogram | BoundarySample, b: Histogram | BoundarySample) -> None:
    if (a.seed, a.bins_log2) != (b.seed, b.bins_log2):
        raise ValueError(f"cannot merge summaries of seed/bins {a.seed}/{a.bins_log2} and {b.seed}/{b.bins_log2}")


def histogram(split: str, source_ids: Any, key_hi: Any, key_lo: Any, lengths: Any, *, seed: int,
              bins_log2: int = BINS_LOG2) -> Histogram:
    """Pass 1 over some examples of ``split`` (a spill file): their examples and tokens per bin and source."""
    if not 1 <= bins_log2 <= 32:
        raise ValueError(f"bins_log2 must be in 1..32, not {bins_log2}")
    ids, hi, lo = _columns(source_ids, key_hi, key_lo)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    bins = _bins(selection_hash(hi, lo, seed), bins_log2)
    size, counts = 1 << bins_log2, {}
    for source in np.unique(ids).tolist():
        rows = ids == source
        # bincount's float weights are exact below 2**53 tokens per call
        tokens = np.bincount(bins[rows], weights=lengths[rows], minlength=size).astype(np.int64)
        counts[(split, source)] = BinCounts(np.bincount(bins[rows], minlength=size).astype(np.int64), tokens,
                                            int(lengths[rows].max()))
    return Histogram(seed, bins_log2, counts)


Summary = TypeVar("Summary", "Histogram", "BoundarySample")


def merge(parts: Iterable[Summary]) -> Summary:
    """Add up histograms, or boundary samples, of disjoint parts of the data: the result does not depend on how
    the data was cut or the order of the parts (a Beam ``CombineFn`` can call this)."""
    return reduce(lambda a, b: a + b, parts)


@dataclass(frozen=True)
class SourcePlan:
    """What one (split, source) writes: each example ``repeats`` times, those below ``threshold`` once more.

    ``asked`` is the normalised weight, ``target`` the amount (tokens or examples) it asks for here; ``examples``,
    ``tokens`` and ``max_tokens`` are measured after filtering; ``selected_*`` are the examples given the extra copy.
    """

    source: int
    name: str
    asked: float
    target: float
    examples: int
    tokens: int
    max_tokens: int
    repeats: int
    threshold: Threshold = NOTHING
    selected_examples: int = 0
    selected_tokens: int = 0

    @property
    def written_examples(self) -> int:
        return self.repeats * self.examples + self.selected_examples

    @property
    def written_tokens(self) -> int:
        return self.repeats * self.tokens + self.selected_tokens

    @property
    def dropped_examples(self) -> int:
        """Examples written 0 times (down-sampling); ``written = examples - dropped + repeated``."""
        return self.examples - self.selected_examples if self.repeats == 0 else 0

    @property
    def repeated_examples(self) -> int:
        """Copies beyond an example's first (up-sampling)."""
        return self.written_examples - self.examples + self.dropped_examples


@dataclass(frozen=True)
class Boundaries:
    """Pass 1's result: the repeats of every (split, source), and for each with a remainder the bin it ends in,
    the amount still needed inside that bin and the bin's amount (to check pass 2 saw all of it)."""

    seed: int
    bins_log2: int
    weight_by: str
    plans: Mapping[SourceKey, SourcePlan]
    ends: Mapping[SourceKey, tuple[int, Fraction, int]]


def normalised_weights(names: Sequence[str], weights: Sequence[float]) -> list[Fraction]:
    """The weights as exact fractions summing to 1 (a float is a binary fraction: no rounding is added).

    Callable early (when the job file is read) to refuse bad weights before any work."""
    if len(names) != len(weights) or len(set(names)) != len(names) or not names:
        raise MixtureError(f"a mixture needs one weight per source and distinct names; got {list(names)} and "
                           f"{list(weights)}")
    bad = [f"{n}={w}" for n, w in zip(names, weights, strict=True) if not math.isfinite(w) or w < 0]
    if bad or not any(weights):
        raise MixtureError(f"mixture weights must be finite, >= 0 and not all 0; got {', '.join(bad) or weights}")
    exact = [Fraction(w) for w in weights]
    return [w / sum(exact) for w in exact]


def boundary(hist: Histogram, names: Sequence[str], weights: Sequence[float], *, weight_by: str = "tokens",
             total_tokens: int | None = None, lenient_splits: Collection[str] = ("validation",)) -> Boundaries:
    """Targets, repeats and boundary bins from the merged histogram of all the data.

    The total of a split is what it holds (``sum(A_s)`` in the ``weight_by`` unit), or with ``total_tokens`` that
    many tokens shared among the splits as their measured tokens are. ``weight_by="examples"`` with
    ``total_tokens`` sets the number of examples so that, at each source's mean example length, the mixture holds
    ``total_tokens``: the example shares are exact, the tokens as near as the mean lengths hold.

    A source with weight and no examples in a split is a ``MixtureError``, except in ``lenient_splits``, where
    a small held-out split may miss a small source by chance: there the others share its weight.
    """
    if weight_by not in WEIGHT_BY:
        raise MixtureError(f"weight_by must be one of {', '.join(WEIGHT_BY)}, not {weight_by!r}")
    asked = normalised_weights(names, weights)
    unknown = sorted({s for _, s in hist.counts if not 0 <= s < len(names)})
    if unknown:
        raise ValueError(f"source ids {unknown} are not among the {len(names)} sources {list(names)}")
    all_tokens = sum(int(c.tokens.sum()) for c in hist.counts.values())
    plans, ends = {}, {}
    for split in sorted({split for split, _ in hist.counts}):
        counts = {s: hist.counts[(split, s)] for s in range(len(names)) if (split, s) in hist.counts}
        missing = [f"{names[s]!r} (weight {weights[s]})" for s, w in enumerate(asked) if w and s not in counts]
        if missing and split not in lenient_splits:
            raise MixtureError(f"mixture source {', '.join(missing)} has no {split} examples after filtering, so "
                               "its share cannot be met: check its input glob and filters, or give it weight 0")
        for s in (s for s, w in enumerate(asked) if w and s not in counts):  # lenient: reported, not met
            plans[(split, s)] = SourcePlan(s, names[s], float(asked[s]), 0.0, 0, 0, 0, 0)
        present = sum(asked[s] for s in counts)
        share = {s: asked[s] / present if present else Fraction(0) for s in counts}
        total = _split_total(counts, share, weight_by, total_tokens, all_tokens)
        for s, c in counts.items():
            key, amounts = (split, s), c.tokens if weight_by == "tokens" else c.examples
            target, amount = share[s] * total, int(amounts.sum())
            repeats = math.floor(target / amount)
            rest = target - repeats * amount
            plan = SourcePlan(s, names[s], float(asked[s]), float(target), int(c.examples.sum()),
                              int(c.tokens.sum()), c.max_tokens, repeats)
            if rest:
                cumulative = np.cumsum(amounts)
                end = int(np.searchsorted(cumulative, math.ceil(rest)))
                before = int(cumulative[end - 1]) if end else 0
                ends[key] = (end, rest - before, int(amounts[end]))
                plan = replace(plan, selected_examples=int(c.examples[:end].sum()),
                               selected_tokens=int(c.tokens[:end].sum()))
            plans[key] = plan
    return Boundaries(hist.seed, hist.bins_log2, weight_by, plans, ends)


def _split_total(counts: Mapping[int, BinCounts], share: Mapping[int, Fraction], weight_by: str,
                 total_tokens: int | None, all_tokens: int) -> Fraction:
    tokens = {s: int(c.tokens.sum()) for s, c in counts.items()}
    examples = {s: int(c.examples.sum()) for s, c in counts.items()}
    if total_tokens is None:
        return Fraction(sum((tokens if weight_by == "tokens" else examples).values()))
    wanted = Fraction(total_tokens * sum(tokens.values()), max(all_tokens, 1))
    if weight_by == "tokens":
        return wanted
    tokens_per_example = sum(share[s] * Fraction(tokens[s], examples[s]) for s in counts)
    return wanted / tokens_per_example if tokens_per_example else Fraction(0)


Groups = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""hash, key_hi, key_lo (uint64), length, count (int64): distinct keys sorted by (hash, key_hi, key_lo)."""


def _group(hashes: np.ndarray, hi: np.ndarray, lo: np.ndarray, lengths: np.ndarray, count: np.ndarray) -> Groups:
    """Equal keys (identical examples) as one row with a count: duplicates cannot swell a sample."""
    order = np.lexsort((lo, hi, hashes))
    hashes, hi, lo, lengths, count = (a[order] for a in (hashes, hi, lo, lengths, count))
    new = np.ones(len(order), bool)
    new[1:] = (hashes[1:] != hashes[:-1]) | (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    starts = np.flatnonzero(new)
    counts = np.add.reduceat(count, starts) if len(starts) else count[:0]
    return hashes[starts], hi[starts], lo[starts], lengths[starts], counts


@dataclass(frozen=True, eq=False)
class BoundarySample:
    """Pass 2's summary: the examples in each source's boundary bin, as ``Groups``; ``merge`` concatenates."""

    seed: int
    bins_log2: int
    groups: Mapping[SourceKey, Groups]

    def __add__(self, other: BoundarySample) -> BoundarySample:
        _same_run(self, other)
        groups = dict(self.groups)
        for key, part in other.groups.items():
            groups[key] = _group(*(np.concatenate(pair) for pair in zip(groups[key], part, strict=True))
                                 ) if key in groups else part
        return BoundarySample(self.seed, self.bins_log2, dict(sorted(groups.items())))


def boundary_sample(bounds: Boundaries, split: str, source_ids: Any, key_hi: Any, key_lo: Any,
                    lengths: Any) -> BoundarySample:
    """Pass 2 over some examples of ``split`` (a spill file): those that fall in their source's boundary bin."""
    ids, hi, lo = _columns(source_ids, key_hi, key_lo)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    hashes = selection_hash(hi, lo, bounds.seed)
    bins, groups = _bins(hashes, bounds.bins_log2), {}
    for source in np.unique(ids).tolist():
        end = bounds.ends.get((split, source))
        if end is not None:
            rows = np.flatnonzero((ids == source) & (bins == end[0]))
            groups[(split, source)] = _group(hashes[rows], hi[rows], lo[rows], lengths[rows],
                                             np.ones(len(rows), np.int64))
    return BoundarySample(bounds.seed, bounds.bins_log2, groups)


@dataclass(frozen=True)
class MixturePlan:
    """Everything ``copies`` needs, for every (split, source): small, and stored in the manifest as JSON."""

    seed: int
    weight_by: str
    sources: Mapping[SourceKey, SourcePlan]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the 64-bit threshold values as hex strings, which JSON readers in any language keep."""
        splits: dict[str, list[dict[str, Any]]] = {}
        for (split, _), plan in self.sources.items():
            entry = {**plan.__dict__, "threshold": [hex(v) for v in plan.threshold[:3]] + [plan.threshold[3]]}
            splits.setdefault(split, []).append(entry)
        return {"version": PLAN_VERSION, "seed": self.seed, "weight_by": self.weight_by, "splits": splits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixturePlan:
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"mixture plan version {data.get('version')} is not {PLAN_VERSION}: upgrade seqpack")
        sources = {}
        for split, entries in data["splits"].items():
            for entry in entries:
                *values, take = entry["threshold"]
                threshold = (*(int(v, 16) for v in values), int(take))
                sources[(split, entry["source"])] = SourcePlan(**{**entry, "threshold": threshold})
        return cls(data["seed"], data["weight_by"], sources)


def resolve(bounds: Boundaries, sample: BoundarySample) -> MixturePlan:
    """The exact thresholds, from the merged boundary sample: of the two prefixes of the source's examples (in
    hash order) around the remainder, the nearer (the shorter on a tie), so ``|written - target|`` is at most
    half the boundary example's amount. A sample that selects the whole source becomes one more repeat."""
    sources = {}
    for key, plan in bounds.plans.items():
        if key in bounds.ends:
            plan = _threshold(plan, bounds.ends[key], sample.groups.get(key), bounds.weight_by, key)
        sources[key] = plan
    return MixturePlan(bounds.seed, bounds.weight_by, sources)


def _threshold(plan: SourcePlan, end: tuple[int, Fraction, int], groups: Groups | None, weight_by: str,
               key: SourceKey) -> SourcePlan:
    _, need, bin_amount = end
    if groups is None:
        raise ValueError(f"the boundary sample has no examples of {key}: pass 2 missed a spill file")
    hashes, hi, lo, lengths, count = groups
    amounts = lengths if weight_by == "tokens" else np.ones_like(lengths)
    ends = np.cumsum(count * amounts)
    if int(ends[-1]) != bin_amount:
        raise ValueError(f"the boundary sample of {key} holds {int(ends[-1])}, its histogram bin {bin_amount}: "
                         "pass 2 must see the same examples as pass 1")
    g = int(np.searchsorted(ends, math.ceil(need)))
    amount, before = int(amounts[g]), int(ends[g] - count[g] * amounts[g])
    whole = math.ceil((need - before) / amount)  # the fewest of the group that reach the remainder
    take = whole - 1 if need - before - (whole - 1) * amount <= before + whole * amount - need else whole
    examples = plan.selected_examples + int(count[:g].sum()) + take
    tokens = plan.selected_tokens + int((count[:g] * lengths[:g]).sum()) + take * int(lengths[g])
    if examples == plan.examples:
        return replace(plan, repeats=plan.repeats + 1, selected_examples=0, selected_tokens=0)
    return replace(plan, threshold=(int(hashes[g]), int(hi[g]), int(lo[g]), take), selected_examples=examples,
                   selected_tokens=tokens)


def copies(plan: MixturePlan, split: str, source_ids: Any, key_hi: Any, key_lo: Any) -> np.ndarray:
    """How many times each example is written (int64: 0, 1, 2, ...), from its source and key alone.

    Call it with all the examples of a key range (a bucket) at once: identical examples share a key, so they
    fall in one bucket, and the plan may give the extra copy to only some of them (which, does not matter)."""
    ids, hi, lo = _columns(source_ids, key_hi, key_lo)
    out = np.zeros(len(ids), np.int64)
    hashes = selection_hash(hi, lo, plan.seed)
    for source in np.unique(ids).tolist():
        entry = plan.sources.get((split, source))
        if entry is None:
            raise ValueError(f"the mixture plan has no source {source} in split {split!r}: it was made for other data")
        rows = np.flatnonzero(ids == source)
        h, k_hi, k_lo = (np.uint64(v) for v in entry.threshold[:3])
        rh, rhi, rlo = hashes[rows], hi[rows], lo[rows]
        extra = (rh < h) | ((rh == h) & ((rhi < k_hi) | ((rhi == k_hi) & (rlo < k_lo))))
        take = entry.threshold[3]
        if take:
            equal = np.flatnonzero((rh == h) & (rhi == k_hi) & (rlo == k_lo))
            if 0 < len(equal) < take:
                raise ValueError(f"{len(equal)} copies of the boundary example of {entry.name!r}, fewer than the "
                                 f"plan's {take}: call copies with a whole bucket, not a part of it")
            extra[equal[:take]] = True
        out[rows] = entry.repeats + extra
    return out


@dataclass(frozen=True)
class Share:
    """A source's asked and achieved share of its split, in the plan's ``weight_by`` unit, for stats."""

    split: str
    name: str
    asked: float
    achieved: float
    target: float
    written: int


def shares(plan: MixturePlan) -> list[Share]:
    """Asked vs achieved share of every (split, source), as the plan will write them."""
    unit = "written_tokens" if plan.weight_by == "tokens" else "written_examples"
    written = {key: (p, getattr(p, unit)) for key, p in sorted(plan.sources.items())}
    totals = {split: sum(w for (s, _), (_, w) in written.items() if s == split) for split, _ in written}
    return [Share(split, p.name, p.asked, w / totals[split] if totals[split] else 0.0, p.target, w)
            for (split, _), (p, w) in written.items()]
