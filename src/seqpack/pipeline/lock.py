"""One run per output at a time: an exclusive lock file with a heartbeat and a fencing token.

- **Taking it** is one atomic step: the lock's content (host, pid, a random token) is written to a private
  file first and then hard-linked into place, which fails if a lock exists. No one ever sees an empty lock.
- **A stale lock** (its process is gone, or its heartbeat stopped for ``STALE_AFTER_SECONDS``) is taken over
  under a short exclusive takeover guard: the lock is removed only if it is still the very lock judged stale,
  so a lock another run has just taken over is never removed. Two runs never both believe they hold it.
- **Fencing**: the heartbeat never writes over a lock that is not its own (locally it only touches the file's
  time), and :meth:`OutputLock.check` compares the token in the file with the run's own before every
  destructive step. A run that was paused past the stale limit and lost its lock to another run stops with
  :class:`LockLostError` instead of committing over the other run's work.

- **A lease** (``--no-wait``): a launcher that leaves once the job is submitted cannot keep heartbeating, so it
  writes ``lease_until`` into the lock; until then the lock is not stale, even with its process gone. The job's
  commit step checks the token, commits, and releases the lock itself (``pipeline.commit_step``). A job that dies
  before its commit step leaves the lock until the lease ends (the refusal says so, and how to clear it).

On ``gs://`` and ``s3://`` there are no hard links; there the lock is created with a precondition instead
(GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``; see ``pipeline.object_stores``), which is as exclusive,
and the heartbeat and the release replace or delete it only while it is the version this run wrote. On other
remote filesystems the lock is created after a check and read back, which narrows but does not close the race
between two runs started in the same second. The fencing check before commit holds everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from seqpack.errors import RunFailedError, UsageError
from seqpack.pipeline.object_stores import conditional_store
from seqpack.schemas import LOCK_NAME

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0
DEFAULT_LEASE_SECONDS = 24 * 3600.0
"""How long a ``--no-wait`` launch keeps the output locked for its job (``--lock-lease``)."""
TAKEOVER_SUFFIX = ".takeover"
GUARD_STALE_SECONDS = 10.0


class LockBusyError(UsageError):
    """Another live run holds the output's lock: nothing was started (``seqpack watch`` tries again later)."""


class LockLostError(RunFailedError):
    """Another run took this run's lock (it was paused or stalled past the stale limit): nothing is committed."""


@dataclass(frozen=True)
class Holder:
    """What a lock file says: who holds it, and the token that proves it."""

    host: str
    pid: int
    token: str
    heartbeat: float
    lease_until: float = 0.0
    """Until when the lock holds without a heartbeat (a job launched with ``--no-wait``); 0 for none."""

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """None for a torn or foreign file."""
        try:
            raw = json.loads(data.decode())
            return cls(host=str(raw["host"]), pid=int(raw["pid"]), token=str(raw.get("token", "")),
                       heartbeat=float(raw["heartbeat"]),  # older seqpack wrote no token, no lease
                       lease_until=float(raw.get("lease_until", 0.0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def leased(self) -> bool:
        return self.lease_until > time.time()

    def describe(self) -> str:
        """Who holds it, for the refusal: a launcher, or a job launched without waiting."""
        who = f"pid {self.pid} on {self.host}"
        if not self.leased():
            return who
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.heartbeat))
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.lease_until))
        return f"the job that {who} launched with --no-wait at {when}; its lease ends {until}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_guard(guard: str) -> bool:
    """Create ``guard`` exclusively; remove it if a crashed run left it (a takeover takes milliseconds)."""
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - os.stat(guard).st_mtime > GUARD_STALE_SECONDS:
                os.unlink(guard)
        return False


def _is_remote(path: str) -> bool:
    return "://" in path


