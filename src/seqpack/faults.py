"""Test hooks that kill the process at a named point, to prove crash safety (issue: nothing half-written).

Set ``SEQPACK_FAULT=point`` (optionally ``point:N`` to fire on the N-th time the point is reached) and the
process kills itself with SIGKILL there, as a machine failure or an OOM killer would; ``SEQPACK_FAULT=raise:point``
raises an error there instead, as a bug would. Unset, a checkpoint costs one dictionary lookup. The points:
``read`` (reading input records), ``tokenize`` (once per batch), ``write_shard`` (a shard's temporary file is
written, not yet renamed), ``commit_manifest`` (the new revision is complete beside the old one; the manifest
not yet switched), ``commit_cleanup`` (the manifest names the new revision; the old one's files not yet removed),
``submitted`` (``seqpack run --no-wait`` said the job was submitted; the launcher has not returned).

``SEQPACK_TEST_SLOW_TOKENIZE=seconds`` makes every ``tokenize`` checkpoint (once per batch) sleep that long, so a
test can watch live progress on a small input. Unset, it costs one more lookup per batch.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

FAULT_ENV = "SEQPACK_FAULT"
SLOW_ENVS = {"tokenize": "SEQPACK_TEST_SLOW_TOKENIZE"}
"""Points a test can slow down, and the variable that holds the seconds to sleep there."""
_reached: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """Raised at a checkpoint that a test asked to fail."""


def checkpoint(point: str) -> None:
    """Die here if the test asked for it (or sleep, at a point a test slowed down)."""
    slow_env = SLOW_ENVS.get(point)
    if slow_env is not None:
        _sleep_if_asked(slow_env)
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    if wanted == f"raise:{point}":
        raise InjectedFault(f"a test asked this run to fail at {point!r} ({FAULT_ENV}={wanted})")
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _sleep_if_asked(variable: str) -> None:
    seconds = os.environ.get(variable)
    if seconds:
        time.sleep(float(seconds))


def lose_one_example() -> bool:
    """True when a test asks the pipeline to silently lose an example, to prove the accounting catches it."""
    return os.environ.get(FAULT_ENV) == "lose_example"
