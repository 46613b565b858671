"""``seqpack run``, ``seqpack compact`` and ``seqpack demo``: a job from the command line's flags, its summary
and its report."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from seqpack.cli.flags import config_from_args
from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.faults import checkpoint
from seqpack.pipeline.run import Submitted, UpToDate, run
from seqpack.pipeline.run_summary import summary, up_to_date_message
from seqpack.schemas import REPORT_NAME


def run_from_args(args: argparse.Namespace, beam_args: list[str]) -> int:
    config = config_from_args(args)
    if args.report:
        _require_report_dependencies()
    verbose = bool(getattr(args, "verbose", False))
    if verbose:
        logging.getLogger().setLevel(logging.INFO)
    committed = run(config, beam_args, wait=args.wait, lock_lease=args.lock_lease, progress=not args.quiet,
                    verbose=verbose)
    if committed is None:
        print("seqpack: dry run: the job was built and checked; nothing was run or written", file=sys.stderr)
        return 0
    if isinstance(committed, UpToDate):
        if not args.quiet:
            print(up_to_date_message(committed), file=sys.stderr)
        return 0
    if isinstance(committed, Submitted):
        if not args.quiet or args.report:
            print(submitted_message(committed, report=args.report), file=sys.stderr)
        checkpoint("submitted")  # a test kills the launcher here: the job must commit without it
        return 0
    manifest, stats = committed
    report = _write_report(config.output) if args.report else None
    if not args.quiet:
        print(summary(manifest, stats, config.output, report=report), file=sys.stderr)
    return 1 if args.report and report is None else 0


def watch_from_args(args: argparse.Namespace, beam_args: list[str]) -> int:
    """``seqpack watch``: the run's flags make each generation's configuration; the watch flags say when."""
    from seqpack.pipeline.watch import WatchOptions, watch

    if not args.wait:
        raise UsageError("seqpack watch waits for each generation it starts: drop --no-wait")
    if args.report:
        raise UsageError("seqpack watch writes no report: run `seqpack report OUT` when you want one")
    if args.overwrite:
        raise UsageError("seqpack watch only appends: drop --overwrite/--rebuild (run `seqpack run --rebuild` once "
                         "to start the dataset over, then watch it)")
    args.append = True
    config = config_from_args(args)
    options = WatchOptions(interval=args.interval, settle=args.settle, min_new_tokens=args.min_new_tokens,
                           max_wait=args.max_wait, once=args.once, status_file=args.status_file)
    if args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    return watch(config, beam_args, options, verbose=args.verbose)


def compact_from_args(args: argparse.Namespace, beam_args: list[str]) -> int:
    from seqpack.pipeline.compact import compact, compacted_summary

    if args.verbose:
        logging.getLogger().setLevel(logging.INFO)
    result = compact(args.dataset, generations=args.generations, shard_bytes=args.shard_bytes, beam_args=beam_args,
                     verbose=args.verbose)
    if not args.quiet:
        print(compacted_summary(result), file=sys.stderr)
    return 0


def submitted_message(job: Submitted, *, report: bool = False) -> str:
    """What a ``--no-wait`` launch says: the job commits by itself, how to see that it did, and the lock."""
    output = shlex.quote(job.output)
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.lease_until))
    lines = [
        f"seqpack: submitted: the job writes {job.output}/{job.directory} and commits {job.output} itself when it "
        "has finished (manifest.json last; a job that fails commits nothing)",
        f"  the output stays locked for the job ({job.lock}) until it commits, or until {until} if it never does",
        f"  check it: seqpack verify {output}",
    ]
    if report:
        lines.append(f"  --report: not written, the dataset is not committed yet; once it is: seqpack report {output}")
    return "\n".join(lines)


def _require_report_dependencies() -> None:
    """``--report`` without matplotlib is found before the run, not after an hour of work."""
    from seqpack.tools.report import MissingDependencyError, require_matplotlib

    try:
        require_matplotlib()
    except MissingDependencyError as error:
        raise UsageError(str(error)) from error


def _write_report(output: str) -> str | None:
    """Write ``OUT/report.html``; on failure say that the dataset itself is complete, and how to retry."""
    from seqpack.tools.report import write_report

    path = f"{output}/{REPORT_NAME}"
    try:
        return write_report(output, path)
    except Exception as error:  # noqa: BLE001 - the dataset is committed; only the report is missing
        print(
            f"seqpack: the dataset in {output} is complete, but its report failed: {error}. "
            f"Retry with: seqpack report {shlex.quote(output)} -o {shlex.quote(path)}",
            file=sys.stderr,
        )
        return None


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
    print(f"  the demo's tokenizer (built from the pairs): {tokenizer_dir}", file=sys.stderr)
    print(config.output)
    return 0
