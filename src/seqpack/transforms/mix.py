"""A mixture's weighting in the pipeline: the ``MixturePlan`` made from the spill files, and applied to buckets.

``PlanMixture`` makes the plan (``seqpack.mixing``) in two passes over the spill files' descriptions, reading only
each file's source ids, keys and lengths: pass 1 a selection-hash histogram per file, added up
(``CombineGlobally``) and turned into the repeats and boundary bins (``boundary``); pass 2 the examples of each
file in those bins, added up and ``resolve``d into the exact plan, a singleton the packing steps take as a side
input. The packing steps then give every example of a whole bucket its copies (``seqpack.weighting.weighted``).

    >>> plan = spills | "PlanMixture" >> PlanMixture(mix_options(config))
    >>> spills | "ShuffleAndPack" >> ShuffleAndPack(options, plan=plan)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from seqpack import mixing
from seqpack.mixing import Boundaries, Histogram, MixturePlan
from seqpack.schemas.layout import MIXTURE_FILE
from seqpack.transforms.shuffle import SPILL_SCHEMA, SpillFile, _open
from seqpack.transforms.write import write_atomically
from seqpack.weighting import mixture_stats

_KEY_FIELDS = [SPILL_SCHEMA.get_field_index(name) for name in ("key_hi", "key_lo", "ids", "source_id")]


@dataclass(frozen=True, kw_only=True)
class MixOptions:
    """What the weighting needs of a mixture's configuration (``pipeline.build.mix_options``)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    weight_by: str = "tokens"
    total_tokens: int | None = None
    seed: int = 0


def spill_keys(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A spill file's source ids, ``key_hi``, ``key_lo`` and lengths, without its per-token mask column (a
    memory-mapped local file is touched only where the ids' offsets lie)."""
    parts: list[tuple[np.ndarray, ...]] = []
    with _open(path) as source:
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=_KEY_FIELDS))
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            offsets = np.asarray(batch.column("ids").offsets, dtype=np.int64)
            source_id = batch.column("source_id")
            if source_id.null_count:
                raise ValueError(f"spill file {path} has examples without a source id: it was not written by a "
                                 "mixture's tokenize step")
            parts.append((np.asarray(source_id, dtype=np.int64), np.asarray(batch.column("key_hi")).copy(),
                          np.asarray(batch.column("key_lo")).copy(), np.diff(offsets)))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    ids, hi, lo, lengths = (np.concatenate(column) for column in zip(*parts, strict=True))
    return ids, hi, lo, lengths


class MergeSummaries(beam.CombineFn):
    """Adds histograms or boundary samples (``mixing.merge``); None stands for "nothing yet"."""

    def create_accumulator(self) -> None:
        return None

    def add_input(self, accumulator: Any, element: Any) -> Any:
        return element if accumulator is None else accumulator + element

    def merge_accumulators(self, accumulators):  # noqa: ANN001, ANN201 - Beam's signature
        present = [part for part in accumulators if part is not None]
        return mixing.merge(present) if present else None

    def extract_output(self, accumulator: Any) -> Any:
        return accumulator


def _histogram(spill: SpillFile, seed: int) -> Histogram:
    return mixing.histogram(spill.split, *spill_keys(spill.path), seed=seed)


def _boundary(hist: Histogram | None, options: MixOptions) -> Boundaries:
    if hist is None:
        hist = Histogram(options.seed, mixing.BINS_LOG2, {})
    return mixing.boundary(hist, options.names, options.weights, weight_by=options.weight_by,
                           total_tokens=options.total_tokens)


def _sample(spill: SpillFile, bounds: Boundaries) -> Iterator[mixing.BoundarySample]:
    if any(split == spill.split for split, _ in bounds.ends):  # a file of a split with no remainder: no pass 2
        yield mixing.boundary_sample(bounds, spill.split, *spill_keys(spill.path))


def _resolve(sample: mixing.BoundarySample | None, bounds: Boundaries) -> MixturePlan:
    return mixing.resolve(bounds, sample or mixing.BoundarySample(bounds.seed, bounds.bins_log2, {}))


class PlanMixture(beam.PTransform):
    """``SpillFile`` descriptions in, the run's ``MixturePlan`` out (one element: use it as ``AsSingleton``)."""

    def __init__(self, options: MixOptions) -> None:
        super().__init__()
        self.options = options

    def expand(self, spills: beam.PCollection) -> beam.PCollection:
        options = self.options
        bounds = (
            spills
            | "Histogram" >> beam.Map(_histogram, options.seed)
            | "AddHistograms" >> beam.CombineGlobally(MergeSummaries())
            | "Boundaries" >> beam.Map(_boundary, options)
        )
        return (
            spills
            | "BoundarySample" >> beam.FlatMap(_sample, beam.pvalue.AsSingleton(bounds))
            | "AddSamples" >> beam.CombineGlobally(MergeSummaries())
            | "Resolve" >> beam.Map(_resolve, beam.pvalue.AsSingleton(bounds))
        )


class WritePlanDoFn(beam.DoFn):
    """The plan in; written as ``MIXTURE_FILE`` in the generation (JSON: the plan and its shares), and what it
    adds to the statistics out (the commit waits for the statistics, so for the file)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def process(self, plan: MixturePlan) -> Iterator[dict[str, Any]]:
        shares = [share.__dict__ for share in mixing.shares(plan)]
        text = json.dumps({"shares": shares, "plan": plan.to_dict()}, indent=1, sort_keys=True)
        write_atomically(FileSystems.join(self.root, MIXTURE_FILE), text.encode("utf-8"))
        yield mixture_stats(plan)
