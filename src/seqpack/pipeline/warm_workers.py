"""Beam's local worker processes, started while the driver is still getting ready.

On the local runner a run's fixed cost is mostly Python start-up and teardown. Beam starts its worker processes
only once the pipeline runs; each then imports all of ``apache_beam`` and seqpack's transforms (about 2 CPU s)
before it asks for work, and at the end each spends most of a second tearing its modules down while the driver
waits for it. Meanwhile the driver has spent its first seconds (imports, loading the tokenizer, checking the fast
encoder) on one core, with the others idle.

So once its checks pass, a local multi-process run starts a server (``warm_local_runner``) that imports what a
worker needs, loads the fast encoder the driver names (``preload_for_workers``), once, and forks one *warm* process
per worker, which waits. When Beam starts a worker, the command it runs is ``pipeline.worker_launcher``, which
hands the worker's part (environment, directory, standard streams) to a warm process; that process checks that
its environment is the one it was started in, becomes the worker (``sdk_worker_main``), and ends with
``os._exit`` as soon as the worker returns. Anything unusual falls back to Beam's own cold start, so the output is
the same either way; ``SEQPACK_WARM_WORKERS=0`` turns this off.

Lifetimes: an idle warm process ends when the driver closes the server's stdin (or dies); an adopted one ends
when its launcher's connection closes; the server, once its warm processes have ended. The pool kills what is
left when the run ends, for whatever reason.

    with warm_local_runner(options, runner) as runner:
        beam.Pipeline(runner=runner, options=options) ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from seqpack.pipeline import worker_launcher
from seqpack.pipeline.worker_launcher import ADOPTED, REFUSED, SERVER_PID_FILE, SLOTS_FILE

_LOG = logging.getLogger("seqpack")
DISABLE_VARIABLE = "SEQPACK_WARM_WORKERS"
"""``SEQPACK_WARM_WORKERS=0`` starts Beam's workers cold, as Beam does."""
WORKER_MODULES = (
    "apache_beam.runners.worker.sdk_worker_main",
    "seqpack.pipeline.build",
    "seqpack.pipeline.commit_step",
    "pyarrow.parquet",
    "tokenizers",
    "fastokens",
)
"""What a worker imports anyway, once it unpickles seqpack's steps: imported while the driver gets ready."""
PRELOAD_TOKENIZER = "tokenizer_json"
"""The key of the driver's one word to the server, on its stdin: the local path of the workers' tokenizer JSON."""
IDLE_SECONDS = 3600.0
"""An idle warm process that hears nothing from the driver for this long ends: a safety net, as the driver
closes the pool at the end of every run."""
COLD_COMMAND = (sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main")
PER_WORKER_VARIABLES = frozenset({
    "CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR", "PIPELINE_OPTIONS", "WORKER_ID",
    "PWD", "OLDPWD", "SHLVL", "_", "SEQPACK_PROGRESS_DIR",
})
"""The variables in which a worker's environment may differ from the one its warm process imported its modules
under: what Beam and the shell it runs the command with set for each worker, and what seqpack sets for the run
(read when the steps run, not when they are imported: ``transforms.progress_counts.PROGRESS_DIR_ENV``, spelled
out here because this module imports nothing heavy before it listens; a test holds the two equal)."""
_MAX_SOCKET_PATH = 100
"""Unix socket paths are limited to 108 bytes on Linux (104 on macOS)."""


@dataclass
class WarmPool:
    """A server of warm processes waiting to become workers, and the directory through which launchers claim
    them. The server imports what a worker needs once, then forks one warm process per worker slot."""

    directory: str
    server: subprocess.Popen
    workers: int
    told: bool = False
    """Whether the driver has said what the workers will load (``preload_tokenizer``): it says so once."""

    def command(self) -> str:
        """The worker command for Beam: the launcher, with Beam's own command as its fallback."""
        launcher = [sys.executable, "-I", worker_launcher.__file__, self.directory, *COLD_COMMAND]
        return shlex.join(launcher)

    def adopted(self) -> int:
        """How many warm processes became workers so far."""
        slots = range(self.workers)
        return sum(os.path.exists(worker_launcher.adopted_path(self.directory, slot)) for slot in slots)

    def warm_pids(self) -> list[int]:
        """The warm processes the server forked so far."""
        pids = []
        for slot in range(self.workers):
            with contextlib.suppress(OSError, ValueError), open(_child_path(self.directory, slot)) as handle:
                pids.append(int(handle.read()))
        return pids

    def preload_tokenizer(self, tokenizer_json_path: str) -> None:
        """Tell the server which tokenizer JSON the workers will load their fast encoder from: it loads it once,
        before it forks the warm processes, while the driver builds the pipeline (``fast_encoder.preload``).
        Said at most once, before the run starts its workers: the server listens only until it forks."""
        if self.told or self.server.stdin is None or "://" in tokenizer_json_path or self.warm_pids():
            return  # forked already: its warm processes would take the word for the driver closing the pool
        self.told = True
        word = json.dumps({PRELOAD_TOKENIZER: tokenizer_json_path}) + "\n"
        with contextlib.suppress(OSError, ValueError):
            self.server.stdin.write(word.encode("utf-8"))
            self.server.stdin.flush()

    def close(self) -> None:
        """End the server and every warm process (idle or adopted: the run is over); remove the directory."""
        with contextlib.suppress(OSError):
            if self.server.stdin is not None:
                self.server.stdin.close()  # idle warm processes see their stdin close
        for pid in self.warm_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.server.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.wait(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _child_path(pool: str, slot: int) -> str:
    return os.path.join(pool, f"warm-{slot}")


def start_pool(workers: int) -> WarmPool | None:
    """A server of ``workers`` warm processes, or None where they cannot work (no Unix sockets or ``fork``, a
    too-long temp path)."""
    if not hasattr(socket, "AF_UNIX") or not hasattr(socket, "send_fds") or not hasattr(os, "fork"):
        return None
    try:
        directory = tempfile.mkdtemp(prefix="seqpack-warm-")
    except OSError:  # a full or read-only temp directory: the workers start cold, as Beam starts them
        return None
    if len(worker_launcher.socket_path(directory, workers)) > _MAX_SOCKET_PATH:
        os.rmdir(directory)
        return None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", __name__, directory, str(workers)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ),  # what Beam gives its workers; the C environment may differ (readline)
        )
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        return None
    pool = WarmPool(directory, server, workers)
    try:
        with open(os.path.join(directory, SERVER_PID_FILE), "w", encoding="ascii") as handle:
            handle.write(str(server.pid))
        with open(os.path.join(directory, SLOTS_FILE), "w", encoding="ascii") as handle:
            handle.write(str(workers))
    except OSError:
        pool.close()
        return None
    return pool


_EARLY: WarmPool | None = None
"""The pool ``start_early`` started as the command began, until a run takes it (``warm_local_runner``) or the
command ends (``close_early``)."""
_NOT_PLAIN_LOCAL = ("--runner", "--direct_", "--no-wait", "--dry-run", "--help", "-h")
"""Options after which a ``run`` may not be a local multi-process run on this machine's cores, or runs nothing."""


def start_early(run_argv: list[str]) -> None:
    """Start the warm pool as ``seqpack run`` begins, before the driver imports Beam, so that the server imports
    while the driver does, on the other core, and its workers are ready when the job starts (rather than ~0.4 s
    later). Only where the run looks local on the command line: no runner option, ``--no-wait`` or
    ``--dry-run`` in ``run_argv`` (its workers then are one per core). A run that does not take it (a job file
    naming another runner, a failed check) leaves it to ``close_early``."""
    global _EARLY
    if _EARLY is not None or not _warm_enabled():
        return
    if any(arg.startswith(_NOT_PLAIN_LOCAL) for arg in run_argv):
        return
    _EARLY = start_pool(multiprocessing.cpu_count())


def close_early() -> None:
    """End the early pool if no run took it (the command failed, or was up to date)."""
    global _EARLY
    pool, _EARLY = _EARLY, None
    if pool is not None:
        pool.close()


def _take_early(workers: int) -> WarmPool | None:
    """The early pool, if it has ``workers`` slots (else it is closed)."""
    global _EARLY
    if _EARLY is not None and _EARLY.workers == workers:
        pool, _EARLY = _EARLY, None
        return pool
    close_early()
    return None


def _warm_enabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "1").strip() not in ("0", "false", "no", "off")


