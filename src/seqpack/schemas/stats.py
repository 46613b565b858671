"""``stats.json``: what a run read, rejected, dropped and wrote, and the identity that ties them together."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from seqpack.schemas.manifest import DatasetFormatError

COUNTERS = (
    "records_read",
    "records_rejected",
    "examples_truncated",
    "examples_prompt_lost",
    "examples_target_cut",
    "examples_split",
    "examples_dropped",
    "pieces",
    "tokens_in",
    "tokens_truncated",
    "tokens_dropped",
    "tokens_written",
    "source_tokens",
    "target_tokens",
    "trained_tokens",
    "blocks",
    "block_tokens",
    "texts_reencoded",
    "examples_audited",
)
"""Plain additive counters. ``tokens_in`` counts every token the tokenizer produced for an example.
``examples_prompt_lost`` and ``examples_target_cut`` count truncated examples that kept none of their prompt (only
``--overlong truncate-left`` does that), or lost the end of their answer. Examples the default ``truncate-target``
cannot fit without cutting their prompt are dropped, under ``dropped_by_reason["prompt_too_long"]``.
``texts_reencoded`` counts texts the fast encoder raised on (a batch at a time) that the Hugging Face backend
encoded instead (``seqpack.fast_encoder``); the ids are the same either way."""
ADDED_LATER = ("examples_prompt_lost", "examples_target_cut", "texts_reencoded", "examples_audited")
"""Counters that older datasets' ``stats.json`` lacks: a reader takes them as 0. ``examples_audited`` counts the
examples (pieces, as the blocks cut them) the run's audit checked: 0 with ``--audit off`` or an older seqpack."""

KEYED = (
    "rejected_by_reason",
    "dropped_by_reason",
    "examples_by_split",
    "blocks_by_split",
    "pieces_written_by_split",
    "audit_by_code",
)
KEYED_ADDED_LATER = ("audit_by_code",)
"""Keyed counters that older datasets' ``stats.json`` lacks: a reader takes them as empty. ``audit_by_code``
counts the audit's findings by code (``seqpack.audit.FINDINGS``)."""
AUDIT_PLACES = "audit_places"
"""Finding code -> where its first examples lie (``place``): at most ``PLACES_KEPT``, the smallest, so the
statistics are the same bytes however many workers wrote the shards. Older datasets lack it: empty."""
PLACES_KEPT = 3
PLACE_FIELDS = ("split", "shard", "row", "example")
"""A place: the split, the shard file as the manifest lists it (with its generation's directory), the row in that
file (0 = first) and the example in the row (0 = first)."""
SOURCES = "sources"
SOURCE_COUNTERS = (
    "records_read",
    "records_rejected",
    "examples_dropped",
    "examples_written",
    "examples_repeated",
    "tokens_written",
    "trained_tokens",
)
"""A mixture's counts per source, ``stats["sources"][name]`` (absent outside mixtures and in older stats.json).
``examples_written`` counts every copy written, ``examples_repeated`` the extra copies the weighting wrote
(``seqpack.mixing``), and ``examples_dropped`` includes the examples a down-sampled source left out."""
MIXTURE = "mixture"
"""A mixture's weighting, ``stats["mixture"]`` (absent outside mixtures): ``weight_by``, ``examples_repeated`` and
``tokens_repeated`` (copies beyond each example's first, in ``examples_by_split`` and ``tokens_written``),
``examples_dropped`` (down-sampled, also under ``dropped_by_reason["mixture"]``), and ``shares``: per split and
source the share asked and achieved, the target and the amount written (``mixing.shares``)."""
HISTOGRAMS = ("example_length_hist", "source_length_hist", "target_length_hist")
HIST_BINS = 32
"""Length histograms use power-of-two bins: bin ``b`` counts lengths in ``[2**(b-1), 2**b)``; bin 0 is length 0."""


def length_bin(length: int) -> int:
    return min(int(length).bit_length(), HIST_BINS - 1)


def empty_stats() -> dict[str, Any]:
    stats: dict[str, Any] = {name: 0 for name in COUNTERS}
    stats.update({name: {} for name in KEYED})
    stats.update({name: [0] * HIST_BINS for name in HISTOGRAMS})
    stats[AUDIT_PLACES] = {}
    return stats


def place(split: str, shard: str, row: int, example: int) -> dict[str, Any]:
    """Where a finding's example lies (``PLACE_FIELDS``)."""
    return {"split": split, "shard": shard, "row": int(row), "example": int(example)}


