"""The pipeline of ``seqpack compact``: committed shards in, the same examples repacked into one new generation.

    shards | "CutShards" | "ShuffleAndPack" | "WriteShards" | ... | "Commit"
    key files | "ReadKeys" | "WriteKeyFiles" ----------------------^        (--dedup exact datasets)

The tail is ``seqpack run``'s own (``transforms.pack``, ``transforms.shard_groups``), with the dataset's settings,
so a compacted generation is packed exactly as one run over all the replaced generations' examples would pack it.
The commit, the job's last step, checks two things before it switches the manifest:

- the statistics add up (``schemas.stats.check_identity``): the replaced generations' statistics, merged, with
  their block-level figures replaced by the new blocks' (``REPACKED``);
- the examples digest of what was packed equals the digest of what was read (``seqpack.examples_digest``): not
  one example was lost, duplicated or changed. That digest is recorded as the generation's ``examples_digest``,
  which ``seqpack verify`` recomputes from the new shards.

A ``--dedup exact`` dataset's replaced generations each stored the content keys of their records (``dedup/``):
the workers read their key files and write the union as the new generation's, partitioned and sorted as any
generation's (``transforms.dedup``), so a later ``--append`` still drops what the replaced generations held. The
keys are never gathered on one machine; the commit, which lists the key files, waits for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.audit import AuditFacts
from seqpack.config import RunConfig
from seqpack.examples_digest import ExamplesDigest, combined
from seqpack.pipeline.build import pack_options, shard_format
from seqpack.pipeline.commit import Destination, abandon, commit
from seqpack.pipeline.commit_checks import TooFewWritten
from seqpack.pipeline.lock import LockLostError, OutputLock
from seqpack.pipeline.runners import resolve_shuffle
from seqpack.schemas import TokenizerInfo
from seqpack.schemas import stats as stats_format
from seqpack.schemas.manifest import ConsumedInput
from seqpack.schemas.stats import AccountingError
from seqpack.transforms.audit_shards import ShardAudit
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.dedup import ReadKeyFiles, WriteKeyFiles
from seqpack.transforms.pack import ShuffleAndPack
from seqpack.transforms.shard_groups import ShardSizing, WriteShards
from seqpack.transforms.shuffle import SPILL_DIR
from seqpack.transforms.unpack import DIGEST_TAG, CutShardDoFn, ShardToCut, UnpackOptions, digest_of_packed

REPACKED = ("blocks", "block_tokens", "tokens_written", "trained_tokens", "blocks_by_split", "pieces_written_by_split",
            "examples_audited", "audit_by_code", "audit_places")
"""The statistics that describe blocks: a compacted generation's own (the audit's too: its places named the replaced
files, and the new blocks are audited as they are written, ``compaction_audit``). Every other figure (records read,
rejected, dropped, truncated, tokens in, histograms) is the sum of the replaced generations', so the statistics of
all the generations of a dataset still account for every input record once."""


def carried_stats(replaced: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The replaced generations' statistics merged, without their block-level figures (the new blocks add those)."""
    merged = stats_format.merge_stats(replaced)
    empty = stats_format.empty_stats()
    return {**merged, **{name: empty[name] for name in REPACKED}}


@dataclass(frozen=True)
class CompactPlan:
    """What the compaction's commit step needs besides the job's results: small, pickled with the pipeline."""

    config: RunConfig
    tokenizer: TokenizerInfo
    destination: Destination
    lock_token: str
    replaces: tuple[int, ...]
    inputs: tuple[ConsumedInput, ...]
    """The replaced generations' consumed inputs: the new generation consumed them, for later ``--append`` runs."""