def worker_count(options: Any) -> int:
    """How many worker processes the FnApiRunner starts: ``--direct_num_workers``, 0 meaning one per core."""
    from apache_beam.options.pipeline_options import DirectOptions

    workers = options.view_as(DirectOptions).direct_num_workers
    return multiprocessing.cpu_count() if workers == 0 else (workers or 1)


def _wants_warm(options: Any, runner: object) -> bool:
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return (
        type(runner) is FnApiRunner
        and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
        and _warm_enabled()
    )


@contextlib.contextmanager
def warm_local_runner(options: Any, runner: object, provision_info: Any = None) -> Iterator[object]:
    """The runner to use: for the local multi-process FnApiRunner, one whose workers a warm pool starts (the
    pool lives for the block); any other runner as it is. The pool ``start_early`` started is taken where it
    fits."""
    if _wants_warm(options, runner):
        workers = worker_count(options)
        pool = _take_early(workers) or start_pool(workers)
    else:
        close_early()
        pool = None
    if pool is None:
        yield runner
        return
    try:
        yield _warm_runner(pool, provision_info)
    finally:
        adopted = pool.adopted()
        pool.close()
        _LOG.info("local workers: %d of %d started warm (%s=0 starts them cold)", adopted, pool.workers,
                  DISABLE_VARIABLE)


