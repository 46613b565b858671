"""The examples the report's audit section shows: what the runs' audit found (``seqpack audit``'s checks, made as
the shards were written) is in ``stats.json``, with the places of each finding's first examples
(``audit_places``); the report reads those rows alone and decodes the examples, never scanning the dataset.

    found = audit_samples("out/", manifest, stats, tokenizer=None)   # code -> [AuditExample]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqpack.dataset import ShardSet
from seqpack.schemas import Manifest
from seqpack.schemas.stats import AUDIT_PLACES
from seqpack.tools.blocks import ExampleView, InspectError, example_view, load_dataset_tokenizer, read_rows


@dataclass(frozen=True)
class AuditExample:
    """One finding's example, decoded: where it lies, and its number in its row (1 = first, as ``inspect``)."""

    where: str
    number: int
    view: ExampleView


@dataclass
class AuditSamples:
    """Each finding code's first examples, decoded, with where they lie; ``problem`` when they cannot be."""

    by_code: dict[str, list[AuditExample]] = field(default_factory=dict)
    problem: str | None = None


def audit_samples(url: str, manifest: Manifest, stats: Mapping[str, Any], *, tokenizer: str | None
                  ) -> AuditSamples:
    """Decode the examples at the places ``stats`` keeps per code (a row read per example, at most three per
    code); a tokenizer that cannot be loaded, or a place the dataset no longer has, costs only the examples."""
    places: Mapping[str, list[Mapping[str, Any]]] = stats.get(AUDIT_PLACES, {})
    samples = AuditSamples()
    if not places:
        return samples
    try:
        decode = load_dataset_tokenizer(url, manifest, tokenizer).decode
        for split in sorted({where["split"] for found in places.values() for where in found}):
            _decode_split(url, split, places, decode, samples)
    except (InspectError, ValueError, IndexError) as error:
        samples.problem = str(error)
    return samples


def _decode_split(url: str, split: str, places: Mapping[str, list[Mapping[str, Any]]], decode: Any,
                  samples: AuditSamples) -> None:
    shards = ShardSet.open(url, split=split)
    try:
        first_rows = dict(zip((s.path for s in shards.shards), np.cumsum([0, *[s.rows for s in shards.shards]]),
                              strict=False))
        for code, found in places.items():
            for where in (w for w in found if w["split"] == split):
                if where["shard"] not in first_rows:
                    raise ValueError(f"{where['shard']} is not a shard of the dataset (any more)")
                row = int(first_rows[where["shard"]]) + where["row"]
                _, values = next(read_rows(shards, [row]))
                starts = np.concatenate([[0], np.cumsum(values["seq_lens"])])
                start, end = int(starts[where["example"]]), int(starts[where["example"] + 1])
                view = example_view(decode, np.asarray(values["input_ids"][start:end]),
                                    np.asarray(values["labels"][start:end]))
                label = f"{split}, {where['shard']}, row {where['row']}, example #{where['example'] + 1}"
                samples.by_code.setdefault(code, []).append(AuditExample(label, where["example"] + 1, view))
    finally:
        shards.close()
