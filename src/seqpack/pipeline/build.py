"""Assemble the pipeline: the whole data flow on one screen."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.audit import AuditFacts
from seqpack.config import RunConfig
from seqpack.generations import FoundFile
from seqpack.masking import masks_example_starts
from seqpack.pipeline.commit import Destination
from seqpack.pipeline.commit_step import CommitDoFn, CommitPlan
from seqpack.pipeline.mixture import files_by_source
from seqpack.pipeline.runners import resolve_shuffle
from seqpack.prompt_templates import make_template
from seqpack.schemas import stats as stats_format
from seqpack.schemas.layout import is_dedup_key_file
from seqpack.schemas.manifest import GenerationInfo
from seqpack.tokenizer import BackendPlan
from seqpack.transforms.audit_shards import ShardAudit
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.dedup import KEYS_TAG, DropExactDuplicates, WriteKeyFiles
from seqpack.transforms.hash_inputs import HashInputs
from seqpack.transforms.joint import JointChatTokenizeDoFn, JointTokenizeDoFn
from seqpack.transforms.mix import MixOptions, PlanMixture, WritePlanDoFn
from seqpack.transforms.pack import PackOptions, ShuffleAndPack
from seqpack.transforms.read import ReadRecords
from seqpack.transforms.rejected import WriteRejected
from seqpack.transforms.render import REJECTED_TAG, ChatFields, ChatRenderDoFn, ChatTemplate, RenderDoFn
from seqpack.transforms.shard_groups import ShardSizing, WriteShards
from seqpack.transforms.shuffle import SPILL_DIR
from seqpack.transforms.tokenize import ChatTokenizeDoFn, TokenizeDoFn, TokenizeOptions
from seqpack.transforms.write import ShardFormat

META_DIR = "_meta"
BACKEND_TOKENIZER = "tokenizer-backend.json"
ENCODER_CHOICE = "encoder-choice"
"""Under the staging meta directory: ``hf`` or ``fast``, written by the driver's check of the fast encoder."""


def _tag(stage: str, source: str | None = None):  # noqa: ANN202 - a small labelled lambda factory
    if source is None:
        return lambda rejected: (stage, rejected)
    return lambda rejected: (stage, rejected, source)


def tokenize_options(config: RunConfig, source_id: int | None = None) -> TokenizeOptions:
    return TokenizeOptions(
        tokenizer=config.tokenizer,
        trust_remote_code=config.trust_remote_code,
        added_tokens=tuple(config.add_special_tokens),
        max_length=config.max_length,
        overlong=config.overlong,
        train_on=config.train_on,
        add_eos=config.add_eos,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        min_target_tokens=config.min_target_tokens,
        max_source_tokens=config.max_source_tokens,
        source_id=source_id,
    )


def pack_options(config: RunConfig, pad_id: int) -> PackOptions:
    """A mixture packs with per-token masks if any source is a chat, and masks example starts if any source
    does (a pairs source with ``--train-on all`` among others that mask them has its starts masked too)."""
    each = config.per_source()
    return PackOptions(
        max_length=config.max_length,
        packing=config.packing,
        bucket_tokens=config.bucket_tokens,
        seed=config.seed,
        pad_id=pad_id,
        with_trained=any(one.is_chat for one in each),
        mask_boundaries=any(masks_example_starts(one.train_on, chat=one.is_chat) for one in each),
    )


def mix_options(config: RunConfig) -> MixOptions:
    """A mixture's weighting: its sources' names and weights, ``--weight-by``, ``--mix-total-tokens``."""
    return MixOptions(names=config.source_names, weights=tuple(source.weight for source in config.sources),
                      weight_by=config.weight_by, total_tokens=config.mix_total_tokens, seed=config.seed)


def shard_format(config: RunConfig) -> ShardFormat:
    return ShardFormat(file_format=config.file_format, row_group_size=config.row_group_size,
                       sources=config.source_names)


def chat_fields(config: RunConfig) -> ChatFields:
    return ChatFields(
        style=config.chat_style,
        messages_field=config.messages_field,
        role_map=tuple(config.role_map.items()),
        source_field=config.source_field,
        target_field=config.target_field,
        system=config.system,
    )


def chat_template(config: RunConfig) -> ChatTemplate:
    return ChatTemplate(
        tokenizer=config.tokenizer,
        trust_remote_code=config.trust_remote_code,
        added_tokens=tuple(config.add_special_tokens),
        train_on=config.train_on,
    )


