"""The commit as the job's own last step: once every shard is written, a worker checks the statistics and
switches the dataset to the new revision (``pipeline.commit``), so a launcher that leaves does not leave the
output uncommitted (``seqpack run --no-wait``, the Flex Template).

The step reads the merged statistics (one element) and, as a side input, the list of written shards; both
exist only when every writer has finished. It commits at most once: a runner that retries it after the switch
finds the manifest naming this run's revision and only finishes the cleanup. A refusal (the records do not add
up, too few written, ``--audit strict`` findings) removes the run's files, releases the lock and fails the job;
the previous dataset stays as it was.

    stats | "Commit" >> beam.ParDo(CommitDoFn(plan), shards=beam.pvalue.AsSingleton(shard_list),
                                   inputs=beam.pvalue.AsSingleton(consumed))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam

from seqpack.config import RunConfig
from seqpack.pipeline.commit import Destination, abandon, commit
from seqpack.pipeline.commit_checks import AuditFindings, TooFewWritten
from seqpack.pipeline.lock import LockLostError, OutputLock
from seqpack.schemas import TokenizerInfo
from seqpack.schemas.manifest import ConsumedInput
from seqpack.schemas.stats import AccountingError
from seqpack.tokenizer import read_encoder_choice

REFUSALS = (AccountingError, TooFewWritten, AuditFindings, LockLostError)
"""Why a commit step fails on purpose: its message, not a traceback, is what the user needs."""


@dataclass(frozen=True)
class CommitPlan:
    """What the commit step needs besides the job's results: small, and pickled with the pipeline."""

    config: RunConfig
    tokenizer: TokenizerInfo
    destination: Destination
    lock_token: str
    release_lock: bool
    """True when the launcher leaves once the job is submitted (``--no-wait``): the job gives the lock back."""
    encoder_file: str = ""
    """Where the driver writes the encoder it chose, when it chose while the job started (``tokenizer.backend``
    is then ``deferred``; see ``seqpack.tokenizer.BackendPlan``)."""

    def tokenizer_info(self) -> TokenizerInfo:
        """What the manifest records of the tokenizer, with the encoder that wrote the ids. A step retried after
        its commit removed the staging directory finds no choice there, and writes no manifest: it gets the plan's
        ``deferred``."""
        if not self.encoder_file:
            return self.tokenizer
        try:
            return replace(self.tokenizer, backend=read_encoder_choice(self.encoder_file))
        except RuntimeError:
            return self.tokenizer


class CommitDoFn(beam.DoFn):
    """Commit the new revision; output its directory (``v000002``)."""

    def __init__(self, plan: CommitPlan) -> None:
        self.plan = plan

    def process(self, stats: dict[str, Any], shards: list[dict[str, Any]], inputs: list[ConsumedInput]
                ) -> Iterator[str]:
        plan = self.plan
        lock = OutputLock(plan.destination.output, token=plan.lock_token)  # fencing only: no heartbeat here
        try:
            manifest, _ = commit(plan.config, plan.tokenizer_info(), plan.destination, lock, stats=stats, shards=shards,
                                 inputs=inputs)
        except LockLostError:
            raise  # the output is another run's now: nothing here is ours to remove or release
        except (AccountingError, TooFewWritten, AuditFindings):
            abandon(plan.destination)
            self._release(lock)
            raise
        self._release(lock)
        yield manifest.directory

    def _release(self, lock: OutputLock) -> None:
        if self.plan.release_lock:
            lock.release()


def refusal_message(error: BaseException) -> str | None:
    """The message of a refusal raised by the commit step, found in the error the runner raises in the launcher
    (a worker's exception reaches it as text: ``...AccountingError: the records do not add up ...``)."""
    if isinstance(error, REFUSALS):
        return str(error)
    names = "|".join(kind.__name__ for kind in REFUSALS)
    found = re.findall(rf"\b(?:{names}): (.+?)(?: \[while running '[^']*'\])?$", str(error), flags=re.MULTILINE)
    return found[-1].strip() if found else None
