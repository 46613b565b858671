"""``seqpack watch``: a long-running service that appends a generation to a dataset whenever new input files have
settled. It only decides *when*; each generation is one ``pipeline.run.run`` with ``--append``, which takes the
output lock, reads just the settled files and commits them, or commits nothing.

    watch(config, beam_args, WatchOptions(interval=60, settle=30))

The watcher keeps no state of its own: what the dataset consumed is in its manifest, so a watcher restarted after
a crash, a ``kill -9`` or a reboot carries on from the last committed generation (a killed run's files and lock are
cleared by the next run, ``pipeline.commit`` and ``pipeline.lock``). SIGTERM or Ctrl-C between generations ends it
at once with exit code 0; during a generation the run is abandoned (nothing committed: the next start builds that
batch again) and the process ends with 143 or 130, as ``seqpack run`` does.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from apache_beam.io.filesystems import FileSystems

from seqpack.config import RunConfig
from seqpack.errors import RunFailedError, UsageError
from seqpack.generations import FoundFile, plan_inputs
from seqpack.inputs.records import InputError, NoInputFound
from seqpack.pipeline.appends import check_can_append
from seqpack.pipeline.commit import committed_manifest
from seqpack.pipeline.failures import STOP_SIGNALS, RunInterrupted, crash_summary
from seqpack.pipeline.lock import LockBusyError
from seqpack.pipeline.run import UpToDate, run
from seqpack.pipeline.runners import pipeline_options
from seqpack.schemas import WATCH_STATUS_NAME, Manifest
from seqpack.transforms.hash_inputs import file_metadata, sha256_file
from seqpack.transforms.write import write_atomically
from seqpack.watching import (
    Backlog,
    Seen,
    WatchStatus,
    commit_reason,
    find_backlog,
    generation_line,
    observe,
    poll_line,
    tokens_per_byte,
)

_log = logging.getLogger("seqpack")


@dataclass(frozen=True)
class WatchOptions:
    """How often to look, and when new files make a generation (``seqpack watch --help``)."""

    interval: float = 60.0
    """Seconds between polls."""
    settle: float = 30.0
    """A file is read once unchanged (size and modification time) this many seconds."""
    min_new_tokens: int = 0
    """Wait until the settled files hold about this many tokens (``watching.tokens_per_byte``)..."""
    max_wait: float = 3600.0
    """...or until the oldest of them has waited this many seconds."""
    once: bool = False
    """Poll once (committing if due), then exit: for cron and tests."""
    status_file: str | None = None
    """Where to keep the status JSON; default ``OUT/.seqpack-watch.json``."""

    def check(self) -> None:
        for name, value in (("--interval", self.interval), ("--settle", self.settle), ("--max-wait", self.max_wait),
                            ("--min-new-tokens", self.min_new_tokens)):
            if value < 0:
                raise UsageError(f"{name} must be 0 or more, got {value}")


def status_path(config: RunConfig, options: WatchOptions) -> str:
    return options.status_file or FileSystems.join(config.output, WATCH_STATUS_NAME)


def watch(config: RunConfig, beam_args: list[str] | None = None, options: WatchOptions = WatchOptions(), *,
          verbose: bool = False, say: Callable[[str], None] | None = None) -> int:
    """Poll ``config.inputs`` and append a generation to ``config.output`` for every batch of settled new files,
    until a signal (or, with ``options.once``, after one poll). Returns the exit code: 0 when stopped between
    generations; a signal during a generation raises :class:`RunInterrupted` (its ``exit_code``: 143, 130)."""
    if config.overwrite:
        raise UsageError("seqpack watch only appends: drop --overwrite/--rebuild (run `seqpack run --rebuild` once "
                         "to start the dataset over, then watch it)")
    options.check()
    config = replace(config, append=True)
    config.validate()
    beam_args = list(beam_args or [])
    FileSystems.set_options(pipeline_options(beam_args)[0])  # listing gs:// or s3:// inputs needs them now
    previous = committed_manifest(config.output)
    if previous is not None:  # a setting the dataset was not built with fails now, not at the first new file
        check_can_append(previous, config, previous.tokenizer)  # (the tokenizer itself: at each run)
    watcher = _Watcher(config, beam_args, options, verbose, say or _say)
    with _stop_signals() as stopping:
        return watcher.loop(stopping)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Stopping:
    """Set by SIGTERM or Ctrl-C while the watcher is between generations (a run installs its own handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self.event.set()

    def name(self) -> str:
        return "SIGTERM" if self.signum == signal.SIGTERM else "Ctrl-C (SIGINT)"


@contextmanager
def _stop_signals() -> Iterator[_Stopping]:
    stopping = _Stopping()
    if threading.current_thread() is not threading.main_thread():
        yield stopping
        return
    previous = {signum: signal.signal(signum, stopping.handle) for signum in STOP_SIGNALS}
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Watcher:
    def __init__(self, config: RunConfig, beam_args: list[str], options: WatchOptions, verbose: bool,
                 say: Callable[[str], None]) -> None:
        self.config = config
        self.beam_args = beam_args
        self.options = options
        self.verbose = verbose
        self.say = say
        self.status = WatchStatus()
        self.status_path = status_path(config, options)
        self.seen: dict[str, Seen] = {}
        self.stopping = _Stopping()
        self.hashes: dict[tuple[str, int, float], str] = {}

    def loop(self, stopping: _Stopping) -> int:
        self.stopping = stopping
        self.say(f"watch: watching {', '.join(self.config.inputs)} → {self.config.output} (every "
                 f"{self.options.interval:g} s, files settle after {self.options.settle:g} s; status in "
                 f"{self.status_path})")
        failed = False
        while not stopping.event.is_set():
            try:
                failed = not self.poll()
            except RunInterrupted:
                self._write_status("stopping")
                raise
            except UsageError:
                raise  # the job cannot work as configured (a changed setting, an unreadable manifest): stop
            except Exception as error:  # noqa: BLE001 - a network blip listing a bucket: a service keeps going
                _log.debug("the poll failed", exc_info=True)
                self._failed(f"poll failed: {crash_summary(error)}; trying again at the next poll")
                failed = True
            if self.options.once:
                break
            stopping.event.wait(self.options.interval)
        if stopping.signum is not None:
            self.say(f"watch: stopped by {stopping.name()} between generations")
        self._write_status("stopped")
        return 1 if failed and self.options.once else 0  # cron learns that its one generation failed

    # ------------------------------------------------------------------------------------------ a poll

    def poll(self) -> bool:
        """List, decide, maybe run a generation; False if a generation (or the poll) failed."""
        now = time.time()
        found, patterns, problems = self._list_inputs()
        manifest = committed_manifest(self.config.output)
        by_path = {f.path: f for f in found}
        self.hashes = {key: digest for key, digest in self.hashes.items() if key[0] in by_path}
        plan = plan_inputs(found, manifest.generations if manifest else [],
                           sha256_of=lambda path: self._sha256(by_path[path]))
        self.seen = observe(self.seen, plan.new, now)
        backlog = find_backlog(self.seen, now, settle=self.options.settle)
        per_byte = tokens_per_byte(manifest)
        self.status.record_poll(now, backlog, per_byte)
        self.say(poll_line(self.status.polls, backlog, per_byte, changed=len(plan.changed), problems=problems))
        reason = commit_reason(backlog, per_byte, min_new_tokens=self.options.min_new_tokens,
                               max_wait=self.options.max_wait, now=now)
        if reason is None or self.stopping.event.is_set():  # a stop asked for during the poll: start nothing
            self._write_status("idle")
            return True
        return self._generate(backlog, _patterns_of(backlog, patterns, self.config.inputs), reason)

    def _list_inputs(self) -> tuple[list[FoundFile], dict[str, str], int]:
        """Every file the inputs match now, with the pattern that matched it; a pattern that matches nothing yet
        is no error here (files are still to come), one that cannot be listed is a warning, every poll."""
        from seqpack.transforms.read import resolve_inputs

        by_pattern: dict[str, str] = {}
        problems = 0
        for pattern in self.config.inputs:
            try:
                files = resolve_inputs([pattern])
            except NoInputFound:
                continue
            except InputError as error:
                problems += 1
                _log.warning("input %s: %s (left out of this poll)", pattern, error)
                continue
            for input_file in files:
                by_pattern.setdefault(input_file.path, pattern)
        metadata = file_metadata(sorted(by_pattern))
        found = [FoundFile(path, *metadata[path]) for path in sorted(metadata)]
        return found, by_pattern, problems

    def _sha256(self, found: FoundFile) -> str:
        """A file's hash, kept while its size and time stay the same: a poll would otherwise hash again every new
        file whose size equals a consumed one's (``generations.plan_inputs``)."""
        key = (found.path, found.size, found.modified)
        if key not in self.hashes:
            self.hashes[key] = sha256_file(found.path)[0]
        return self.hashes[key]

    # ------------------------------------------------------------------------------------ a generation

    def _generate(self, backlog: Backlog, patterns: list[str], reason: str) -> bool:
        only = backlog.files()
        self._write_status("running")
        started = time.monotonic()
        try:
            result = run(replace(self.config, inputs=patterns), self.beam_args, only=only, verbose=self.verbose)
        except LockBusyError as error:
            self._failed(f"not started: {error}; trying again at the next poll")
            return True  # another run is writing: not a failure of this one
        except RunInterrupted:
            raise
        except UsageError as error:
            if not isinstance(error.__cause__, InputError):
                raise  # the job cannot work as configured (a tokenizer that does not load, ...): stop
            # the inputs changed since this poll listed them (a file moved away, a file in a format seqpack does
            # not read appeared): the next poll lists them again
            self._failed(f"not started: {error}; trying again at the next poll")
            return False
        except RunFailedError as error:
            self._failed(f"generation failed, nothing committed: {error}; trying again at the next poll")
            return False
        except Exception as error:  # noqa: BLE001 - a service keeps going; the traceback is in the log
            _log.exception("the generation failed")
            self._failed(f"generation failed, nothing committed: {crash_summary(error)}; trying again at the "
                         "next poll")
            return False
        seconds = time.monotonic() - started
        if isinstance(result, UpToDate) or not isinstance(result, tuple):
            self.say("watch: nothing committed: the settled files changed since (they settle again) or hold "
                     "content already consumed")
            self._write_status("idle")
            return True
        manifest, stats = result
        self._committed(manifest, stats, seconds, reason)
        return True

    def _committed(self, manifest: Manifest, stats: Mapping[str, Any], seconds: float, reason: str) -> None:
        """Say what the generation holds; what it consumed leaves the backlog."""
        generation = manifest.generations[-1]
        tokens = sum(s.tokens for s in generation.splits.values())
        examples = sum(stats["examples_by_split"].values())
        self.status.last_generation = {
            "id": generation.id, "committed_at": generation.committed_at, "files": [c.path for c in generation.inputs],
            "examples": examples, "tokens": tokens,
        }
        self.status.last_error = None
        for consumed in generation.inputs:
            self.seen.pop(consumed.path, None)
        self.status.record_backlog(find_backlog(self.seen, time.time(), settle=self.options.settle),
                                   tokens_per_byte(manifest))
        self.say(generation_line(generation.id, len(generation.inputs), examples, tokens, seconds, reason))
        self._write_status("idle")

    def _failed(self, message: str) -> None:
        """Say it and keep it in the status; the watcher goes on."""
        self.status.last_error = message
        self.say(f"watch: {message}")
        self._write_status("idle")

    def _write_status(self, state: str) -> None:
        """Best effort: a status that cannot be written (a full disk, a flaky bucket) is said, not fatal."""
        self.status.state = state
        try:
            write_atomically(self.status_path, self.status.to_json())
        except Exception as error:  # noqa: BLE001
            _log.warning("could not write the status file %s: %s", self.status_path, error)


def _patterns_of(backlog: Backlog, patterns: Mapping[str, str], inputs: list[str]) -> list[str]:
    """The input patterns that matched the settled files, in the order given: the run lists only these (a pattern
    that matches nothing would stop it), and reads just the settled files among them."""
    wanted = {patterns[path] for path in backlog.settled}
    return [pattern for pattern in inputs if pattern in wanted]
