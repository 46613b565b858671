"""A mixture's sources from the command line (``--source 'name=code,input=code/*.jsonl,weight=0.3'``, repeatable)
or from a job file's ``sources:`` list of mappings. Both use the flags' names; the top-level options are every
source's defaults.

    >>> parse_source_flag("name=code,input=code/*.jsonl,template=alpaca,weight=0.3")
    {'name': 'code', 'input': 'code/*.jsonl', 'template': 'alpaca', 'weight': '0.3'}
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from typing import Any

from seqpack.cli.flags import parse_role_map, unescape
from seqpack.errors import UsageError, closest, option_key
from seqpack.sources import PER_SOURCE_OPTIONS, SourceConfig

_INPUTS = "inputs"
_KEYS = {option_key(name): name for name in ("name", "weight", *PER_SOURCE_OPTIONS)} | {"input": _INPUTS}
"""A source's keys as a job file or ``--source`` may spell them (``input`` or ``inputs``, dashes or underscores)."""
_ITEM_START = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_-]*\s*=)")
"""``--source`` items are cut at a comma followed by ``key=``, so a value may hold commas (``{a,b}.jsonl``)."""


def parse_source_flag(text: str) -> dict[str, str]:
    """``--source``'s ``key=value,key=value`` as a mapping of its keys to their text (checked by ``source_keys``)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in _ITEM_START.split(text))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--source item {item!r} is not KEY=VALUE (e.g. name=code,input=a.jsonl)")
        mapping[key.strip()] = unescape(value.strip())
    return mapping


def source_keys(raw: Any, where: str) -> dict[str, Any]:
    """A source's mapping with its keys under their ``SourceConfig`` names; an unknown key is a ``UsageError``
    naming ``where`` and the closest known key."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: a source is a mapping of option: value (name: code, input: code/*.jsonl)")
    keys: dict[str, Any] = {}
    for key, value in raw.items():
        name = _KEYS.get(option_key(str(key)))
        if name is None:
            close = closest(str(key), _KEYS)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise UsageError(f"{where}: unknown source option {key!r}{hint}; a source takes "
                             f"{', '.join(sorted(_KEYS))}")
        if name in keys:
            raise UsageError(f"{where}: {key!r} sets the source's {name} a second time")
        keys[name] = value
    if "name" not in keys:
        raise UsageError(f"{where}: the source has no name (name: code)")
    return keys


def _optional_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _inputs(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list | tuple) else (str(value),)


def _role_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else parse_role_map(str(value))


_CONVERT: dict[str, Callable[[Any], Any]] = {
    _INPUTS: _inputs, "weight": float, "min_target_tokens": int, "max_source_tokens": _optional_int,
    "role_map": _role_map,
}


def make_source(raw: Any, defaults: argparse.Namespace, where: str) -> SourceConfig:
    """One ``SourceConfig``: the source's own options, the top-level ones (``defaults``) for the rest."""
    keys = source_keys(raw, where)
    values: dict[str, Any] = {}
    for name in ("name", "weight", *PER_SOURCE_OPTIONS):
        if name in keys:
            value = keys[name]
            try:
                values[name] = None if value is None else _CONVERT.get(name, str)(value)
            except (TypeError, ValueError) as error:
                raise UsageError(f"{where}: {name} {value!r} is not valid ({error})") from None
        elif name == _INPUTS:
            values[name] = ()
        elif name == "role_map":
            values[name] = _role_map(getattr(defaults, name) or "")
        elif name != "weight":
            values[name] = getattr(defaults, name)
    if values.get("template") == "chat" and "train_on" not in keys and defaults.train_on == "target":
        values["train_on"] = "assistant"
    return SourceConfig(**values)


def sources_from_args(args: argparse.Namespace) -> tuple[SourceConfig, ...]:
    """The run's sources (``args.sources``: from ``--source`` or a job file), the top-level options their
    defaults; with sources, the top-level ``--input`` and ``--template`` must not be given."""
    raw = getattr(args, "sources", None) or []
    sources = tuple(make_source(item, args, f"source {index + 1}") for index, item in enumerate(raw))
    recorded = [pattern for source in sources for pattern in source.inputs]  # a manifest's config has both
    if sources and args.input and list(args.input) != recorded:
        raise UsageError("--input and sources: with sources, each source names its own inputs (input=...); "
                         "drop the top-level --input")
    if sources and args.template != "plain":
        raise UsageError("--template and sources: with sources, each source names its own template "
                         "(template=...); drop the top-level --template")
    return sources
