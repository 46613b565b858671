"""A mixture's weighting applied: each example of a bucket as many times as the ``MixturePlan`` says, and what
that adds to the run's statistics. Pure: no Beam (the plan is made in ``transforms.mix``).

``weighted`` decides for each example from its split, source and key alone, so it gives the same copies whether
a bucket was gathered by the spill or the runner shuffle, from any number of workers and spill files; it must see
a whole bucket at once (identical examples share a key, and the plan may give only some of them an extra copy).

    >>> examples = weighted(plan, "train", bucket_examples)   # in the packing step, before packing
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqpack import mixing
from seqpack.example_columns import ExampleColumns
from seqpack.mixing import MixturePlan
from seqpack.schemas import stats as stats_format

MIXTURE_REASON = "mixture"
"""``dropped_by_reason`` of the examples a down-sampled source does not write."""


def written_tokens(plan: MixturePlan) -> dict[str, int]:
    """The tokens the plan writes per split: what the split's buckets are sized by."""
    tokens: dict[str, int] = {}
    for (split, _), source in plan.sources.items():
        tokens[split] = tokens.get(split, 0) + source.written_tokens
    return tokens


def weighted(plan: MixturePlan, split: str, examples: ExampleColumns) -> ExampleColumns:
    """A whole bucket's key-sorted examples, each as many times as the plan says (0: left out).

    Copy-major order: every example's first copy in key order, then the second copies, and so on, so that
    best-fit packing, which fills a block with consecutive examples of one length, rarely puts two copies of
    one example in one block (it can when a length has fewer distinct examples than fit in a block)."""
    if examples.source is None:
        raise ValueError("a mixture's examples carry their source id; these have none")
    counts = mixing.copies(plan, split, examples.source, examples.key_hi, examples.key_lo)
    if len(counts) and counts.max() <= 1:
        return examples if counts.all() else examples.take(np.flatnonzero(counts))
    rounds = [np.flatnonzero(counts > r) for r in range(int(counts.max(initial=0)))]
    return examples.take(np.concatenate(rounds) if rounds else np.zeros(0, np.int64))


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
