"""Per-bundle statistics: DoFns count into a local dict and emit it once per bundle, not once per element.

Beam commits a bundle's outputs together, so a retried bundle's counts are never added twice.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from seqpack.schemas import stats as stats_format

STATS_TAG = "stats"


class StatsDoFn(beam.DoFn):
    """Base class: ``self.stats`` is a fresh ``stats.empty_stats()`` dict in every bundle."""

    def start_bundle(self) -> None:
        self.stats: dict[str, Any] = stats_format.empty_stats()

    def count(self, name: str, value: int = 1) -> None:
        self.stats[name] += value

    def count_keyed(self, name: str, key: str, value: int = 1) -> None:
        self.stats[name][key] = self.stats[name].get(key, 0) + value

    def add_stats(self, partial: dict[str, Any]) -> None:
        """Add a partial statistics dict (the audit's, ``transforms.audit_shards``) to this bundle's."""
        self.stats = stats_format.merge_stats([self.stats, partial])

    def finish_bundle(self):  # noqa: ANN201 - Beam's signature
        yield beam.pvalue.TaggedOutput(STATS_TAG, GlobalWindows.windowed_value(self.stats))


class MergeStats(beam.CombineFn):
    """Adds partial statistics dicts (``stats.merge_stats``)."""

    def create_accumulator(self) -> dict[str, Any]:
        return stats_format.empty_stats()

    def add_input(self, accumulator: dict[str, Any], element: dict[str, Any]) -> dict[str, Any]:
        return stats_format.merge_stats([accumulator, element])

    def merge_accumulators(self, accumulators):  # noqa: ANN001, ANN201 - Beam's signature
        return stats_format.merge_stats(accumulators)

    def extract_output(self, accumulator: dict[str, Any]) -> dict[str, Any]:
        return accumulator