def _render_fn(config: RunConfig) -> beam.DoFn:
    if config.is_chat:
        return ChatRenderDoFn(chat_fields(config), chat_template(config))
    template = make_template(
        config.template,
        source_field=config.source_field,
        target_field=config.target_field,
        separator=config.separator,
    )
    return RenderDoFn(template)


def _tokenize_fn(config: RunConfig, spill_dir: str, backend: BackendPlan | None,
                 source_id: int | None = None) -> beam.DoFn:
    options = tokenize_options(config, source_id)
    if config.is_chat:
        chat = JointChatTokenizeDoFn if config.chat_boundary == "joint" else ChatTokenizeDoFn
        return chat(options, spill_dir)
    pairs = JointTokenizeDoFn if config.pair_boundary == "joint" else TokenizeDoFn
    return pairs(options, spill_dir, backend)


def earlier_key_files(destination: Destination) -> list[str]:
    """The dedup key files of the generations the new one joins (``--append``): what it must not repeat."""
    return key_files_of(destination.output, destination.kept_generations)


def key_files_of(output: str, generations: Iterable[GenerationInfo]) -> list[str]:
    """The dedup key files that ``generations`` of the dataset in ``output`` list, as paths. A generation with
    examples but no key files (written by a seqpack older than its ``--dedup exact``) is a warning: appends do not
    drop the pairs it holds."""
    paths = []
    for generation in generations:
        found = [path for path in generation.files if is_dedup_key_file(path)]
        if not found and generation.examples:
            logging.getLogger("seqpack").warning(
                "generation %d of %s has no dedup key files (a seqpack older than its --dedup exact wrote it): "
                "appends do not drop the pairs it holds; seqpack run --rebuild dedups the whole dataset",
                generation.id, output,
            )
        paths += [FileSystems.join(output, path) for path in found]
    return paths


@dataclass
class SourceOutputs:
    """What one source's branch (read, render, dedup, tokenize) gives the rest of the pipeline."""

    spills: beam.PCollection
    rejected: list[beam.PCollection]
    """``(stage, Rejected)`` pairs, or in a mixture ``(stage, Rejected, source name)``."""
    stats: list[beam.PCollection]
    keys: beam.PCollection | None
    """The dedup keys of the records it kept (``--dedup exact``)."""


def _source_branch(pipeline: beam.Pipeline, config: RunConfig, files: list, *, name: str | None, source_id: int | None,
                   plan: CommitPlan, backend: BackendPlan | None) -> SourceOutputs:
    """One source's records to spill files, with ``config`` (the run's, or a source's ``RunConfig.per_source``).
    A mixture's steps are labelled with the source's name (``Tokenize[code]``); a plain run's as always."""
    def label(step: str) -> str:
        return step if name is None else f"{step}[{name}]"

    read = pipeline | label("ReadRecords") >> ReadRecords(files, max_record_bytes=config.max_record_bytes)
    rendered = read.records | label("Render") >> beam.ParDo(_render_fn(config)).with_outputs(
        REJECTED_TAG, STATS_TAG, main="pairs"
    )
    batches, stats, keys = rendered.pairs, [rendered[STATS_TAG]], None
    if config.dedup == "exact":
        deduped = (
            batches
            | label("OnePerElement") >> beam.FlatMap(list)
            | label("DropExactDuplicates") >> DropExactDuplicates(earlier_key_files(plan.destination))
        )
        batches = deduped.kept | label("Rebatch") >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
        keys, stats = deduped[KEYS_TAG], [*stats, deduped[STATS_TAG]]
    spill_dir = FileSystems.join(plan.destination.staging, SPILL_DIR)
    tokenized = batches | label("Tokenize") >> beam.ParDo(
        _tokenize_fn(config, spill_dir, backend, source_id)
    ).with_outputs(REJECTED_TAG, STATS_TAG, main="spills")
    stats.append(tokenized[STATS_TAG])
    if name is not None:  # the source's counts also go under stats["sources"][name]
        stats = [part | label(f"CountSource{i}") >> beam.Map(stats_format.for_source, name)
                 for i, part in enumerate(stats)]
    rejected = [
        read.rejected | label("FromRead") >> beam.Map(_tag("read", name)),
        rendered[REJECTED_TAG] | label("FromRender") >> beam.Map(_tag("render", name)),
        tokenized[REJECTED_TAG] | label("FromTokenize") >> beam.Map(_tag("tokenize", name)),
    ]
    return SourceOutputs(tokenized.spills, rejected, stats, keys)


