"""The output lock on gs:// and s3:// against real protocol servers: a create-if-absent precondition makes it
exclusive, and the heartbeat and the release never write over or delete another run's lock."""

from __future__ import annotations

import threading
import time
from typing import Any

from seqpack.errors import UsageError
from seqpack.pipeline.lock import LockLostError, OutputLock
from seqpack.pipeline.object_stores import conditional_store

CONTENDERS = 6
TRIALS = 5


def _options(store: Any) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(store.beam_args)


def _race(output: str, options: Any) -> list[str]:
    """Six takers start at once; each says whether it got the lock and whether it still held it at the end."""
    barrier = threading.Barrier(CONTENDERS)
    results: list[str] = []
    locks = [OutputLock(output, options=options, heartbeat_seconds=60) for _ in range(CONTENDERS)]

    def take(lock: OutputLock) -> None:
        barrier.wait()
        try:
            lock.acquire()
        except UsageError:
            results.append("refused")
            return
        time.sleep(0.3)  # hold it while the others try
        try:
            lock.check()
            results.append("held")
        except LockLostError:
            results.append("lost")

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for lock in locks:
        lock.release()
    return sorted(results)


def test_racing_takers_get_the_lock_exactly_once(object_store: Any) -> None:
    """With Beam's process-wide filesystem options left without the endpoint (as an earlier run in the same
    process leaves them): the lock must use its own options for everything, or it asks the real cloud."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions([]))
    options = _options(object_store)
    for trial in range(TRIALS):
        output = f"{object_store.url}/race-{trial}"
        assert _race(output, options) == ["held"] + ["refused"] * (CONTENDERS - 1)
        assert conditional_store(output, options).read(f"{output}/.seqpack-lock") is None, "released"


def test_the_precondition_refuses_a_second_create_and_a_stale_version(object_store: Any) -> None:
    path = f"{object_store.url}/conditional/object"
    store = conditional_store(path, _options(object_store))
    first = store.create(path, b"one")
    assert first is not None and store.create(path, b"two") is None
    second = store.replace(path, b"three", first)
    assert second is not None and store.replace(path, b"four", first) is None
    assert store.read(path) == (b"three", second)
    assert store.delete(path, second) and store.read(path) is None


def test_a_holder_whose_lock_was_taken_over_neither_refreshes_nor_deletes_it(object_store: Any) -> None:
    options = _options(object_store)
    output = f"{object_store.url}/takeover"
    paused = OutputLock(output, options=options, heartbeat_seconds=60)
    paused.acquire()
    store = conditional_store(paused.path, options)
    data, version = store.read(paused.path)
    assert store.delete(paused.path, version)  # what another run does to a lock it judged stale
    other = OutputLock(output, options=options, heartbeat_seconds=60)
    other.acquire()
    taken = store.read(paused.path)
    paused._refresh()
    assert store.read(paused.path) == taken, "the heartbeat did not write over the other run's lock"
    try:
        paused.check()
        raise AssertionError("the paused run must not commit")
    except LockLostError:
        pass
    paused.release()
    assert store.read(paused.path) == taken, "release left the other run's lock alone"
    other.release()
    assert store.read(paused.path) is None
