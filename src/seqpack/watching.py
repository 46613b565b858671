"""When ``seqpack watch`` commits a generation: which new input files have settled, how much they hold, and
whether that is worth a generation now. Pure functions over what the filesystem lists; the loop that polls,
runs and sleeps is ``pipeline.watch``.

    seen = observe(seen, unconsumed, now)              # remembers since when each file is unchanged
    backlog = find_backlog(seen, now, settle=30)       # settled (ready) and settling (still being written)
    reason = commit_reason(backlog, estimate, min_new_tokens=0, max_wait=3600, now=now)   # None: wait

A file is *settled* once its size and modification time have not changed for ``settle`` seconds. The clock starts
at the file's modification time when the watcher first sees it (so a restarted watcher, or ``--once`` from cron,
does not wait again for files written long ago), and again whenever the watcher sees the file change.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from seqpack.generations import FoundFile
from seqpack.schemas.manifest import Manifest

BYTES_PER_TOKEN_GUESS = 4.0
"""Tokens in a byte of input before the dataset has any: about 4 bytes a token for English text and BPE."""


@dataclass(frozen=True)
class Seen:
    """A new input file as the watcher last listed it, and since when it is unchanged."""

    size: int
    modified: float
    stable_since: float


def observe(seen: Mapping[str, Seen], found: Iterable[FoundFile], now: float) -> dict[str, Seen]:
    """What the watcher knows after listing ``found`` at ``now``: a file seen for the first time counts as unchanged
    since its modification time (never later than now: a clock ahead of ours), a file whose size or time changed
    starts over, a file no longer listed (consumed, moved, deleted) is forgotten."""
    known: dict[str, Seen] = {}
    for found_file in found:
        before = seen.get(found_file.path)
        if before is not None and (before.size, before.modified) == (found_file.size, found_file.modified):
            known[found_file.path] = before
        elif before is not None:
            known[found_file.path] = Seen(found_file.size, found_file.modified, now)
        else:
            known[found_file.path] = Seen(found_file.size, found_file.modified, min(found_file.modified, now))
    return known


@dataclass(frozen=True)
class Backlog:
    """The new input files, split into those ready to read and those still being written."""

    settled: dict[str, Seen] = field(default_factory=dict)
    settling: dict[str, Seen] = field(default_factory=dict)
    oldest_stable_since: float | None = None
    """When the longest-settled file last changed (None when none has settled)."""

    @property
    def settled_bytes(self) -> int:
        return sum(s.size for s in self.settled.values())

    @property
    def bytes(self) -> int:
        return self.settled_bytes + sum(s.size for s in self.settling.values())

    def files(self) -> dict[str, tuple[int, float]]:
        """The settled files as ``pipeline.run.run(only=...)`` takes them: ``path -> (size, modified)``."""
        return {path: (s.size, s.modified) for path, s in sorted(self.settled.items())}


def find_backlog(seen: Mapping[str, Seen], now: float, *, settle: float) -> Backlog:
    """Sort the new files into settled (unchanged for ``settle`` seconds) and settling."""
    settled = {path: s for path, s in seen.items() if now - s.stable_since >= settle}
    settling = {path: s for path, s in seen.items() if path not in settled}
    oldest = min((s.stable_since for s in settled.values()), default=None)
    return Backlog(settled=settled, settling=settling, oldest_stable_since=oldest)


def tokens_per_byte(manifest: Manifest | None) -> float:
    """How many tokens a byte of input has made in this dataset so far (every split's tokens over the bytes of
    every input consumed), or ``1 / BYTES_PER_TOKEN_GUESS`` for a dataset with none yet."""
    if manifest is None:
        return 1.0 / BYTES_PER_TOKEN_GUESS
    consumed = sum(c.size for g in manifest.generations for c in g.inputs)
    tokens = sum(s.tokens for s in manifest.splits.values())
    if consumed <= 0 or tokens <= 0:
        return 1.0 / BYTES_PER_TOKEN_GUESS
    return tokens / consumed


def commit_reason(backlog: Backlog, per_byte: float, *, min_new_tokens: int, max_wait: float,
                  now: float) -> str | None:
    """Why to commit the settled files now, or None to wait for more: enough of them (``min_new_tokens``,
    estimated at ``per_byte`` tokens a byte), or the oldest has waited ``max_wait`` seconds (a trickle lands too)."""
    if not backlog.settled:
        return None
    estimate = round(backlog.settled_bytes * per_byte)
    if estimate >= min_new_tokens:
        return "enough new tokens" if min_new_tokens else "new files settled"
    assert backlog.oldest_stable_since is not None
    if now - backlog.oldest_stable_since >= max_wait:
        return f"the oldest file waited {max_wait:,.0f} s"
    return None


def poll_line(poll: int, backlog: Backlog, per_byte: float, *, changed: int = 0, problems: int = 0) -> str:
    """The one line a poll logs: ``watch: poll 12: 3 new files (2 settled, 1 settling), backlog ~45,000 tokens``."""
    count = len(backlog.settled) + len(backlog.settling)
    line = (f"watch: poll {poll}: {_plural(count, 'new file')} ({len(backlog.settled):,} settled, "
            f"{len(backlog.settling):,} settling), backlog ~{round(backlog.bytes * per_byte):,} tokens")
    if changed:
        line += f"; {_plural(changed, 'consumed file')} changed since (not read again: seqpack status lists them)"
    if problems:
        line += f"; {_plural(problems, 'input')} could not be listed (see the warnings)"
    return line


def generation_line(generation: int, files: int, examples: int, tokens: int, seconds: float, reason: str) -> str:
    """The one line a committed generation logs."""
    return (f"watch: committed generation {generation}: {_plural(files, 'file')}, {_plural(examples, 'example')}, "
            f"{tokens:,} tokens in {seconds:.1f} s ({reason})")


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


# ------------------------------------------------------------------------------------------------ status


@dataclass
class WatchStatus:
    """What ``--status-file`` holds (JSON), for a dashboard, a liveness probe or a person: rewritten atomically
    after every poll and around every generation.

    ``state`` is ``idle`` (sleeping between polls), ``running`` (a generation is being built), ``stopping`` (a
    signal came during a generation, which is being abandoned) or ``stopped`` (the watcher has exited). Times are
    UTC, ISO 8601, as the manifest's ``committed_at``. A watcher killed outright leaves its last state: compare
    ``pid`` and ``last_poll`` with what is running."""

    pid: int = field(default_factory=os.getpid)
    state: str = "idle"
    started_at: str = field(default_factory=lambda: utc(time.time()))
    polls: int = 0
    last_poll: str | None = None
    last_generation: dict[str, Any] | None = None
    """``{"id", "committed_at", "files", "examples", "tokens"}`` of the last generation this watcher committed."""
    backlog: dict[str, Any] = field(default_factory=lambda: {"files": 0, "settled": 0, "bytes": 0,
                                                             "estimated_tokens": 0})
    last_error: str | None = None
    """The last generation that failed (cleared by the next one that commits): it is tried again next poll."""

    def record_poll(self, now: float, backlog: Backlog, per_byte: float) -> None:
        self.polls += 1
        self.last_poll = utc(now)
        self.record_backlog(backlog, per_byte)

    def record_backlog(self, backlog: Backlog, per_byte: float) -> None:
        self.backlog = {"files": len(backlog.settled) + len(backlog.settling), "settled": len(backlog.settled),
                        "bytes": backlog.bytes, "estimated_tokens": round(backlog.bytes * per_byte)}

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()
