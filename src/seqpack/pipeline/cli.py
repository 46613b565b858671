"""The ``seqpack`` command line: ``run``, ``demo``, ``verify``, ``inspect`` and ``report``.

Exit codes a scheduler can act on: 0 done, 2 usage or configuration error (nothing started), 1 the run
failed and nothing was committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from seqpack.pipeline.config import RunFailedError, UsageError
from seqpack.schemas.stats import AccountingError

EXIT_USAGE = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    from seqpack.pipeline.options import add_run_arguments

    parser = argparse.ArgumentParser(prog="seqpack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="turn source/target pairs into packed shards",
                              epilog="Any Apache Beam pipeline option (--runner, --project, ...) is passed on.")
    add_run_arguments(run)
    run.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    run.add_argument("--config", metavar="JOB.yaml",
                     help="take options from this YAML file (option: value, Beam options under beam:); "
                     "flags given here override it")
    run.set_defaults(_run_parser=run)  # the job file is read against this parser's options
    demo = commands.add_parser("demo", help="run the whole pipeline on the bundled demo data")
    demo.add_argument("--output", "-o", default="seqpack-demo", help="where to put the demo tokenizer and dataset")
    verify = commands.add_parser("verify", help="check every shard of a dataset against its manifest")
    verify.add_argument("dataset", help="dataset directory or URL")
    inspect = commands.add_parser("inspect", help="print decoded blocks: masked text dim, trained text highlighted")
    inspect.add_argument("dataset", help="dataset directory or URL")
    inspect.add_argument("--split", default="train", help="split to show (default train)")
    which = inspect.add_mutually_exclusive_group()
    which.add_argument("--block", type=int, action="append", metavar="N",
                       help="show block N of the split (negative: from the end); repeat for several; default 0")
    which.add_argument("--random", type=_count, metavar="K", help="show K random blocks")
    inspect.add_argument("--seed", type=int, default=None, help="seed for --random")
    inspect.add_argument("--tokenizer", "-t", help="decode with this tokenizer instead of the dataset's")
    colors = inspect.add_mutually_exclusive_group()
    colors.add_argument("--plain", "--no-color", dest="color", action="store_false", default=None,
                        help="no colours: mark masked text ⟦like this⟧ (the default when not on a terminal)")
    colors.add_argument("--color", dest="color", action="store_true", default=None, help="colours even when piped")
    report = commands.add_parser("report", help="write a self-contained HTML report with plots")
    report.add_argument("dataset", help="dataset directory or URL")
    report.add_argument("--output", "-o", default="report.html", help="HTML file to write (default report.html)")
    report.add_argument("--split", default="train", help="split of the decoded sample blocks")
    report.add_argument("--blocks", type=_count, default=3, help="decoded sample blocks to show (default 3)")
    report.add_argument("--tokenizer", "-t", help="decode with this tokenizer instead of the dataset's")
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


class _DropImportNoise(logging.Filter):
    """Beam warns at import that optional Google Cloud clients are missing; that is expected offline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _setup_logging() -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_DropImportNoise())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    _setup_logging()
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            from seqpack.pipeline.options import apply_job_file
            from seqpack.pipeline.run import run_from_args

            run_argv = argv[argv.index("run") + 1 :]
            return run_from_args(args, apply_job_file(args._run_parser, args, run_argv) + extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "demo":
            from seqpack.pipeline.run import run_demo

            return run_demo(args.output)
        if args.command == "verify":
            return _verify(args.dataset)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "report":
            return _report(args)
    except UsageError as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AccountingError as error:
        print(f"seqpack: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except RunFailedError as error:
        print(f"seqpack: failed: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_FAILED)
    return EXIT_USAGE


def _verify(dataset: str) -> int:
    from seqpack.dataset import verify_dataset
    from seqpack.schemas import DatasetFormatError

    try:
        summary = verify_dataset(dataset)
    except DatasetFormatError as error:
        print(f"seqpack: verify failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{dataset}: OK ({summary})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from seqpack.inspect import InspectError, NoSuchBlock, inspect_blocks, render_inspection, use_color
    from seqpack.schemas import DatasetFormatError

    try:
        inspection = inspect_blocks(args.dataset, split=args.split, rows=args.block or (),
                                    random_count=args.random or 0, seed=args.seed, tokenizer=args.tokenizer)
    except NoSuchBlock as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (DatasetFormatError, InspectError) as error:
        print(f"seqpack: inspect failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    if inspection.tokenizer.warning:
        print(f"seqpack: warning: {inspection.tokenizer.warning}", file=sys.stderr)
    try:
        for line in render_inspection(inspection, color=use_color(force=args.color)):
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `seqpack inspect OUT | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
    if inspection.missing:  # after the blocks that exist, so one bad number does not hide the others
        print(f"seqpack: error: {inspection.missing}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _report(args: argparse.Namespace) -> int:
    from seqpack.report import MissingDependencyError, write_report
    from seqpack.schemas import DatasetFormatError

    try:
        write_report(args.dataset, args.output, split=args.split, blocks=args.blocks, tokenizer=args.tokenizer)
    except MissingDependencyError as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DatasetFormatError as error:
        print(f"seqpack: report failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