class CompactCommitDoFn(beam.DoFn):
    """Check that the examples were kept and the statistics add up; commit the new generation; output its
    directory."""

    def __init__(self, plan: CompactPlan) -> None:
        self.plan = plan

    def process(self, stats: dict[str, Any], shards: list[dict[str, Any]], read: ExamplesDigest,
                packed: ExamplesDigest) -> Iterator[str]:
        plan = self.plan
        lock = OutputLock(plan.destination.output, token=plan.lock_token)
        try:
            if str(read) != str(packed):
                raise AccountingError(
                    f"the repacked examples are not the examples read (digest {packed} != {read}), nothing was "
                    "committed: a bug in seqpack; please report it with the dataset's manifest"
                )
            manifest, _ = commit(plan.config, plan.tokenizer, plan.destination, lock, stats=stats, shards=shards,
                                 inputs=list(plan.inputs), replaces=list(plan.replaces), examples_digest=str(read))
        except LockLostError:
            raise
        except (AccountingError, TooFewWritten):
            abandon(plan.destination)
            raise
        yield manifest.directory


def compaction_audit(config: RunConfig, tokenizer: TokenizerInfo, directory: str) -> ShardAudit | None:
    """The audit of the new blocks, with the dataset's settings: none with ``--audit off``, nor for a chat dataset,
    whose turns end with end-of-turn tokens only its tokenizer knows (``seqpack audit`` loads it)."""
    if config.audit == "off" or config.is_chat:
        return None
    return ShardAudit(AuditFacts.of_settings(config.to_dict(), tokenizer), directory)


def build_compaction(pipeline: beam.Pipeline, plan: CompactPlan, shards: list[ShardToCut],
                     carried: dict[str, Any], key_files: Iterable[str] = ()) -> None:
    """The compaction's data flow: ``shards`` (the replaced generations') cut back, repacked, written, committed.
    ``carried``: the replaced generations' statistics (``carried_stats``). ``key_files``: their dedup key files
    (paths), whose union becomes the new generation's."""
    config, destination = plan.config, plan.destination
    spill_dir = FileSystems.join(destination.staging, SPILL_DIR)
    unpack = UnpackOptions(file_format=config.file_format, seed=config.seed, with_trained=config.is_chat)
    cut = (
        pipeline
        | "ListShards" >> beam.Create(shards)
        # A few large shards: spread them so that every worker cuts some.
        | "SpreadShards" >> beam.Reshuffle()
        | "CutShards" >> beam.ParDo(CutShardDoFn(unpack, spill_dir)).with_outputs(DIGEST_TAG, main="spills")
    )
    shuffle = resolve_shuffle(config.shuffle, pipeline.runner)
    packed = cut.spills | "ShuffleAndPack" >> ShuffleAndPack(pack_options(config, plan.tokenizer.pad_id),
                                                             shuffle=shuffle)
    written = packed | "WriteShards" >> WriteShards(
        shard_format(config), root=destination.root, staging=destination.staging,
        sizing=ShardSizing(config.shard_bytes, config.bucket_tokens),
        audit=compaction_audit(config, plan.tokenizer, destination.directory),
    )
    read_digest = cut[DIGEST_TAG] | "DigestRead" >> beam.CombineGlobally(combined)
    packed_digest = (
        packed | "DigestEach" >> beam.Map(digest_of_packed) | "DigestPacked" >> beam.CombineGlobally(combined)
    )
    shard_list = written["shards"] | "ListWritten" >> beam.combiners.ToList()
    key_stats = []
    key_files = sorted(key_files)
    if key_files:
        keys = pipeline | "ReadKeys" >> ReadKeyFiles(key_files) | "WriteKeyFiles" >> WriteKeyFiles(destination.root)
        key_stats = [keys[STATS_TAG]]  # the commit lists the key files: it waits for them
    (
        (pipeline | "CarriedStats" >> beam.Create([carried]), written[STATS_TAG], *key_stats)
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergeStats())
        | "Commit" >> beam.ParDo(CompactCommitDoFn(plan), shards=beam.pvalue.AsSingleton(shard_list),
                                 read=beam.pvalue.AsSingleton(read_digest),
                                 packed=beam.pvalue.AsSingleton(packed_digest))
    )
