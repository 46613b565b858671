"""One run per output at a time: an exclusive lock file with a heartbeat.

A second run into the same output refuses with a clear error. A lock left behind by a crashed run is stale
(its process is gone, or its heartbeat stopped) and is taken over by the next run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from seqpack.pipeline.config import UsageError

LOCK_NAME = ".seqpack-lock"
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class OutputLock:
    """Held while a run writes to ``output``; use as a context manager."""

    output: str
    heartbeat_seconds: float = HEARTBEAT_SECONDS

    def __post_init__(self) -> None:
        self.path = FileSystems.join(self.output, LOCK_NAME)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}
        ).encode()

    def _holder(self) -> dict | None:
        try:
            with FileSystems.open(self.path) as handle:
                return json.loads(handle.read().decode())
        except Exception:  # missing, or torn by a crash mid-write: treat as no holder  # noqa: BLE001
            return None

    def _is_stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
            return True
        return time.time() - float(holder.get("heartbeat", 0)) > STALE_AFTER_SECONDS

    def _create_exclusively(self) -> bool:
        if "://" in self.path:  # object stores: check-then-create; documented as best effort
            if FileSystems.exists(self.path):
                return False
            with FileSystems.create(self.path) as out:
                out.write(self._content())
            return True
        os.makedirs(self.output, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(self._content())
        return True

    def acquire(self) -> None:
        if not self._create_exclusively():
            holder = self._holder()
            if holder is not None and not self._is_stale(holder):
                raise UsageError(
                    f"another seqpack run (pid {holder.get('pid')} on {holder.get('host')}) is writing to "
                    f"{self.output}; wait for it, or delete {self.path} if that run is dead"
                )
            FileSystems.delete([self.path])  # stale: its run crashed
            if not self._create_exclusively():
                raise UsageError(f"another seqpack run took the lock {self.path} at the same moment; retry")
        beat = f"{self.path}.beat"
        if FileSystems.exists(beat):  # a heartbeat write that a crash interrupted
            FileSystems.delete([beat])
        self._thread = threading.Thread(target=self._beat, name="seqpack-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            temporary = f"{self.path}.beat"
            with FileSystems.create(temporary) as out:
                out.write(self._content())
            FileSystems.rename([temporary], [self.path])

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if FileSystems.exists(self.path):
            FileSystems.delete([self.path])

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
