"""A mixture's weighting applied: each example of a bucket as many times as the ``MixturePlan`` says, and what
that adds to the run's statistics. Pure: no Beam (the plan is made in ``transforms.mix``).

``weighted`` decides for each example from its split, source and key alone, so it gives the same copies whether
a bucket was gathered by the spill or the runner shuffle, from any number of workers and spill files; it must see
a whole bucket at once (identical examples share a key, and the plan may give only some of them an extra copy).

    >>> order, parts = weighted(plan, "train", bucket_examples, block_tokens=2048)   # in the packing step
    >>> blocks = pack_columns(bucket_examples, strategy="bfd", max_length=2048, pad_id=0, order=order, parts=parts)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seqpack import mixing
from seqpack.example_columns import ExampleColumns
from seqpack.mixing import MixturePlan
from seqpack.schemas import stats as stats_format

MIXTURE_REASON = "mixture"
"""``dropped_by_reason`` of the examples a down-sampled source does not write."""
APART_MIN_BLOCKS = 32
"""A copy round is packed apart from the others (so no block holds two copies of one example) when it fills at
least this many blocks: each part leaves about one block partly filled, under 1/32 of the part's blocks. Smaller
rounds (a few examples repeated many times) join the last part, where their copies may share a block."""


def written_tokens(plan: MixturePlan) -> dict[str, int]:
    """The tokens the plan writes per split."""
    tokens: dict[str, int] = {}
    for (split, _), source in plan.sources.items():
        tokens[split] = tokens.get(split, 0) + source.written_tokens
    return tokens


def bucket_sizing_tokens(plan: MixturePlan) -> dict[str, int]:
    """What a split's buckets are sized by (``--bucket-tokens`` each): the larger of the tokens it writes and those
    it reads, so that a bucket holds about that many whether the mixture repeats its examples (writes more) or
    leaves most of them out (a small ``mix_total_tokens``: reads more)."""
    read: dict[str, int] = {}
    for (split, _), source in plan.sources.items():
        read[split] = read.get(split, 0) + source.tokens
    return {split: max(tokens, read[split]) for split, tokens in written_tokens(plan).items()}


def weighted(plan: MixturePlan, split: str, examples: ExampleColumns, *, block_tokens: int,
             order: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """A whole bucket's examples, each as many times as the plan says (0: left out), as a packing order (indices
    into ``examples``: ``packing.pack_columns``'s ``order``), and the offsets of the parts to pack apart (its
    ``parts``). ``order``: the examples in key order (``ExampleColumns.key_order``); None: they are in key order.

    Copy-major order: every example's first copy in key order, then the second copies (round 1), and so on. Each
    round holds an example at most once, so a round packed apart never puts two copies of one example in one
    block; a round smaller than ``APART_MIN_BLOCKS`` blocks of ``block_tokens`` joins the part before it."""
    order = np.arange(len(examples), dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    if not len(order):
        return order, [0, 0]
    if examples.source is None:
        raise ValueError("a mixture's examples carry their source id; these have none")
    counts = mixing.copies(plan, split, examples.source[order], examples.key_hi[order], examples.key_lo[order])
    if not len(counts) or counts.max() <= 1:
        kept = order if counts.all() else order[np.flatnonzero(counts)]
        return kept, [0, len(kept)]
    rounds = [np.flatnonzero(counts > r) for r in range(int(counts.max()))]
    lengths = examples.lengths[order]
    parts = [0]
    for previous, chosen in zip(rounds, rounds[1:], strict=False):
        parts.append(parts[-1] + len(previous))
        if int(lengths[chosen].sum()) < APART_MIN_BLOCKS * block_tokens:
            parts.pop()  # this round and the (smaller) ones after it join the part before
            break
    return order[np.concatenate(rounds)], [*parts, int(counts.sum())]


def mixture_stats(plan: MixturePlan) -> dict[str, Any]:
    """What the weighting adds to the run's statistics (``schemas.stats``): the examples and tokens a
    down-sampled source leaves out, as dropped (``dropped_by_reason["mixture"]``), the extra copies of an
    up-sampled one as repeated, per source and overall; and the shares asked and achieved."""
    stats = stats_format.empty_stats()
    repeated_examples = repeated_tokens = dropped_examples = 0
    for (split, _), source in plan.sources.items():
        dropped, repeated = source.dropped_examples, source.repeated_examples
        dropped_tokens = source.tokens - source.selected_tokens if source.repeats == 0 else 0
        # tokens of the copies beyond each example's first
        repeat_tokens = source.written_tokens - source.tokens + dropped_tokens
        counts = stats_format.source_stats(stats, source.name)
        counts["examples_dropped"] += dropped
        counts["examples_repeated"] += repeated
        counts["examples_written"] += repeated - dropped
        stats["examples_by_split"][split] = stats["examples_by_split"].get(split, 0) + repeated - dropped
        stats["tokens_dropped"] += dropped_tokens
        repeated_examples, repeated_tokens = repeated_examples + repeated, repeated_tokens + repeat_tokens
        dropped_examples += dropped
    if dropped_examples:
        stats["dropped_by_reason"][MIXTURE_REASON] = dropped_examples
    stats["examples_dropped"] = dropped_examples
    stats[stats_format.MIXTURE] = {
        "weight_by": plan.weight_by,
        "examples_repeated": repeated_examples,
        "tokens_repeated": repeated_tokens,
        "examples_dropped": dropped_examples,
        "shares": [share.__dict__ for share in mixing.shares(plan)],
    }
    return stats


def share_line(stats: Mapping[str, Any], where: str) -> str:
    """The run summary's line about a mixture: each train source's share achieved (and asked), and the repeats.

        mixture by tokens: pairs 50.2% (asked 50.0%), alpaca 29.9% (30.0%) · 120 repeats → out/v000001/mixture.json
    """
    mixture = stats[stats_format.MIXTURE]
    shares = [s for s in mixture["shares"] if s["split"] == "train"] or mixture["shares"]
    parts = [f"{s['name']} {s['achieved']:.1%} ({'asked ' if not n else ''}{s['asked']:.1%})"
             for n, s in enumerate(shares)]
    return (f"  mixture by {mixture['weight_by']}: {', '.join(parts)} · {mixture['examples_repeated']:,} repeats "
            f"→ {where}")
