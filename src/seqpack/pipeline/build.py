"""Assemble the pipeline: the whole data flow on one screen."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.audit import AuditFacts
from seqpack.config import RunConfig
from seqpack.generations import FoundFile
from seqpack.masking import masks_example_starts
from seqpack.pipeline.commit import Destination
from seqpack.pipeline.commit_step import CommitDoFn, CommitPlan
from seqpack.pipeline.runners import resolve_shuffle
from seqpack.prompt_templates import make_template
from seqpack.schemas.layout import is_dedup_key_file
from seqpack.schemas.manifest import GenerationInfo
from seqpack.tokenizer import BackendPlan
from seqpack.transforms.audit_shards import ShardAudit
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.dedup import KEYS_TAG, DropExactDuplicates, WriteKeyFiles
from seqpack.transforms.hash_inputs import HashInputs
from seqpack.transforms.joint import JointChatTokenizeDoFn, JointTokenizeDoFn
from seqpack.transforms.pack import PackOptions, ShuffleAndPack
from seqpack.transforms.read import ReadRecords
from seqpack.transforms.rejected import WriteRejected
from seqpack.transforms.render import REJECTED_TAG, ChatFields, ChatRenderDoFn, ChatTemplate, RenderDoFn
from seqpack.transforms.shard_groups import WriteShards, buckets_per_shard
from seqpack.transforms.shuffle import SPILL_DIR
from seqpack.transforms.tokenize import ChatTokenizeDoFn, TokenizeDoFn, TokenizeOptions
from seqpack.transforms.write import ShardFormat

META_DIR = "_meta"
BACKEND_TOKENIZER = "tokenizer-backend.json"


def _tag(stage: str):  # noqa: ANN202 - a small labelled lambda factory
    return lambda rejected: (stage, rejected)


def tokenize_options(config: RunConfig) -> TokenizeOptions:
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
    )


def pack_options(config: RunConfig, pad_id: int) -> PackOptions:
    return PackOptions(
        max_length=config.max_length,
        packing=config.packing,
        bucket_tokens=config.bucket_tokens,
        seed=config.seed,
        pad_id=pad_id,
        with_trained=config.is_chat,
        mask_boundaries=masks_example_starts(config.train_on, chat=config.is_chat),
    )


def shard_format(config: RunConfig) -> ShardFormat:
    return ShardFormat(file_format=config.file_format, row_group_size=config.row_group_size)


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


def _tokenize_fn(config: RunConfig, spill_dir: str, backend: BackendPlan | None) -> beam.DoFn:
    options = tokenize_options(config)
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
) -> None:
    """Pairs in; shards and rejected records out in the new revision's directory, spill files in its staging
    directory; then, once all is written, the commit step publishes the revision (``pipeline.commit_step``).

    ``backend``: the Rust tokenizer the driver saved for the workers (``tokenizer.BackendPlan``); without it
    every worker loads the tokenizer through ``transformers``. ``--shuffle auto`` is resolved for the pipeline's
    runner here (``runners.resolve_shuffle``). ``found``: the input files as the driver listed them; the job
    hashes them to record what the generation consumed (``transforms.hash_inputs``). With ``--dedup exact``
    the generation stores the keys of the records it kept, and drops those the generations it joins stored
    (``transforms.dedup``). With ``audit`` (``pipeline.run_audit``), the shard writers audit every block they
    write.
    """
    staging, revision_root = plan.destination.staging, plan.destination.root
    read = pipeline | "ReadRecords" >> ReadRecords(files, max_record_bytes=config.max_record_bytes)
    rendered = read.records | "Render" >> beam.ParDo(_render_fn(config)).with_outputs(
        REJECTED_TAG, STATS_TAG, main="pairs"
    )
    batches, dedup_stats = rendered.pairs, []
    if config.dedup == "exact":
        deduped = (
            batches
            | "OnePerElement" >> beam.FlatMap(list)
            | "DropExactDuplicates" >> DropExactDuplicates(earlier_key_files(plan.destination))
        )
        batches = deduped.kept | "Rebatch" >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
        key_files = deduped[KEYS_TAG] | "WriteKeyFiles" >> WriteKeyFiles(revision_root)
        dedup_stats = [deduped[STATS_TAG], key_files[STATS_TAG]]  # the commit lists the key files: it waits
    spill_dir = FileSystems.join(staging, SPILL_DIR)
    tokenized = batches | "Tokenize" >> beam.ParDo(_tokenize_fn(config, spill_dir, backend)).with_outputs(
        REJECTED_TAG, STATS_TAG, main="spills"
    )
    shuffle = resolve_shuffle(config.shuffle, pipeline.runner)
    shards = tokenized.spills | "ShuffleAndPack" >> ShuffleAndPack(pack_options(config, pad_id), shuffle=shuffle)
    written = shards | "WriteShards" >> WriteShards(
        shard_format(config), root=revision_root, staging=staging,
        per_shard=buckets_per_shard(config.shard_bytes, config.bucket_tokens),
        audit=ShardAudit(audit, plan.destination.directory) if audit else None,
    )
    rejected_stats = (
        (
            read.rejected | "FromRead" >> beam.Map(_tag("read")),
            rendered[REJECTED_TAG] | "FromRender" >> beam.Map(_tag("render")),
            tokenized[REJECTED_TAG] | "FromTokenize" >> beam.Map(_tag("tokenize")),
        )
        | "AllRejected" >> beam.Flatten()
        | "WriteRejected" >> WriteRejected(revision_root)
    )
    shard_list = written["shards"] | "ListShards" >> beam.combiners.ToList()
    consumed = pipeline | "HashInputs" >> HashInputs(found) | "ListConsumed" >> beam.combiners.ToList()
    (
        (rendered[STATS_TAG], tokenized[STATS_TAG], written[STATS_TAG], rejected_stats, *dedup_stats)
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergeStats())
        # Both inputs exist only once every shard and the rejected records are written: the commit comes last.
        | "Commit" >> beam.ParDo(CommitDoFn(plan), shards=beam.pvalue.AsSingleton(shard_list),
                                 inputs=beam.pvalue.AsSingleton(consumed))
    )
