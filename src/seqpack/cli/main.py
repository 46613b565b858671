"""The ``seqpack`` command line: ``run``, ``watch``, ``compact``, ``demo``, ``verify``, ``inspect``, ``audit``,
``report``, ``stats`` and ``status``.

Exit codes a scheduler can act on: 0 done, 2 usage or configuration error (nothing started), 1 the run
failed and nothing was committed (``status``: an input changed after a generation consumed it).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, NoReturn

from seqpack.errors import RunFailedError, UsageError
from seqpack.schemas.stats import AccountingError

EXIT_USAGE = 2
EXIT_FAILED = 1


class _HelpFormatter(argparse.HelpFormatter):
    """Help that ends with the option's default, where it has one worth showing and does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if not text or "default" in text or not action.option_strings or default in (None, "", [], argparse.SUPPRESS):
            return text
        if isinstance(default, bool):  # a switch: its help says what giving it does
            return text
        shown = f"{default:,}" if isinstance(default, int) else str(default)
        if shown != shown.strip():
            shown = repr(shown)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: a mistake gets one line saying what to change, not the whole usage."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        from seqpack.cli.flags import choice_error

        if action.choices is not None and value not in action.choices:
            name = next((flag for flag in action.option_strings if flag.startswith("--")), action.dest)
            raise argparse.ArgumentError(None, choice_error(name, value, action.choices))

    def error(self, message: str) -> NoReturn:
        # A bad choice already names every valid value; other mistakes point at the help.
        hint = "" if " must be one of " in message else f" (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, f"seqpack: error: {message}{hint}\n")


