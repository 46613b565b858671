"""Assemble the pipeline: the whole data flow on one screen."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from seqpack.config import RunConfig
from seqpack.templates import make_template
from seqpack.tokenizer import BackendPlan
from seqpack.transforms.bundle_stats import STATS_TAG, MergeStats
from seqpack.transforms.dedup import DropExactDuplicates
from seqpack.transforms.pack import ShuffleAndPack
from seqpack.transforms.read import ReadRecords
from seqpack.transforms.rejected import WriteRejected
from seqpack.transforms.render import REJECTED_TAG, ChatRenderDoFn, RenderDoFn
from seqpack.transforms.spill import SPILL_DIR
from seqpack.transforms.tokenize import ChatTokenizeDoFn, TokenizeDoFn
from seqpack.transforms.write import WriteJson, WriteShardDoFn

META_DIR = "_meta"
STATS_META = "stats.json"
SHARDS_META = "shards.json"
BACKEND_TOKENIZER = "tokenizer-backend.json"


def _tag(stage: str):  # noqa: ANN202 - a small labelled lambda factory
    return lambda rejected: (stage, rejected)


def _render_fn(config: RunConfig) -> beam.DoFn:
    if config.is_chat:
        return ChatRenderDoFn(config)
    template = make_template(
        config.template,
        source_field=config.source_field,
        target_field=config.target_field,
        separator=config.separator,
    )
    return RenderDoFn(template)


def _tokenize_fn(config: RunConfig, spill_dir: str, backend: BackendPlan | None) -> beam.DoFn:
    return ChatTokenizeDoFn(config, spill_dir) if config.is_chat else TokenizeDoFn(config, spill_dir, backend)


def build_pipeline(
    pipeline: beam.Pipeline,
    config: RunConfig,
    files: list,
    *,
    staging: str,
    revision_root: str,
    pad_id: int,
    backend: BackendPlan | None = None,
) -> None:
    """Pairs in; shards and rejected records out under ``revision_root`` (the new revision's directory),
    spill files and run metadata under ``staging``.

    ``backend``: the Rust tokenizer the driver saved for the workers (``tokenizer.BackendPlan``); without it
    every worker loads the tokenizer through ``transformers``.
    """
    read = pipeline | "ReadRecords" >> ReadRecords(files, max_record_bytes=config.max_record_bytes)
    rendered = read.records | "Render" >> beam.ParDo(_render_fn(config)).with_outputs(
        REJECTED_TAG, STATS_TAG, main="pairs"
    )
    batches, dedup_stats = rendered.pairs, []
    if config.dedup == "exact":
        deduped = batches | "OnePerElement" >> beam.FlatMap(list) | "DropExactDuplicates" >> DropExactDuplicates()
        batches = deduped.kept | "Rebatch" >> beam.BatchElements(min_batch_size=64, max_batch_size=512)
        dedup_stats = [deduped[STATS_TAG]]
    spill_dir = FileSystems.join(staging, SPILL_DIR)
    tokenized = batches | "Tokenize" >> beam.ParDo(_tokenize_fn(config, spill_dir, backend)).with_outputs(
        REJECTED_TAG, STATS_TAG, main="spills"
    )
    shards = tokenized.spills | "ShuffleAndPack" >> ShuffleAndPack(config, pad_id)
    written = shards | "WriteShards" >> beam.ParDo(WriteShardDoFn(config, revision_root)).with_outputs(
        STATS_TAG, main="shards"
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
    meta = FileSystems.join(staging, META_DIR)
    (
        (rendered[STATS_TAG], tokenized[STATS_TAG], written[STATS_TAG], rejected_stats, *dedup_stats)
        | "AllStats" >> beam.Flatten()
        | "MergeStats" >> beam.CombineGlobally(MergeStats())
        | "WriteStats" >> beam.ParDo(WriteJson(FileSystems.join(meta, STATS_META)))
    )
    (
        written.shards
        | "ListShards" >> beam.combiners.ToList()
        | "WriteShardList" >> beam.ParDo(WriteJson(FileSystems.join(meta, SHARDS_META)))
    )