def _together(parts: list[beam.PCollection], label: str) -> beam.PCollection:
    """One PCollection of ``parts``: the only one as it is (a plain run's graph unchanged), else flattened."""
    return parts[0] if len(parts) == 1 else parts | label >> beam.Flatten()


def build_pipeline(
    pipeline: beam.Pipeline,
    config: RunConfig,
    files: list,
    *,
    plan: CommitPlan,
    pad_id: int,
    found: list[FoundFile],
    backend: BackendPlan | None = None,
    audit: AuditFacts | None = None,
    source_audits: tuple[AuditFacts, ...] = (),
) -> None:
    """Pairs in; shards and rejected records out in the new revision's directory, spill files in its staging
    directory; then, once all is written, the commit step publishes the revision (``pipeline.commit_step``).

    ``backend``: the Rust tokenizer the driver saved for the workers (``tokenizer.BackendPlan``); without it
    every worker loads the tokenizer through ``transformers``. ``--shuffle auto`` is resolved for the pipeline's
    runner here (``runners.resolve_shuffle``). ``found``: the input files as the driver listed them; the job
    hashes them to record what the generation consumed (``transforms.hash_inputs``). With ``--dedup exact``
    the generation stores the keys of the records it kept, and drops those the generations it joins stored
    (``transforms.dedup``). With ``audit`` (``pipeline.run_audit``), the shard writers audit every block they
    write. A mixture (``config.sources``) has a branch per source, each with its own files and options, and its
    examples tagged with their source; they are shuffled and packed together.
    """
    revision_root = plan.destination.root
    names: list[str | None] = list(config.source_names) or [None]
    branches = [
        _source_branch(pipeline, source_config, part, name=name, source_id=None if name is None else source_id,
                       plan=plan, backend=backend)
        for source_id, (name, source_config, part) in enumerate(
            zip(names, config.per_source(), files_by_source(config, files), strict=True))
    ]
    dedup_stats = []
    if config.dedup == "exact":
        keys = _together([branch.keys for branch in branches], "AllKeys")
        key_files = keys | "WriteKeyFiles" >> WriteKeyFiles(revision_root)
        dedup_stats = [key_files[STATS_TAG]]  # the commit lists the key files: it waits
    spills = _together([branch.spills for branch in branches], "AllSpills")
    shuffle = resolve_shuffle(config.shuffle, pipeline.runner)
    mixture, mix_stats = None, []
    if config.sources:  # the weighting: how many copies of each example, planned from all the spill files
        mixture = spills | "PlanMixture" >> PlanMixture(mix_options(config))
        mix_stats = [mixture | "WriteMixturePlan" >> beam.ParDo(WritePlanDoFn(revision_root))]
    shards = spills | "ShuffleAndPack" >> ShuffleAndPack(pack_options(config, pad_id), shuffle=shuffle,
                                                         plan=mixture)
    written = shards | "WriteShards" >> WriteShards(
        shard_format(config), root=revision_root, staging=plan.destination.staging,
        sizing=ShardSizing(config.shard_bytes, config.bucket_tokens),
        audit=ShardAudit(audit, plan.destination.directory, source_audits) if audit else None,
    )
    rejected_stats = (
        [rejected for branch in branches for rejected in branch.rejected]
        | "AllRejected" >> beam.Flatten()
        | "WriteRejected" >> WriteRejected(revision_root)
    )
    shard_list = written["shards"] | "ListShards" >> beam.combiners.ToList()
    consumed = pipeline | "HashInputs" >> HashInputs(found) | "ListConsumed" >> beam.combiners.ToList()
    (
        (*[stats for branch in branches for stats in branch.stats], written[STATS_TAG], rejected_stats, *dedup_stats,
         *mix_stats)
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergeStats())
        # Both inputs exist only once every shard and the rejected records are written: the commit comes last.
        | "Commit" >> beam.ParDo(CommitDoFn(plan), shards=beam.pvalue.AsSingleton(shard_list),
                                 inputs=beam.pvalue.AsSingleton(consumed))
    )
