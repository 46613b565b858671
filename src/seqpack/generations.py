"""What an ``--append`` may add to a dataset: the inputs no generation consumed, built the same way as before.

Pure functions over the manifest and what the filesystem reports; the driver (``pipeline.appends``) lists the
files and hashes the few that need it.

    plan = plan_inputs(found, manifest.generations, sha256_of=hash_file)
    plan.new            # the paths the next generation reads
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from seqpack.masking import OVERLONG_ALIASES
from seqpack.schemas.manifest import ConsumedInput, GenerationInfo, Manifest

BUILD_SETTINGS = (
    "max_length", "template", "source_field", "target_field", "separator", "add_eos", "train_on", "overlong",
    "packing", "seed", "file_format", "validation_fraction", "pad_id", "dedup", "min_target_tokens",
    "max_source_tokens", "add_special_tokens", "chat_style", "messages_field", "role_map", "system",
    "weight_by", "mix_total_tokens",
)
"""Settings that change how examples are built, split, packed or stored: every generation of a dataset must
share them, or a reader would get two datasets in one. (Inputs, output, shard sizes, the shuffle path and the
rejection limits may differ.) The tokenizer is compared by its fingerprint, not its path."""

_FLAG_NAMES = {"file_format": "--format", "add_eos": "--eos/--no-eos", "add_special_tokens": "--add-special-tokens"}


def flag_of(setting: str) -> str:
    return _FLAG_NAMES.get(setting, "--" + setting.replace("_", "-"))


def changed_setting(previous: Manifest, config: Mapping[str, Any], tokenizer_fingerprint: str) -> str | None:
    """Why a generation built with ``config`` cannot join ``previous`` (one line naming the setting), or None."""
    if tokenizer_fingerprint != previous.tokenizer.fingerprint:
        return (
            f"the tokenizer differs: {config.get('tokenizer')} has fingerprint {tokenizer_fingerprint}, the dataset "
            f"was built with {previous.tokenizer.name} ({previous.tokenizer.fingerprint})"
        )
    now, before = _plain(config), _plain(previous.config)
    sources = _changed_sources(now.get("sources") or [], before.get("sources") or [])
    if sources:
        return sources
    for setting in BUILD_SETTINGS:
        if setting in before and _same_name(setting, now.get(setting)) != _same_name(setting, before[setting]):
            return (
                f"{flag_of(setting)} is {_show(now.get(setting))} here, but the dataset was built with "
                f"{_show(before[setting])}" + _renamed(setting, before[setting])
            )
    return None


def _changed_sources(now: list[dict[str, Any]], before: list[dict[str, Any]]) -> str | None:
    """A mixture's sources must stay the same across generations: names, ids (their order) and options; only
    their inputs may differ."""
    def names(sources: list[dict[str, Any]]) -> list[str]:
        return [source.get("name") for source in sources]

    if not now and before:
        return f"the dataset is a mixture of the sources {_show(names(before))}, but no sources were given here"
    if now and not before:
        return "sources (a mixture) were given here, but the dataset was built without sources"
    if names(now) != names(before):
        return (f"the sources are {_show(names(now))} here (by id), but the dataset was built with "
                f"{_show(names(before))}")
    for mine, theirs in zip(now, before, strict=True):
        for option in sorted((set(mine) | set(theirs)) - {"inputs"}):
            if mine.get(option) != theirs.get(option):
                return (f"source {mine['name']!r} has {option} {_show(mine.get(option))} here, but the dataset was "
                        f"built with {_show(theirs.get(option))}")
    return None


def _same_name(setting: str, value: Any) -> Any:
    """A setting's value under its current name: an ``--overlong truncate`` dataset is ``truncate-left``."""
    return OVERLONG_ALIASES.get(value, value) if setting == "overlong" and isinstance(value, str) else value


def _renamed(setting: str, value: Any) -> str:
    """The hint for a dataset built before a setting's value was renamed (``truncate`` was the default)."""
    if setting == "overlong" and value in OVERLONG_ALIASES:
        return f" (now named {OVERLONG_ALIASES[value]}): pass --overlong {OVERLONG_ALIASES[value]} to add to it"
    return ""


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """As JSON sees it (tuples are lists), so a setting read back from a manifest compares equal to its own."""
    return json.loads(json.dumps(dict(config), default=str))


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class FoundFile:
    """An input file as the filesystem lists it now."""

    path: str
    size: int
    modified: float


@dataclass(frozen=True)
class ChangedInput:
    """A consumed input whose content is no longer what its generation read."""

    path: str
    generation: int
    consumed: ConsumedInput
    size: int
    sha256: str


@dataclass
class InputPlan:
    """Every input file found, sorted into what the next generation reads and what it leaves, and why."""

    new: list[FoundFile] = field(default_factory=list)
    consumed: list[FoundFile] = field(default_factory=list)
    """Already read by a generation (unchanged)."""
    copies: list[tuple[FoundFile, str]] = field(default_factory=list)
    """New names for content a generation already read: (the file, the path it was read under)."""
    changed: list[ChangedInput] = field(default_factory=list)
    """Read by a generation, but their content changed since: never read again (``--rebuild`` starts over)."""
    missing: list[ConsumedInput] = field(default_factory=list)
    """Consumed by a generation and no longer found among the inputs (moved or deleted; not an error)."""
    empty: list[FoundFile] = field(default_factory=list)
    """New files with no bytes yet: not read and not consumed, so their content is read once it arrives (a file
    consumed empty would later count as *changed* and never be read)."""


def consumed_inputs(generations: Iterable[GenerationInfo]) -> dict[str, tuple[int, ConsumedInput]]:
    """The latest record of every consumed path: ``path -> (generation id, what it consumed)``."""
    latest: dict[str, tuple[int, ConsumedInput]] = {}
    for generation in generations:
        for consumed in generation.inputs:
            latest[consumed.path] = (generation.id, consumed)
    return latest


def plan_inputs(
    found: Iterable[FoundFile], generations: list[GenerationInfo], *, sha256_of: Callable[[str], str],
    rehash: bool = False,
) -> InputPlan:
    """Sort ``found`` by content against what ``generations`` consumed.

    A file at a consumed path with the same size and modification time is taken as consumed without reading it
    (as rsync and make do), unless ``rehash``; otherwise it is hashed: the same content is consumed (it was only
    touched), other content is *changed*. A file at a new path is hashed only when its size equals a consumed
    file's, since only then can it be a copy; a copy is skipped, anything else is new.
    """
    by_path = consumed_inputs(generations)
    by_content = {c.sha256: c.path for g in generations for c in g.inputs}
    sizes = {c.size for g in generations for c in g.inputs}
    plan = InputPlan()
    seen: set[str] = set()
    for found_file in sorted(found, key=lambda f: f.path):
        seen.add(found_file.path)
        if found_file.path in by_path:
            generation, consumed = by_path[found_file.path]
            if not rehash and (found_file.size, found_file.modified) == (consumed.size, consumed.modified):
                plan.consumed.append(found_file)
                continue
            digest = sha256_of(found_file.path)
            if digest == consumed.sha256:
                plan.consumed.append(found_file)
            else:
                plan.changed.append(ChangedInput(found_file.path, generation, consumed, found_file.size, digest))
            continue
        if found_file.size == 0:
            plan.empty.append(found_file)
            continue
        if found_file.size in sizes:
            digest = sha256_of(found_file.path)
            if digest in by_content:
                plan.copies.append((found_file, by_content[digest]))
                continue
        plan.new.append(found_file)
    plan.missing = [consumed for path, (_, consumed) in sorted(by_path.items()) if path not in seen]
    return plan
