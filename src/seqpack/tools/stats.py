"""``seqpack stats``: a dataset's statistics, the sum of its generations' ``stats.json``, or one generation's.

Each generation keeps the ``stats.json`` of the run that wrote it; the dataset's statistics are their sum
(``schemas.stats.merge_stats``, with the fill worked out again from the summed tokens), so ``seqpack report`` and
``seqpack stats`` show the whole dataset, not only its newest generation.

    total = dataset_stats("out/")                 # every generation added up
    second = dataset_stats("out/", generation=2)  # as generation 2's run wrote it
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from seqpack.dataset import Location, open_manifest
from seqpack.dataset.footers import IO_THREADS
from seqpack.errors import UsageError
from seqpack.schemas import STATS_NAME, DatasetFormatError, Manifest
from seqpack.schemas import stats as stats_format
from seqpack.schemas.manifest import GenerationInfo


def generation_stats(url: str, manifest: Manifest) -> dict[int, dict[str, Any]]:
    """Every generation's ``stats.json``, checked field by field: ``generation id -> statistics``, oldest first.

    Read a few at a time (an object store answers each request slowly); a missing or damaged file is a
    ``DatasetFormatError`` that names it."""
    location = Location.of(url)
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        parts = pool.map(lambda g: _read_stats(location, g), manifest.generations)
        return {generation.id: stats for generation, stats in zip(manifest.generations, parts, strict=True)}


def _read_stats(location: Location, generation: GenerationInfo) -> dict[str, Any]:
    relative = generation.path_of(STATS_NAME)
    try:
        data = location.fs.cat_file(location.path(relative))
    except OSError as error:  # FileNotFoundError included
        raise DatasetFormatError(
            f"{location.name(relative)} cannot be read ({type(error).__name__}): generation {generation.id}'s "
            "statistics are missing; copy the dataset again, or rebuild it"
        ) from error
    return stats_format.parse(data, location.name(relative))


def total_stats(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Statistics added up, with the fill worked out from the sums (a mean of fills would weigh a small generation
    like a large one)."""
    return stats_format.finalize(stats_format.merge_stats(parts))


def dataset_stats(url: str, *, generation: int | None = None) -> dict[str, Any]:
    """The dataset's statistics (every generation added up), or ``generation``'s alone as its run wrote them.

    Raises ``DatasetFormatError`` for a bad dataset or a missing ``stats.json``, ``UsageError`` for a generation it
    does not have."""
    manifest = open_manifest(url)
    if generation is not None:
        ids = [g.id for g in manifest.generations]
        if generation not in ids:
            raise UsageError(f"{url} has no generation {generation}; it has {', '.join(map(str, ids))}")
        return generation_stats(url, manifest.restricted_to([generation]))[generation]
    return total_stats(generation_stats(url, manifest).values())