@dataclass
class OutputLock:
    """Held while a run writes to ``output``; use as a context manager.

        with OutputLock("out/") as lock:
            ...
            lock.check()        # before committing: raises LockLostError if another run took over

    With ``lease_seconds`` (``--no-wait``) the lock stays valid that long without a heartbeat, and
    :meth:`detach` leaves it in place for the job, whose commit step releases it as
    ``OutputLock(output, token=token)``.
    """

    output: str
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    stale_after_seconds: float = STALE_AFTER_SECONDS
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lease_seconds: float = 0.0
    options: Any = None
    """Beam's pipeline options: the object store's credentials and endpoint (``--s3_endpoint_url``)."""

    def __post_init__(self) -> None:
        self.path = FileSystems.join(self.output, LOCK_NAME)
        self._store = conditional_store(self.path, self.options)
        self._version: str | None = None
        """Of the lock object this run wrote last (object stores): the heartbeat and release are conditional on it."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._detached = False
        self._lease_until = 0.0

    @property
    def lease_until(self) -> float:
        """When the lease taken with the lock ends (0 without one)."""
        return self._lease_until

    def _content(self) -> bytes:
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "heartbeat": time.time()}
        if self._lease_until:
            holder["lease_until"] = self._lease_until
        return json.dumps(holder).encode()

    # ---------------------------------------------------------------------------------------- reading

    def _read(self, path: str | None = None) -> bytes | None:
        if self._store is not None and path is None:
            current = self._store.read(self.path)
            return current[0] if current is not None else None
        try:
            with FileSystems.open(path or self.path) as handle:
                return handle.read()
        except Exception:  # noqa: BLE001 - missing (or unreadable) reads as no lock
            return None

    def _age(self, holder: Holder | None) -> float:
        """Seconds since the holder last showed life: the newer of its heartbeat and the file's time.

        On object stores the heartbeat rewrites the lock's content, so the content alone tells; asking the store
        for the object's time through Beam's filesystems would use the process-wide options, not this lock's
        (another endpoint, or none: real AWS)."""
        if self._store is not None:
            return time.time() - (holder.heartbeat if holder else 0.0)
        try:
            touched = FileSystems.last_updated(self.path)
        except Exception:  # noqa: BLE001 - gone meanwhile
            touched = 0.0
        return time.time() - max(touched, holder.heartbeat if holder else 0.0)

    def _is_stale(self, holder: Holder | None) -> bool:
        if holder is not None and holder.leased():  # a job launched with --no-wait: its launcher has left
            return False
        if holder is not None and holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            return True
        return self._age(holder) > self.stale_after_seconds

    # ---------------------------------------------------------------------------------------- taking

    def _create_exclusively(self) -> bool:
        """Put a complete lock file in place if there is none; False if one exists."""
        if self._store is not None:
            self._version = self._store.create(self.path, self._content())
            return self._version is not None
        if _is_remote(self.path):
            if FileSystems.exists(self.path):
                return False
            with FileSystems.create(self.path) as out:
                out.write(self._content())
            return self.holds()  # read back: of two racing writers, the last one wins and the other backs off
        try:
            os.makedirs(self.output, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create --output {self.output}: {error.strerror}") from error
        private = f"{self.path}.{self.token}.new"
        with open(private, "wb") as out:
            out.write(self._content())
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(private)

    def _remove_stale(self, seen: bytes) -> None:
        """Remove the lock judged stale from ``seen``, and only that one: under a short takeover guard, so a
        run never removes a lock that another run has just taken over (then it finds that lock fresh)."""
        if self._store is not None:
            current = self._store.read(self.path)
            if current is not None and current[0] == seen:
                self._store.delete(self.path, current[1])
            return
        if _is_remote(self.path):
            FileSystems.delete([self.path])  # best effort (module docstring)
            return
        guard = f"{self.path}{TAKEOVER_SUFFIX}"
        if not _take_guard(guard):
            time.sleep(0.01)  # another run is taking it over: look again
            return
        try:
            if self._read() == seen:
                os.unlink(self.path)
        finally:
            os.unlink(guard)

    def acquire(self) -> None:
        self._lease_until = time.time() + self.lease_seconds if self.lease_seconds else 0.0
        for _ in range(20):
            if self._create_exclusively():
                self._start_heartbeat()
                return
            seen = self._read()
            holder = Holder.parse(seen) if seen is not None else None
            if seen is not None and not self._is_stale(holder):
                raise LockBusyError(self._busy_message(holder))
            if seen is not None:
                self._remove_stale(seen)
        raise UsageError(f"could not take the lock {self.path}: other runs keep taking it; retry")

    def _busy_message(self, holder: Holder | None) -> str:
        if holder is not None and holder.leased():
            return (
                f"another seqpack run ({holder.describe()}) is writing to {self.output}; its job releases the "
                f"lock when it commits. If that job has failed or was cancelled (see the runner's console), "
                f"delete {self.path} and run again"
            )
        who = f"pid {holder.pid} on {holder.host}" if holder else "a run that is starting"
        return f"another seqpack run ({who}) is writing to {self.output}; wait for it, or delete {self.path} if " \
            "that run is dead"

    # -------------------------------------------------------------------------------- holding, fencing

    def holds(self) -> bool:
        """True while the lock file carries this run's token."""
        data = self._read()
        holder = Holder.parse(data) if data is not None else None
        return holder is not None and holder.token == self.token

    def check(self) -> None:
        """Fencing: raise :class:`LockLostError` unless this run still holds the lock."""
        if self._lost is None and not self.holds():
            self._lost = "the lock file no longer carries this run's token"
        if self._lost is not None:
            raise LockLostError(
                f"this run lost its lock on {self.output} ({self._lost}): another run took over, probably "
                f"because this one was paused or stalled for more than {self.stale_after_seconds:.0f} s "
                "(or, launched with --no-wait, ran past its --lock-lease). "
                "Nothing was committed; run it again when the other run has finished."
            )

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="seqpack-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            if not self.holds():
                self._lost = "another run's token is in the lock file"
                return
            self._refresh()

    def _refresh(self) -> None:
        """Show life without ever writing over another run's lock: locally only the file's time changes."""
        if not _is_remote(self.path):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                self._lost = "the lock file was deleted"
            return
        if self._store is not None and self._version is not None:
            self._version = self._store.replace(self.path, self._content(), self._version)
            if self._version is None:
                self._lost = "another run replaced the lock"
            return
        temporary = f"{self.path}.{self.token}.beat"
        with FileSystems.create(temporary) as out:
            out.write(self._content())
        FileSystems.rename([temporary], [self.path])

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def detach(self) -> None:
        """Stop the heartbeat and leave the lock to the job (``--no-wait``): its lease keeps it valid, and the
        job's commit step releases it."""
        self._stop_heartbeat()
        self._detached = True

    def release(self) -> None:
        """Remove the lock if it is still this run's (never another run's, not even in a race on object stores:
        the delete is conditional on the version that carries this run's token)."""
        self._stop_heartbeat()
        if self._detached:
            return
        if self._store is None:
            if self.holds():
                FileSystems.delete([self.path])
            return
        current = self._store.read(self.path)
        if current is None:
            return
        data, version = current
        holder = Holder.parse(data)
        if holder is not None and holder.token == self.token:
            self._store.delete(self.path, version)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
