"""The ``seqpack`` command line: ``run``, ``demo`` and ``verify``.

Exit codes a scheduler can act on: 0 done, 2 usage or configuration error (nothing started), 1 the run
failed and nothing was committed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from seqpack.pipeline.config import UsageError
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
    demo = commands.add_parser("demo", help="run the whole pipeline on the bundled demo data")
    demo.add_argument("--output", "-o", default="seqpack-demo", help="where to put the demo tokenizer and dataset")
    verify = commands.add_parser("verify", help="check every shard of a dataset against its manifest")
    verify.add_argument("dataset", help="dataset directory or URL")
    return parser


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
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            from seqpack.pipeline.run import run_from_args

            return run_from_args(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "demo":
            from seqpack.pipeline.run import run_demo

            return run_demo(args.output)
        if args.command == "verify":
            return _verify(args.dataset)
    except UsageError as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AccountingError as error:
        print(f"seqpack: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
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


if __name__ == "__main__":
    sys.exit(main())
