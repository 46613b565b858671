"""The lines a run prints when it is done: what was read, written, rejected and dropped, the audit, the mixture's
shares, and where to look next; or why an ``--append`` found nothing to do."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from seqpack.pipeline.run_audit import audit_line
from seqpack.schemas import REJECTED_FILE, Manifest
from seqpack.schemas.layout import MIXTURE_FILE
from seqpack.schemas.stats import MIXTURE
from seqpack.weighting import share_line

if TYPE_CHECKING:
    from seqpack.pipeline.run import UpToDate


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items()))


def summary(manifest: Manifest, stats: dict[str, Any], output: str, *, report: str | None = None) -> str:
    """What a finished run says: what was written and where, how full the blocks are, what was left out or cut,
    and the command that shows the data. Lines about rejected or dropped records appear only when there are some.

    Splits count *segments* (what the blocks hold) when examples can span blocks (``wrap`` packing, ``--overlong
    split``); the records line counts whole examples, so the two never seem to disagree."""
    unit = "row" if manifest.packing == "none" else "block"
    whole = manifest.packing != "wrap" and not stats["examples_split"]
    generation = manifest.generations[-1]
    written_splits = generation.splits
    width = max((len(name) for name in written_splits), default=0)
    digits = max((len(f"{s.rows:,}") for s in written_splits.values()), default=0)
    splits = [
        f"  {name:<{width}}  {s.rows:>{digits},} {unit}{'s' * (s.rows != 1)} in {_plural(len(s.shards), 'shard')} · "
        f"{_plural(s.examples, 'example' if whole else 'segment')} · {s.tokens:,} tokens"
        for name, s in written_splits.items()
    ] or ["  no examples were written"]
    repeated = stats.get(MIXTURE, {}).get("examples_repeated", 0)
    written = sum(stats["examples_by_split"].values()) - repeated  # a mixture's repeats: on its own line
    first = f"seqpack: wrote {output}"
    if len(manifest.generations) > 1:
        total = sum(s.tokens for s in manifest.splits.values())
        first = (f"seqpack: wrote generation {generation.id} of {output} (now {len(manifest.generations)} "
                 f"generations, {total:,} tokens in all)")
    lines = [
        first,
        *splits,
        f"  fill {stats['fill']:.1%} of {manifest.max_length:,}-token blocks ({manifest.packing} packing)",
        f"  {stats['records_read']:,} records read: {written:,} written, {stats['records_rejected']:,} rejected, "
        f"{stats['examples_dropped']:,} dropped" + _changed(stats),
    ]
    if stats["rejected_by_reason"]:
        lines.append(f"  rejected: {_counts(stats['rejected_by_reason'])} → {output}/{manifest.path_of(REJECTED_FILE)}")
    if stats["dropped_by_reason"]:
        lines.append(f"  dropped: {_counts(stats['dropped_by_reason'])}")
    lines += filter(None, [audit_line(manifest.config, stats, output)])
    if MIXTURE in stats:
        lines.append(share_line(stats, f"{output}/{manifest.path_of(MIXTURE_FILE)}"))
    if report:
        lines.append(f"  report: {report}")
    lines.append(f"  look at it: seqpack inspect {shlex.quote(output)}")
    return "\n".join(lines)


def up_to_date_message(result: UpToDate) -> str:
    """What an ``--append`` with nothing new says: the dataset is current, and which inputs it left alone."""
    plan = result.selection.plan
    if result.manifest is None:
        newest = "the dataset has no generation yet"
    else:
        generations = result.manifest.generations
        newest = f"generation {generations[-1].id} is the newest of {_plural(len(generations), 'generation')}"
    lines = [f"seqpack: {result.output} is up to date: no new input ({newest})"]
    if plan is not None and plan.copies:
        lines.append(f"  {_plural(len(plan.copies), 'new file name')} for content already consumed (not read again)")
    if plan is not None and plan.empty:
        lines.append(f"  {_plural(len(plan.empty), 'empty file')} (read once they have content)")
    if plan is not None and plan.changed:
        lines.append(f"  {_plural(len(plan.changed), 'consumed file')} changed since (not read again): "
                     f"seqpack status {shlex.quote(result.output)} lists them")
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


def _changed(stats: dict[str, Any]) -> str:
    """How many written examples were changed to fit: truncated (and how badly), or split into pieces."""
    parts = []
    if stats["examples_truncated"]:
        lost = [f"{stats[key]:,} {label}" for key, label in (("examples_prompt_lost", "kept none of their prompt"),
                                                            ("examples_target_cut", "lost the end of their answer"))
                if stats.get(key)]
        parts.append(f"{stats['examples_truncated']:,} truncated to fit" + (f": {', '.join(lost)}" if lost else ""))
    too_long = stats["dropped_by_reason"].get("prompt_too_long", 0) + stats["dropped_by_reason"].get("overlong", 0)
    if too_long:
        parts.append(f"{too_long:,} dropped as too long")
    if stats["examples_split"]:
        parts.append(f"{stats['examples_split']:,} split into pieces")
    return f" ({'; '.join(parts)})" if parts else ""
