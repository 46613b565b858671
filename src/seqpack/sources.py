"""The sources of a mixture: several inputs in one run, each with its own fields, template, labels and filters.

A run without sources reads its top-level ``--input`` with the top-level template (today's run, unchanged). A run
with sources reads each source's inputs with that source's options, tags every example with the source's id (its
index in ``RunConfig.sources``), and packs all of them together. One tokenizer and one ``max_length`` serve the
whole mixture. Pure: no Beam, no torch.

    >>> code = SourceConfig(name="code", inputs=("code/*.jsonl",), template="alpaca", weight=0.3)
    >>> code.is_chat, code.train_on
    (False, 'target')
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from seqpack.errors import UsageError

SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A source's name: it appears in stats.json, the manifest, rejected records and ``inspect --source``."""
WEIGHT_BY = ("tokens", "examples")
"""What a source's ``weight`` is a share of (``--weight-by``)."""
MAX_SOURCES = 1 << 15
"""Source ids are int16 in the spill files and shards."""


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """One source of a mixture: where its records are, how they become examples, and its share (``weight``).

    The per-source options have the names (and defaults) of ``RunConfig``'s; a job file's top-level options are the
    defaults of every source (``cli.sources`` fills them in), so a resolved ``SourceConfig`` is complete.
    """

    name: str
    inputs: tuple[str, ...]
    template: str = "plain"
    source_field: str = "source"
    target_field: str = "target"
    separator: str = " = "
    chat_style: str = "auto"
    messages_field: str | None = None
    role_map: dict[str, str] = field(default_factory=dict)
    system: str | None = None
    train_on: str = "target"
    min_target_tokens: int = 0
    max_source_tokens: int | None = None
    weight: float = 1.0
    """The source's share of the mixture, relative to the others' (``mixing`` turns it into repeats)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if self.is_chat and self.train_on == "target":  # as RunConfig: the pairs default means "the answers"
            object.__setattr__(self, "train_on", "assistant")

    @property
    def is_chat(self) -> bool:
        return self.template == "chat"

    def run_options(self) -> dict[str, Any]:
        """The ``RunConfig`` fields this source sets (everything but its name and weight)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "weight")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PER_SOURCE_OPTIONS = tuple(f.name for f in fields(SourceConfig) if f.name not in ("name", "weight"))
"""The ``RunConfig`` options a source may set for itself; the top-level ones are its defaults."""


def check_sources(sources: tuple[SourceConfig, ...]) -> None:
    """Names unique and safe, weights positive, inputs given: raise ``UsageError`` saying what to change."""
    if len(sources) > MAX_SOURCES:
        raise UsageError(f"a mixture has at most {MAX_SOURCES} sources, got {len(sources)}")
    seen: set[str] = set()
    for index, source in enumerate(sources):
        where = f"source {index + 1} ({source.name!r})"
        if not isinstance(source.name, str) or not SOURCE_NAME.fullmatch(source.name):
            raise UsageError(f"{where}: a source name is 1-64 letters, digits, '_', '.' or '-', starting with a "
                             "letter or digit (e.g. name=code)")
        if source.name in seen:
            raise UsageError(f"{where}: two sources are named {source.name!r}; give each source its own name")
        seen.add(source.name)
        if isinstance(source.weight, bool) or not isinstance(source.weight, int | float) or not source.weight > 0:
            raise UsageError(f"{where}: weight must be a number above 0, got {source.weight!r} (e.g. weight=0.3)")
        if not source.inputs:
            raise UsageError(f"{where}: no input: give the source its files (input=code/*.jsonl)")


def source_of_dict(raw: dict[str, Any]) -> SourceConfig:
    """A ``SourceConfig`` from its ``to_dict`` (as a manifest records it)."""
    return SourceConfig(**{**raw, "inputs": tuple(raw.get("inputs", ())), "role_map": dict(raw.get("role_map") or {})})
