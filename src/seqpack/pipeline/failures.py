"""How a run that cannot finish ends: a one-line reason instead of a traceback, and nothing left behind.

The driver turns SIGTERM (what a scheduler, ``timeout`` or Kubernetes sends) into an exception, so the same
clean-up runs as for Ctrl-C or a failed pipeline: the run's files and scratch space are removed and the output
lock is released (``pipeline.run``). Errors the user can act on (a full disk, a read-only filesystem) become
:class:`RunFailedError` with what to do; anything else keeps its traceback, which is a bug to report.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from seqpack.errors import RunFailedError

_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: ("No space left on device", "the disk is full"),
    errno.EDQUOT: ("Disk quota exceeded", "the disk quota is exhausted"),
    errno.EROFS: ("Read-only file system", "the output is on a read-only filesystem"),
}


class RunInterrupted(RunFailedError):
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal number, as a shell reports it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Terminated(BaseException):
    """Raised in the main thread by the SIGTERM handler; a BaseException so that no ``except Exception``
    in between swallows it (Beam may still wrap it: :class:`Stop` remembers the signal either way)."""


STOP_EXCEPTIONS = (_Terminated, KeyboardInterrupt)
"""What a stop signal raises in the main thread inside :func:`stop_on_termination`."""

GRACE_SECONDS = 15.0
"""After a stop, how long the run may take to unwind before a watchdog cleans up and ends the process: Beam's
local runner can keep the main thread waiting on workers that the signal killed."""


class Stop:
    """The signal that stopped the run, if any: set by the handler, read when the run's error is reported.

    ``cleanup`` (set by the run once it has something to clean) is what the watchdog does if the run has not
    ended ``GRACE_SECONDS`` after the signal."""

    def __init__(self, grace_seconds: float = GRACE_SECONDS) -> None:
        self.signum: int | None = None
        self.cleanup: Callable[[], None] | None = None
        self.grace_seconds = grace_seconds
        self._watchdog: threading.Timer | None = None

    def arm(self, signum: int) -> None:
        """Start the watchdog (once): from here the run has ``grace_seconds`` to end by itself."""
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.grace_seconds, self.force_exit, args=(signum,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def force_exit(self, signum: int) -> None:
        """Clean up from this thread and end the process with the signal's exit code."""
        if self.cleanup is not None:
            with contextlib.suppress(BaseException):
                self.cleanup()
        with contextlib.suppress(BaseException):
            print(f"seqpack: failed: {stop_message(signum, None)}", file=sys.stderr, flush=True)
        os._exit(128 + signum)


def stop_message(signum: int, output: str | None) -> str:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
    where = f", {output} is as it was before the run" if output else ", and the run's files were removed"
    return f"stopped by {name}; nothing was committed{where}"


@contextmanager
def stop_on_termination() -> Iterator[Stop]:
    """Within the block, SIGTERM and Ctrl-C stop the run by an exception in the main thread, so the run cleans
    up (only possible when called from the main thread; elsewhere the signals keep their handlers).

    A signal sent to the process may be delivered to any thread, and Python runs its handler only when the main
    thread next runs, which it may never do while it waits on Beam's workers. So a watcher thread, woken through
    ``signal.set_wakeup_fd``, sends the signal again to the main thread itself, and arms a watchdog."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        if stop.signum is not None:  # the watcher's copy of the same signal, or a second Ctrl-C: the run is ending
            return
        stop.signum = signum
        stop.arm(signum)
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {signum: signal.signal(signum, terminate) for signum in STOP_SIGNALS}
    quiet = _QuietAfterStop(stop)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    with _SignalWatcher(stop):
        try:
            yield stop
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for handler in handlers:
                handler.removeFilter(quiet)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _SignalWatcher:
    """Wakes the main thread for a stop signal that another thread received (see ``stop_on_termination``)."""

    def __init__(self, stop: Stop) -> None:
        self.stop = stop
        self.main = threading.main_thread().ident
        self.reader, self.writer = socket.socketpair()
        self.thread = threading.Thread(target=self._watch, name="seqpack-signal-watcher", daemon=True)
        self.previous_fd = -1

    def __enter__(self) -> _SignalWatcher:
        self.writer.setblocking(False)
        self.previous_fd = signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        self.thread.start()
        return self

    def _watch(self) -> None:
        forwarded = False
        while data := self.reader.recv(64):
            for signum in data:
                if signum in STOP_SIGNALS and not forwarded and self.main is not None:
                    forwarded = True
                    self.stop.arm(signum)
                    signal.pthread_kill(self.main, signum)

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self.previous_fd)
        self.writer.close()  # ends the watcher's recv
        self.thread.join(timeout=5)
        self.reader.close()


class _QuietAfterStop(logging.Filter):
    """Once the run is stopped, Beam's error reports of the bundle it interrupted are noise: the run's own
    one-line message says what happened."""

    def __init__(self, stop: Stop) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        return self.stop.signum is None or not record.name.startswith("apache_beam")


def as_run_failure(error: BaseException, output: str, stop: Stop | None = None) -> BaseException:
    """The exception to raise for ``error``: a clear :class:`RunFailedError` where one fits, else ``error``."""
    signum = stop.signum if stop is not None else None
    if signum is None and isinstance(error, (_Terminated, KeyboardInterrupt)):
        signum = signal.SIGTERM if isinstance(error, _Terminated) else signal.SIGINT
    if signum is not None:
        return RunInterrupted(stop_message(signum, output), 128 + signum)
    environment = _environment_error(error)
    if environment is not None:
        return RunFailedError(
            f"{environment} while the run was writing (output {output}). Nothing was committed and the run's "
            "temporary files were removed: free space or choose another --output, then run it again."
        )
    return error


def _environment_error(error: BaseException) -> str | None:
    """What went wrong, if ``error`` (or what caused it, also inside a worker's traceback text) is one of
    ``_ENVIRONMENT_ERRORS``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ENVIRONMENT_ERRORS:
            return _ENVIRONMENT_ERRORS[current.errno][1]
        text = str(current)
        for marker, meaning in _ENVIRONMENT_ERRORS.values():
            if marker in text:
                return meaning
        current = current.__cause__ or current.__context__
    return None


def crash_summary(error: BaseException) -> str:
    """One line for an unexpected error: the innermost exception line of the (possibly worker-side) traceback,
    which is what Beam puts last in the message of the error it raises in the driver."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "Traceback", "^", "During handling", "The above exception")):
            return line if ":" in line else f"{type(error).__name__}: {line}"
    return type(error).__name__
