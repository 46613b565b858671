"""The errors a run ends with, each with its exit code (see ``seqpack.pipeline.cli``)."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad flag, input, tokenizer or output location, found before any work starts (exit code 2)."""


class RunFailedError(RuntimeError):
    """The run started but could not finish; nothing was committed (exit code 1). The message says why."""