def preload_for_workers(runner: object, tokenizer_json_path: str) -> None:
    """Where ``runner`` starts its workers from a warm pool, have the pool load their fast encoder now
    (``WarmPool.preload_tokenizer``); any other runner's workers load it as they start."""
    pool = getattr(runner, "warm_pool", None)
    if isinstance(pool, WarmPool):
        pool.preload_tokenizer(tokenizer_json_path)


def _warm_runner(pool: WarmPool, provision_info: Any) -> object:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    launcher = SubprocessSDKEnvironment.from_command_string(pool.command())

    class WarmRunner(FnApiRunner):
        """The FnApiRunner, starting its workers through ``pool``. FnApiRunner sets its default environment from
        ``--direct_running_mode`` when it runs; this one keeps the launcher's."""

        warm_pool = pool

        @property
        def _default_environment(self) -> Any:
            return launcher

        @_default_environment.setter
        def _default_environment(self, _value: Any) -> None:
            pass

    return WarmRunner(provision_info=provision_info)


# ------------------------------------------------------------------------------------- the warm process itself


def _receive_request(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 16, 3)
    if len(data) < 8:
        raise OSError("short request")
    size = int.from_bytes(data[:8], "big")
    body = bytearray(data[8:])
    while len(body) < size:
        chunk = connection.recv(size - len(body))
        if not chunk:
            raise OSError("request cut short")
        body += chunk
    return json.loads(body), list(fds)


def _same_environment(request: dict[str, Any], started: dict[str, str], cwd: str) -> bool:
    """The worker's environment is the one this process imported its modules under (Beam's variables aside)."""
    def comparable(environ: dict[str, str]) -> dict[str, str]:
        return {key: value for key, value in environ.items() if key not in PER_WORKER_VARIABLES}

    return request.get("cwd") == cwd and comparable(request.get("env", {})) == comparable(started)


def _exit_when_closed(connection: socket.socket) -> None:
    """The launcher is gone (Beam killed it): so is this worker."""
    with contextlib.suppress(OSError):
        connection.recv(1)
    os._exit(1)


def _run_worker() -> int:
    from apache_beam.runners.worker import sdk_worker_main

    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - the worker failed: say why, as a cold worker's traceback would
        traceback.print_exc()
        return 1
    return 0


