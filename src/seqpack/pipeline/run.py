"""Run a job end to end: check everything up front, run the pipeline, commit, print a short summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import apache_beam as beam

from seqpack.pipeline.build import build_pipeline
from seqpack.pipeline.commit import commit, prepare_output, save_tokenizer
from seqpack.pipeline.config import RunConfig, UsageError
from seqpack.pipeline.lock import OutputLock
from seqpack.pipeline.options import config_from_args, pipeline_options
from seqpack.schemas import Manifest, TokenizerInfo
from seqpack.templates import make_template
from seqpack.tokenizer import TokenizerError, add_special_tokens, describe, load_tokenizer, pad_id_of


def _check_up_front(config: RunConfig) -> tuple[list, Any, TokenizerInfo]:
    """Everything that can be wrong before any work starts: template, tokenizer, inputs, output."""
    from seqpack.transforms.read import resolve_inputs

    try:
        make_template(config.template, source_field=config.source_field, target_field=config.target_field)
        tokenizer = load_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
        added = add_special_tokens(tokenizer, config.add_special_tokens)
        pad_id = pad_id_of(tokenizer, config.pad_id)
    except (ValueError, TokenizerError) as error:
        raise UsageError(str(error)) from error
    if config.add_eos and tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no EOS token to end targets with: pass --no-eos")
    try:
        files = resolve_inputs(config.inputs)
    except ValueError as error:
        raise UsageError(str(error)) from error
    return files, tokenizer, describe(tokenizer, config.tokenizer, pad_id, added)


def run(config: RunConfig, beam_args: list[str] | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Run the job described by ``config``; return the committed manifest and statistics.

        >>> manifest, stats = run(RunConfig(inputs=["pairs.jsonl"], output="out", tokenizer="tok/"))
    """
    config.validate()
    options, runner = pipeline_options(list(beam_args or []))
    files, tokenizer, tokenizer_info = _check_up_front(config)
    with OutputLock(config.output):
        staging = prepare_output(config)
        if config.add_special_tokens:  # the trainer needs the extended tokenizer: it ships with the data
            save_tokenizer(tokenizer, staging)
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_pipeline(pipeline, config, files, staging, tokenizer_info.pad_id)
        result = pipeline.run()
        result.wait_until_finish()
        return commit(config, tokenizer_info, staging)


def summary(manifest: Manifest, stats: dict[str, Any], output: str) -> str:
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["rejected_by_reason"].items())) or "none"
    dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["dropped_by_reason"].items())) or "none"
    splits = "; ".join(
        f"{name}: {s.rows:,} rows in {len(s.shards)} shard(s), {s.tokens:,} tokens"
        for name, s in manifest.splits.items()
    ) or "no examples"
    return "\n".join(
        [
            f"seqpack: wrote {output}",
            f"  records read {stats['records_read']:,}; examples {sum(stats['examples_by_split'].values()):,}; "
            f"truncated {stats['examples_truncated']:,}; split {stats['examples_split']:,}",
            f"  {splits}",
            f"  fill {stats['fill']:.2%} of {manifest.max_length}-token blocks ({manifest.packing})",
            f"  rejected: {rejected} (see {output}/rejected/); dropped: {dropped}",
            f"  check it: seqpack verify {output}",
        ]
    )


def run_from_args(args: argparse.Namespace, beam_args: list[str]) -> int:
    config = config_from_args(args)
    manifest, stats = run(config, beam_args)
    if not args.quiet:
        print(summary(manifest, stats, config.output), file=sys.stderr)
    return 0


def run_demo(output: str) -> int:
    """Build the demo tokenizer, run the pipeline on the bundled pairs, print where the result is."""
    from seqpack.demo import build_demo_tokenizer, demo_pairs_path

    root = Path(output)
    tokenizer_dir = build_demo_tokenizer(root / "tokenizer")
    config = RunConfig(
        inputs=[str(demo_pairs_path())],
        output=str(root / "dataset"),
        tokenizer=str(tokenizer_dir),
        max_length=256,
        validation_fraction=0.05,
        bucket_tokens=4096,
        overwrite=True,
    )
    manifest, stats = run(config)
    print(summary(manifest, stats, config.output), file=sys.stderr)
    print(config.output)
    return 0
