"""The errors a run ends with, each with its exit code (see ``seqpack.cli``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(ValueError):
    """A bad flag, input, tokenizer or output location, found before any work starts (exit code 2)."""


class RunFailedError(RuntimeError):
    """The run started but could not finish; nothing was committed (exit code 1). The message says why."""


def option_key(name: str) -> str:
    """An option's name as a job file or a flag may spell it: no dashes in front, dashes for underscores."""
    return name.strip().lstrip("-").replace("_", "-")


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known option most like ``name`` (dashes and underscores alike), for a "did you mean" hint."""
    by_key = {}
    for option in known:
        by_key.setdefault(option_key(option), option)
    close = difflib.get_close_matches(option_key(name), list(by_key), n=1)
    return by_key[close[0]] if close else None
