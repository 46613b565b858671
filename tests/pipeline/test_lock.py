"""The output lock under attack: many processes at once, stale and torn locks, a holder that lost its lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqpack.errors import UsageError
from seqpack.pipeline.lock import LockLostError, OutputLock
from seqpack.schemas import LOCK_NAME

CONTENDERS = 6
TRIALS = 40


def _contend(output: str, start: float, results: multiprocessing.Queue) -> None:
    lock = OutputLock(output, heartbeat_seconds=0.05)
    time.sleep(max(0.0, start - time.time()))
    try:
        lock.acquire()
    except UsageError:
        results.put("refused")
        return
    except Exception as error:  # noqa: BLE001 - any other failure is a defect the test must report
        results.put(f"crashed: {error!r}")
        return
    acquired = time.time()
    time.sleep(0.15)  # hold it while the others try (they all start at the same moment)
    try:
        lock.check()
        results.put(("held", acquired, time.time()))
    except LockLostError:
        results.put("lost")
    lock.release()


def _race(output: Path) -> list:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = context.Queue()
    start = time.time() + 0.2
    processes = [context.Process(target=_contend, args=(str(output), start, results)) for _ in range(CONTENDERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    return [results.get(timeout=5) for _ in processes]


def _dead_pid() -> int:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(dead.stdout)


@pytest.mark.parametrize("stale_first", [False, True], ids=["empty", "stale-lock-present"])
def test_many_processes_at_once_give_exactly_one_holder(tmp_path: Path, stale_first: bool) -> None:
    for trial in range(TRIALS):
        output = tmp_path / f"trial-{trial}"
        output.mkdir()
        if stale_first:
            holder = {"host": os.uname().nodename, "pid": _dead_pid() if trial == 0 else 2**22 + trial,
                      "token": "dead", "heartbeat": 0}
            (output / LOCK_NAME).write_text(json.dumps(holder))
        outcome = _race(output)
        held = sorted(result[1:] for result in outcome if result[0] == "held")
        others = [result for result in outcome if result[0] != "held"]
        assert held and set(others) <= {"refused"}, f"trial {trial}: {outcome}"
        # A process that started late may take the lock after the first holder released it; never while it held it.
        overlaps = [(a, b) for a, b in zip(held, held[1:], strict=False) if b[0] < a[1]]
        assert not overlaps, f"trial {trial}: two runs held the lock at once: {overlaps}"
        assert not (output / LOCK_NAME).exists(), "the holder released it"
        assert sorted(p.name for p in output.iterdir()) == [], "no temporary lock files are left"


def test_an_empty_or_torn_lock_is_a_lock_being_written_not_a_stale_one(tmp_path: Path) -> None:
    for content in (b"", b'{"host": "x", "pi'):
        (tmp_path / LOCK_NAME).write_bytes(content)
        with pytest.raises(UsageError, match="another seqpack run"):
            OutputLock(str(tmp_path)).acquire()
        assert (tmp_path / LOCK_NAME).read_bytes() == content
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with OutputLock(str(tmp_path)) as lock:  # an unreadable lock nobody has touched for an hour is stale
        assert lock.holds()


def test_a_holder_that_lost_its_lock_fails_its_check_and_leaves_the_new_lock(tmp_path: Path) -> None:
    paused = OutputLock(str(tmp_path), heartbeat_seconds=0.05)
    paused.acquire()
    taker = OutputLock(str(tmp_path), stale_after_seconds=0.0)  # the paused run's heartbeat looks stale
    time.sleep(0.01)
    taker.acquire()
    time.sleep(0.3)  # the paused run's heartbeat wakes up, sees another token, and writes nothing
    assert taker.holds() and not paused.holds()
    with pytest.raises(LockLostError, match="lost its lock"):
        paused.check()
    paused.release()
    assert taker.holds(), "releasing a lost lock does not delete the new holder's"
    taker.check()
    taker.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    with OutputLock(str(tmp_path)), pytest.raises(UsageError, match=f"pid {os.getpid()}"):
        OutputLock(str(tmp_path)).acquire()


def test_a_lease_keeps_the_lock_of_a_launcher_that_left_until_its_job_releases_it(tmp_path: Path) -> None:
    """``--no-wait``: the launcher detaches and exits; its lock holds (no heartbeat, dead pid) for the lease,
    and the job, holding only the token, releases it."""
    output = str(tmp_path)
    launcher = OutputLock(output, lease_seconds=3600)
    launcher.acquire()
    launcher.detach()
    launcher.release()  # the launcher's exit: a detached lock stays for the job
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    holder["pid"] = _dead_pid()  # the launcher process is gone
    holder["heartbeat"] = 0  # and has not shown life for a long time
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    old = time.time() - 3 * 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with pytest.raises(UsageError, match=r"launched with --no-wait.*lease ends.*If that job has failed") as refused:
        OutputLock(output).acquire()
    assert str(tmp_path / LOCK_NAME) in str(refused.value), "the refusal says which file to delete"
    job = OutputLock(output, token=launcher.token)
    job.check()
    job.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lease_that_has_ended_is_stale(tmp_path: Path) -> None:
    holder = {"host": os.uname().nodename, "pid": _dead_pid(), "token": "job", "heartbeat": 0,
              "lease_until": time.time() - 1}
    (tmp_path / LOCK_NAME).write_text(json.dumps(holder))
    with OutputLock(str(tmp_path)) as lock:
        assert lock.holds()
