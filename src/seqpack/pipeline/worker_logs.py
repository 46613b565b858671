"""Local runs print seqpack's lines only: the workers' and Beam's log lines go to a file instead.

Beam's local runner starts its workers as child processes that inherit the driver's stderr, and each worker
sets up its own logging (``logging.basicConfig`` at import), so a run would print some forty lines of INFO and
WARNING about gRPC channels and optional cloud clients. While the pipeline runs, file descriptor 2 (which the
workers inherit) points at a log file, Beam's driver-side loggers write there too, and seqpack's own output
(progress, warnings) goes to the terminal through a copy of the original stderr. The file is removed when the
run succeeds; when it fails with an unexpected error, the driver's traceback is added to it, the file is kept,
and the run prints one line: the error and where the log is. ``seqpack run --verbose`` turns all
of this off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class WorkerLog:
    """The file that holds the workers' output for one run."""

    path: str

    def append_traceback(self, error: BaseException) -> None:
        """Keep the driver's traceback of a failed run with the workers' lines, for a bug report."""
        with contextlib.suppress(OSError), open(self.path, "a", encoding="utf-8", errors="replace") as handle:
            handle.write("\n--- the driver's traceback ---\n")
            handle.write("".join(traceback.format_exception(error)))

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _thread_error_to_log(log_path: str, args: threading.ExceptHookArgs) -> None:
    """A Beam thread that dies (its worker was stopped) writes its traceback to the log, if it still exists."""
    if not os.path.exists(log_path):
        return
    with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8", errors="replace") as handle:
        handle.write(f"--- thread {args.thread.name if args.thread else '?'} ---\n")
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=handle)


def _is_real_stderr(stream: Any) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO, a closed stream
        return False


@contextlib.contextmanager
def capture_worker_output(*, enabled: bool) -> Iterator[WorkerLog | None]:
    """Send the workers' stderr and Beam's log records to a file for the duration of the block."""
    if not enabled:
        yield None
        return
    sys.stderr.flush()
    log_fd, log_path = tempfile.mkstemp(prefix="seqpack-workers-", suffix=".log")
    saved_fd = os.dup(2)
    terminal: TextIO = os.fdopen(os.dup(saved_fd), "w", buffering=1, errors="backslashreplace")
    old_stderr = sys.stderr
    redirected = [(h, h.stream) for h in logging.getLogger().handlers
                  if isinstance(h, logging.StreamHandler) and _is_real_stderr(h.stream)]
    beam = logging.getLogger("apache_beam")
    beam_state = (beam.propagate, beam.level)
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    os.dup2(log_fd, 2)
    if _is_real_stderr(old_stderr):
        sys.stderr = terminal
    for handler, _ in redirected:
        handler.setStream(terminal)
    beam.addHandler(to_file)
    beam.propagate, beam.level = False, logging.INFO
    previous_hook = threading.excepthook
    threading.excepthook = functools.partial(_thread_error_to_log, log_path)
    stopped = False
    try:
        yield WorkerLog(log_path)
    except BaseException:
        stopped = True  # Beam's threads die in the next moments: their tracebacks belong in the log, not here
        raise
    finally:
        if not stopped:
            threading.excepthook = previous_hook
        beam.removeHandler(to_file)
        to_file.close()
        beam.propagate, beam.level = beam_state
        terminal.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(log_fd)
        for handler, stream in redirected:
            handler.setStream(stream)
        sys.stderr = old_stderr
        terminal.close()