def _command(commands: argparse._SubParsersAction, name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` opens with the line that ``seqpack --help`` shows for it."""
    return commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".", **kwargs)


def _parser() -> argparse.ArgumentParser:
    from seqpack.cli.flags import add_run_arguments, add_watch_arguments

    parser = argparse.ArgumentParser(prog="seqpack", description=__doc__.splitlines()[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    run = _command(commands, "run", "turn source/target pairs into packed shards",
                   epilog="Any Apache Beam pipeline option (--runner, --project, ...) is passed on.")
    add_run_arguments(run)
    run.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    run.add_argument("--verbose", "-v", action="store_true",
                     help="also print Beam's and the local workers' log lines as they happen (by default they go "
                     "to a log file, named only if the run fails)")
    run.add_argument("--config", metavar="JOB.yaml",
                     help="take options from this YAML file (option: value, Beam options under beam:); "
                     "flags given here override it")
    run.set_defaults(_run_parser=run)  # the job file is read against this parser's options
    watch = _command(commands, "watch", "keep appending: a generation for every batch of new input files that "
                     "settled", epilog="Takes every `seqpack run` option (it always appends) and Beam's pipeline "
                     "options; see docs/scheduling.md for running it as a service.")
    add_run_arguments(watch)
    add_watch_arguments(watch)
    watch.add_argument("--verbose", "-v", action="store_true",
                       help="also print Beam's and the local workers' log lines as they happen")
    watch.add_argument("--config", metavar="JOB.yaml",
                       help="take options from this YAML file (as seqpack run --config; watch options too)")
    watch.set_defaults(_run_parser=watch)
    compact = _command(commands, "compact", "repack several generations of a dataset into one, examples kept exactly",
                       epilog="Any Apache Beam pipeline option (--runner, --project, ...) is passed on.")
    compact.add_argument("dataset", help="dataset directory or URL (written by seqpack run, grown by --append)")
    compact.add_argument("--generations", type=_generation_ids, metavar="1,2,3",
                         help="ids of the generations to replace (two or more); default: all of them")
    compact.add_argument("--shard-bytes", type=int, default=None,
                         help="about how large a shard file grows; default: the dataset's own setting")
    compact.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    compact.add_argument("--verbose", "-v", action="store_true",
                         help="also print Beam's and the local workers' log lines as they happen (by default they go "
                         "to a log file, named only if the job fails)")
    compact.set_defaults(_compact_parser=compact)
    demo = _command(commands, "demo", "run the whole pipeline on the bundled demo data")
    demo.add_argument("--output", "-o", default="seqpack-demo", help="where to put the demo tokenizer and dataset")
    verify = _command(commands, "verify", "check every shard of a dataset against its manifest")
    verify.add_argument("dataset", help="dataset directory or URL")
    inspect = _command(commands, "inspect", "print decoded blocks: masked text dim, trained text highlighted")
    inspect.add_argument("dataset", help="dataset directory or URL")
    inspect.add_argument("--split", default="train", help="split to show (default train)")
    which = inspect.add_mutually_exclusive_group()
    which.add_argument("--block", type=int, action="append", metavar="N",
                       help="show block N of the split (negative: from the end); repeat for several; default 0")
    which.add_argument("--random", type=_count, metavar="K", help="show K random blocks")
    inspect.add_argument("--seed", type=int, default=None, help="seed for --random")
    inspect.add_argument("--tokenizer", "-t", help="decode with this tokenizer instead of the dataset's")
    inspect.add_argument("--generation", type=int, metavar="N",
                         help="show only generation N's blocks, numbered from its first (0)")
    inspect.add_argument("--source", metavar="NAME",
                         help="a mixture: only blocks holding examples of source NAME, and only those examples")
    colors = inspect.add_mutually_exclusive_group()
    colors.add_argument("--plain", "--no-color", dest="color", action="store_false", default=None,
                        help="no colours: mark masked text ⟦like this⟧ (the default when not on a terminal)")
    colors.add_argument("--color", dest="color", action="store_true", default=None, help="colours even when piped")
    audit = _command(commands, "audit", "check every example of a dataset for masking, BOS/EOS, position and "
                     "truncation faults", epilog="Exit code 0 when nothing is found, 1 when something is (each "
                     "finding's code, count and meaning, and three decoded examples), 2 for a usage error.")
    audit.add_argument("dataset", help="dataset directory or URL")
    audit.add_argument("--split", action="append", metavar="NAME",
                       help="audit only this split; repeat for several; default: every split")
    audit.add_argument("--tokenizer", "-t", help="decode the examples shown with this tokenizer instead of the "
                       "dataset's")
    audit_colors = audit.add_mutually_exclusive_group()
    audit_colors.add_argument("--plain", "--no-color", dest="color", action="store_false", default=None,
                              help="no colours: mark masked text ⟦like this⟧ (the default when not on a terminal)")
    audit_colors.add_argument("--color", dest="color", action="store_true", default=None,
                              help="colours even when piped")
    report = _command(commands, "report", "write a self-contained HTML report with plots")
    report.add_argument("dataset", help="dataset directory or URL")
    report.add_argument("--output", "-o", default="report.html", help="HTML file to write (default report.html)")
    report.add_argument("--split", default="train", help="split of the decoded sample blocks")
    report.add_argument("--blocks", type=_count, default=3, help="decoded sample blocks to show (default 3)")
    report.add_argument("--tokenizer", "-t", help="decode with this tokenizer instead of the dataset's")
    stats = _command(commands, "stats", "print a dataset's statistics as JSON, every generation added up")
    stats.add_argument("dataset", help="dataset directory or URL")
    stats.add_argument("--generation", type=int, metavar="N", help="only generation N's, as its run wrote them")
    status = _command(commands, "status", "list the generations, and the inputs not yet consumed or changed since",
                      epilog="Exit code 1 when an input changed after a generation consumed it (it is never read "
                      "again: --rebuild starts over), so a scheduler can alert; 0 otherwise.")
    status.add_argument("dataset", help="dataset directory or URL")
    status.add_argument("--input", "-i", action="extend", nargs="+", metavar="GLOB",
                        help="compare these files, globs or directories (default: the newest generation's --input)")
    status.add_argument("--rehash", action="store_true",
                        help="hash every consumed file again instead of trusting an unchanged size and time")
    return parser


def _generation_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be ids separated by commas (e.g. 1,2), got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("must name at least two generation ids (e.g. 1,2)")
    return ids


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:  # before the parser imports Beam: a local run's workers get ready meanwhile
        from seqpack.pipeline.warm_workers import start_early

        start_early(argv[1:])
    try:
        return _main(argv)
    finally:
        from seqpack.pipeline.warm_workers import close_early

        close_early()


def _main(argv: list[str]) -> int:
    _setup_logging()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            from seqpack.cli.commands import run_from_args
            from seqpack.cli.flags import check_command_line
            from seqpack.cli.jobfile import apply_job_file

            run_argv = argv[argv.index("run") + 1 :]
            check_command_line(args._run_parser, extra)
            return run_from_args(args, apply_job_file(args._run_parser, args, run_argv) + extra)
        if args.command == "watch":
            from seqpack.cli.commands import watch_from_args
            from seqpack.cli.flags import check_command_line
            from seqpack.cli.jobfile import apply_job_file

            watch_argv = argv[argv.index("watch") + 1 :]
            check_command_line(args._run_parser, extra)
            return watch_from_args(args, apply_job_file(args._run_parser, args, watch_argv) + extra)
        if args.command == "compact":
            from seqpack.cli.commands import compact_from_args
            from seqpack.cli.flags import check_command_line

            check_command_line(args._compact_parser, extra)
            return compact_from_args(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "demo":
            from seqpack.cli.commands import run_demo

            return run_demo(args.output)
        if args.command == "verify":
            return _verify(args.dataset)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "audit":
            return _audit(args)
        if args.command == "report":
            return _report(args)
        if args.command == "stats":
            return _stats(args)
        if args.command == "status":
            return _status(args)
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
    print("\n".join(summary.lines(dataset)))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from seqpack.schemas import DatasetFormatError
    from seqpack.tools.blocks import InspectError, NoSuchBlock, inspect_blocks, render_inspection, use_color
    from seqpack.tools.source_blocks import inspect_source

    if args.source is not None and args.generation is not None:
        print("seqpack: error: --source and --generation cannot be combined yet: pass one", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.source is not None:
            inspection = inspect_source(args.dataset, source=args.source, split=args.split, rows=args.block or (),
                                        random_count=args.random or 0, seed=args.seed, tokenizer=args.tokenizer)
        else:
            inspection = inspect_blocks(args.dataset, split=args.split, rows=args.block or (),
                                        random_count=args.random or 0, seed=args.seed, tokenizer=args.tokenizer,
                                        generation=args.generation)
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


def _audit(args: argparse.Namespace) -> int:
    from seqpack.schemas import DatasetFormatError
    from seqpack.tools.audit import audit_dataset, render_audit
    from seqpack.tools.blocks import InspectError, NoSuchBlock, use_color

    try:
        audit = audit_dataset(args.dataset, tokenizer=args.tokenizer, splits=args.split or ())
    except NoSuchBlock as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (DatasetFormatError, InspectError) as error:
        print(f"seqpack: audit failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    if audit.tokenizer_warning:
        print(f"seqpack: warning: {audit.tokenizer_warning}", file=sys.stderr)
    try:
        for line in render_audit(audit, color=use_color(force=args.color)):
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # `seqpack audit OUT | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
    return audit.exit_code


def _report(args: argparse.Namespace) -> int:
    from seqpack.schemas import DatasetFormatError
    from seqpack.tools.report import MissingDependencyError, write_report

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


def _stats(args: argparse.Namespace) -> int:
    from seqpack.schemas import DatasetFormatError
    from seqpack.schemas.stats import to_json
    from seqpack.tools.stats import dataset_stats

    try:
        stats = dataset_stats(args.dataset, generation=args.generation)
    except DatasetFormatError as error:
        print(f"seqpack: stats failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(to_json(stats))
    return 0


def _status(args: argparse.Namespace) -> int:
    from seqpack.schemas import DatasetFormatError
    from seqpack.tools.status import dataset_status

    try:
        status = dataset_status(args.dataset, inputs=args.input or (), rehash=args.rehash)
    except (DatasetFormatError, OSError) as error:
        print(f"seqpack: status failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(status.lines()))
    return status.exit_code


def console_main() -> None:
    """The ``seqpack`` command. It ends the process as soon as the command is done and its output flushed: a
    stopped run's Beam threads may still wait on workers the signal killed, and after any run the interpreter
    would spend about a second tearing down the modules it imported (torch, Beam, pandas) for nothing."""
    code = main()
    _exit_now(code, run_exit_handlers=code not in (128 + signal.SIGINT, 128 + signal.SIGTERM))


def _exit_now(code: int, *, run_exit_handlers: bool) -> NoReturn:
    """Run the ``atexit`` handlers (logging's flush, temporary directories; not after a stop, where one may wait
    on a thread that waits on a killed worker), flush what was written, then end without the interpreter's
    teardown."""
    if run_exit_handlers:
        with suppress(Exception):
            atexit._run_exitfuncs()  # CPython's own call of what a normal exit runs first
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