def _place_order(where: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(where[name] for name in PLACE_FIELDS)


def merge_places(parts: Iterable[Mapping[str, list[Mapping[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Places per code from several parts: the ``PLACES_KEPT`` smallest of each code, whatever the parts' order
    (a Beam combiner relies on that)."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for code, places in part.items():
            merged.setdefault(code, []).extend(dict(where) for where in places)
    return {code: sorted(places, key=_place_order)[:PLACES_KEPT] for code, places in sorted(merged.items())}


def source_stats(stats: dict[str, Any], name: str) -> dict[str, int]:
    """Source ``name``'s counts in ``stats`` (created, zero, when it has none yet)."""
    sources = stats.setdefault(SOURCES, {})
    if name not in sources:
        sources[name] = dict.fromkeys(SOURCE_COUNTERS, 0)
    return sources[name]


def for_source(stats: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A source's stage statistics (its render, dedup or tokenize step) with what they say about the source
    (records read, examples dropped and written) also under ``sources[name]``."""
    result = dict(stats)
    result[SOURCES] = {name: {
        **dict.fromkeys(SOURCE_COUNTERS, 0),
        "records_read": stats.get("records_read", 0),
        "examples_dropped": stats.get("examples_dropped", 0),
        "examples_written": sum(stats.get("examples_by_split", {}).values()),
    }}
    return result


def merge_stats(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add partial statistics together; order does not matter (a Beam combiner relies on that)."""
    total = empty_stats()
    parts_list = list(parts)
    for part in parts_list:
        if MIXTURE in part:  # one element of a run carries it (``weighting.mixture_stats``); one per generation
            total[MIXTURE] = _merge_mixture(total.get(MIXTURE), part[MIXTURE])
        for source, counts in part.get(SOURCES, {}).items():
            merged = source_stats(total, source)
            for name, value in counts.items():
                merged[name] = merged.get(name, 0) + value
        for name in COUNTERS:
            total[name] += part.get(name, 0)
        for name in KEYED:
            for key, value in part.get(name, {}).items():
                total[name][key] = total[name].get(key, 0) + value
        for name in HISTOGRAMS:
            hist = part.get(name)
            if hist:
                total[name] = [a + b for a, b in zip(total[name], hist, strict=True)]
    total[AUDIT_PLACES] = merge_places(part.get(AUDIT_PLACES, {}) for part in parts_list)
    return total


def _merge_mixture(total: Mapping[str, Any] | None, part: Mapping[str, Any]) -> dict[str, Any]:
    """Two runs' ``mixture`` sections (generations of one dataset) as one: counts and amounts added, each split's
    achieved shares worked out again from the amounts written."""
    if total is None:
        return dict(part)
    merged = {**total, **{name: total.get(name, 0) + value for name, value in part.items()
                          if name not in ("weight_by", "shares")}}
    shares: dict[tuple[str, str], dict[str, Any]] = {}
    for share in [*total.get("shares", []), *part.get("shares", [])]:
        key = (share["split"], share["name"])
        known = shares.setdefault(key, {**share, "target": 0.0, "written": 0})
        known["target"] += share["target"]
        known["written"] += share["written"]
    for (split, _), share in shares.items():
        written = sum(other["written"] for (s, _), other in shares.items() if s == split)
        share["achieved"] = share["written"] / written if written else 0.0
    merged["shares"] = list(shares.values())
    return merged


class AccountingError(RuntimeError):
    """The run's numbers do not add up: something was lost or duplicated, so nothing is committed."""


def check_identity(stats: Mapping[str, Any]) -> None:
    """Every record and every token must be accounted for before a dataset is committed."""
    repeated = _repeated(stats)
    written = sum(stats["examples_by_split"].values()) - repeated["examples_repeated"]
    rejected = sum(stats["rejected_by_reason"].values())
    dropped = sum(stats["dropped_by_reason"].values())
    problems = []
    if stats["records_read"] != written + rejected + dropped:
        problems.append(
            f"records read {stats['records_read']} != examples written {written} + rejected {rejected} "
            f"+ dropped {dropped}"
            + (" (written counts each example once, not its repeats)" if repeated["examples_repeated"] else "")
        )
    if rejected != stats["records_rejected"] or dropped != stats["examples_dropped"]:
        problems.append("rejected/dropped totals disagree with their per-reason counts")
    tokens_in = stats["tokens_in"] + repeated["tokens_repeated"]
    if tokens_in != stats["tokens_written"] + stats["tokens_truncated"] + stats["tokens_dropped"]:
        problems.append(
            f"tokens produced {stats['tokens_in']} + repeated {repeated['tokens_repeated']} != written "
            f"{stats['tokens_written']} + truncated "
            f"{stats['tokens_truncated']} + dropped {stats['tokens_dropped']}"
        )
    pieces = stats["pieces"] + repeated["examples_repeated"] - repeated["examples_dropped"]
    if pieces != sum(stats["pieces_written_by_split"].values()):
        problems.append(
            f"pieces made {stats['pieces']} (+ repeated - left out by the mixture: {pieces}) != pieces written "
            f"{sum(stats['pieces_written_by_split'].values())}"
        )
    problems += _source_problems(stats)
    if problems:
        raise AccountingError("the run's statistics do not add up, nothing was committed: " + "; ".join(problems))


def _repeated(stats: Mapping[str, Any]) -> dict[str, int]:
    """A mixture's copies beyond each example's first, and the examples it left out (0 outside mixtures)."""
    mixture = stats.get(MIXTURE) or {}
    return {name: mixture.get(name, 0) for name in ("examples_repeated", "tokens_repeated", "examples_dropped")}


def _source_problems(stats: Mapping[str, Any]) -> list[str]:
    """The identity per source of a mixture: each source's records are written once, rejected or dropped (its
    repeats aside), and the sources' tokens add up to the run's."""
    sources = stats.get(SOURCES) or {}
    problems = []
    for name, counts in sorted(sources.items()):
        unique = counts["examples_written"] - counts.get("examples_repeated", 0)
        if counts["records_read"] != unique + counts["records_rejected"] + counts["examples_dropped"]:
            problems.append(
                f"source {name!r}: records read {counts['records_read']} != examples written once {unique} + "
                f"rejected {counts['records_rejected']} + dropped {counts['examples_dropped']}"
            )
    if sources:
        for total in ("records_read", "tokens_written", "trained_tokens"):
            added = sum(counts[total] for counts in sources.values())
            if added != stats[total]:
                problems.append(f"the sources' {total} add up to {added}, the run's are {stats[total]}")
    return problems


def finalize(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Add derived figures (fill) to merged statistics, ready for ``stats.json``."""
    result = dict(stats)
    block_tokens = stats["block_tokens"]
    result["fill"] = stats["tokens_written"] / block_tokens if block_tokens else 0.0
    return result


def parse(text: str | bytes, where: str) -> dict[str, Any]:
    """Read and check a ``stats.json`` (a reader's input is data: a tampered file must not crash a tool).

    Raises ``DatasetFormatError`` naming ``where`` and the first bad field."""
    try:
        stats = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise DatasetFormatError(f"{where} is not valid JSON ({error})") from error
    if not isinstance(stats, dict):
        raise DatasetFormatError(f"{where} is not a seqpack statistics file (not a JSON object)")
    stats = {**dict.fromkeys(ADDED_LATER, 0), **{name: {} for name in (*KEYED_ADDED_LATER, AUDIT_PLACES)}, **stats}
    problem = _first_problem(stats)
    if problem:
        raise DatasetFormatError(f"{where} is damaged: {problem}; rebuild the dataset or restore the file")
    return stats


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _first_problem(stats: Mapping[str, Any]) -> str | None:
    for name in COUNTERS:
        if not _is_count(stats.get(name)):
            return f"{name} is {stats.get(name)!r}, not a count"
    for name in KEYED:
        keyed = stats.get(name)
        if not isinstance(keyed, dict) or not all(isinstance(k, str) and _is_count(v) for k, v in keyed.items()):
            return f"{name} is not a mapping of names to counts"
    for name in HISTOGRAMS:
        hist = stats.get(name)
        if not isinstance(hist, list) or len(hist) != HIST_BINS or not all(_is_count(v) for v in hist):
            return f"{name} is not a list of {HIST_BINS} counts"
    if not _are_places(stats.get(AUDIT_PLACES)):
        return f"{AUDIT_PLACES} is not a mapping of codes to lists of places ({', '.join(PLACE_FIELDS)})"
    sources = stats.get(SOURCES, {})
    if not isinstance(sources, dict) or not all(
        isinstance(name, str) and isinstance(counts, dict) and all(_is_count(counts.get(c, 0)) for c in SOURCE_COUNTERS)
        for name, counts in sources.items()
    ):
        return f"{SOURCES} is not a mapping of source names to their counts"
    mixture = stats.get(MIXTURE, {})
    if not isinstance(mixture, dict) or not all(_is_count(v) for k, v in mixture.items() if k.endswith("ed")):
        return f"{MIXTURE} is not a mapping with counts of repeated and dropped examples"
    fill = stats.get("fill")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0.0 <= fill <= 1.0:
        return f"fill is {fill!r}, not a fraction"
    return None


def _are_places(value: Any) -> bool:
    def is_place(where: Any) -> bool:
        return (isinstance(where, dict) and set(where) == set(PLACE_FIELDS) and isinstance(where["split"], str)
                and isinstance(where["shard"], str) and _is_count(where["row"]) and _is_count(where["example"]))

    return isinstance(value, dict) and all(
        isinstance(code, str) and isinstance(places, list) and all(map(is_place, places))
        for code, places in value.items()
    )


def to_json(stats: Mapping[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=True) + "\n"