def _wait_for_launcher(listener: socket.socket) -> socket.socket | None:
    """The launcher's connection, or None once the driver closed stdin (or died) or went quiet too long."""
    ready, _, _ = select.select([sys.stdin.fileno(), listener], [], [], IDLE_SECONDS)
    if not ready or sys.stdin.fileno() in ready:
        return None
    connection, _ = listener.accept()
    return connection


def _listen(pool: str, slot: int) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = worker_launcher.socket_path(pool, slot)
    listener.bind(path + ".new")
    listener.listen(1)
    os.rename(path + ".new", path)  # a launcher finds the socket only once it is listening
    return listener


def serve(pool: str, workers: int, target: Any = _run_worker) -> None:
    """The server: listen on every slot's socket (a launcher may connect at once and wait), import what a worker
    needs, load the tokenizer the driver names (until the run starts), fork one warm process per slot, then reap
    them. Forking from this single-threaded process after the imports costs each warm process milliseconds
    instead of seconds of imports."""
    started, cwd, driver = dict(os.environ), os.getcwd(), os.getppid()
    listeners = [_listen(pool, slot) for slot in range(workers)]
    for module in WORKER_MODULES:
        with contextlib.suppress(Exception):
            __import__(module)
    _preload(_driver_word(listeners))
    for slot, listener in enumerate(listeners):
        pid = os.fork()
        if pid == 0:
            for other in listeners:
                if other is not listener:
                    other.close()
            _serve_slot(pool, slot, listener, started, cwd, target)  # never returns
        with open(_child_path(pool, slot), "w", encoding="ascii") as handle:
            handle.write(str(pid))
        listener.close()
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()
    if os.getppid() != driver:  # the driver died without closing the pool: nobody else will remove it
        shutil.rmtree(pool, ignore_errors=True)
    os._exit(0)


def _driver_word(listeners: list[socket.socket]) -> dict[str, Any]:
    """What the driver says before its run starts the workers (one JSON line on stdin), or nothing once a launcher
    connects first (the run has started: fork now), stdin closes, or it stays quiet for ``IDLE_SECONDS``."""
    stdin, said = sys.stdin.fileno(), b""
    while b"\n" not in said:
        ready, _, _ = select.select([stdin, *listeners], [], [], IDLE_SECONDS)
        if stdin not in ready:
            return {}
        chunk = os.read(stdin, 1 << 16)
        if not chunk:
            return {}
        said += chunk
    try:
        word = json.loads(said.split(b"\n", 1)[0])
    except ValueError:
        return {}
    return word if isinstance(word, dict) else {}


def _preload(word: dict[str, Any]) -> None:
    """Load what the workers will load, once, for every warm process forked after it; anything that fails here is
    left for the workers to meet and report, as they would without it."""
    path = word.get(PRELOAD_TOKENIZER)
    if not isinstance(path, str):
        return
    with contextlib.suppress(Exception):
        from seqpack.fast_encoder import preload

        with open(path, encoding="utf-8") as handle:
            preload(handle.read())


def _serve_slot(pool: str, slot: int, listener: socket.socket, started: dict[str, str], cwd: str,
                target: Any) -> None:
    """A warm process: wait to be claimed, become the worker (``target``), end."""
    try:
        connection = _wait_for_launcher(listener)
        listener.close()
        if connection is None:
            os._exit(0)
        request, fds = _receive_request(connection)
    except (OSError, ValueError):
        os._exit(1)
    if len(fds) != 3 or not _same_environment(request, started, cwd):
        with contextlib.suppress(OSError):
            connection.sendall(REFUSED)
        os._exit(0)
    for target_fd, fd in zip((0, 1, 2), fds, strict=True):
        os.dup2(fd, target_fd)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    with open(worker_launcher.adopted_path(pool, slot), "w", encoding="ascii"):
        pass
    connection.sendall(ADOPTED)
    threading.Thread(target=_exit_when_closed, args=(connection,), daemon=True).start()
    code = target()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        connection.sendall(bytes([code & 0xFF]))
    os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
