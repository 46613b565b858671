"""Command-line options of ``seqpack run``, and the Beam pipeline options that pass through unchanged."""

from __future__ import annotations

import argparse
import contextlib

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from seqpack.chat import STYLES as CHAT_STYLES
from seqpack.chat import TRAIN_ON as CHAT_TRAIN_ON
from seqpack.masking import OVERLONG_POLICIES, TRAIN_ON
from seqpack.packing import PACKING_STRATEGIES
from seqpack.pipeline.config import DEDUP_MODES, DEFAULT_BUCKET_TOKENS, FILE_FORMATS, RunConfig, UsageError


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", action="append", required=True, metavar="GLOB",
                    help="input files, globs or directories (JSONL, JSON, Parquet, Arrow, CSV/TSV, datasets "
                    "save_to_disk dirs; local or gs://, s3://); repeat for several")
    io.add_argument("--output", "-o", required=True, help="dataset directory to write (local or gs://, s3://)")
    io.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output")
    io.add_argument("--format", dest="file_format", choices=FILE_FORMATS, default="parquet")
    io.add_argument("--validation-fraction", type=float, default=0.0,
                    help="hold out this fraction of pairs (chosen by a hash of their text) into validation/")
    io.add_argument("--row-group-size", type=int, default=256, help="blocks per Parquet row group")
    io.add_argument("--max-record-bytes", type=int, default=64 << 20,
                    help="records larger than this are rejected without being parsed")
    io.add_argument("--report", action="store_true",
                    help="also write OUT/report.html: plots, rejected records and decoded blocks (needs matplotlib)")

    text = parser.add_argument_group("rendering")
    text.add_argument("--template", default="plain",
                      help="plain (source + separator → target), alpaca, chat (the tokenizer's chat template), "
                      "or a format string with {target}")
    text.add_argument("--source-field", default="source")
    text.add_argument("--target-field", default="target")
    text.add_argument("--separator", default=" = ", help="plain template: text between source and target")

    chat = parser.add_argument_group("conversations (--template chat)")
    chat.add_argument("--chat-style", choices=CHAT_STYLES, default="auto",
                      help="messages (OpenAI role/content), sharegpt (from/value), pair (source/target), or auto")
    chat.add_argument("--messages-field", default=None, help="field holding the message list")
    chat.add_argument("--role-map", default="", metavar="NAME=ROLE,...",
                      help="extra role names, e.g. human=user,bot=assistant")
    chat.add_argument("--system", default=None, help="system prompt for pairs and conversations without one")

    tok = parser.add_argument_group("tokenization and labels")
    tok.add_argument("--tokenizer", "-t", required=True,
                     help="Hugging Face tokenizer: local dir, tokenizer.json, .gguf file, gs:// dir or hub id")
    tok.add_argument("--trust-remote-code", action="store_true",
                     help="allow tokenizers that run code from their repository (off by default)")
    tok.add_argument("--max-length", type=int, default=2048)
    tok.add_argument("--no-eos", dest="add_eos", action="store_false", help="do not append EOS to the target")
    tok.add_argument("--train-on", choices=TRAIN_ON + CHAT_TRAIN_ON[:2], default="target",
                     help="pairs: target (default), source+target (every token of each example), all (also across "
                     "example boundaries); chat: assistant (default), last (final assistant turn), all")
    tok.add_argument("--overlong", choices=OVERLONG_POLICIES, default="truncate")
    tok.add_argument("--pad-id", type=int, default=None, help="padding id (default: pad token, else EOS)")

    hygiene = parser.add_argument_group("special tokens and data hygiene")
    hygiene.add_argument("--add-special-tokens", nargs="+", default=[], metavar="TOKEN",
                         help="add new special tokens (e.g. [SEP]); the extended tokenizer is saved in OUT/tokenizer/")
    hygiene.add_argument("--dedup", choices=DEDUP_MODES, default="none",
                         help="exact: drop exact duplicate pairs/conversations, keeping the first (file, line)")
    hygiene.add_argument("--min-target-tokens", type=int, default=0, help="drop examples with fewer target tokens")
    hygiene.add_argument("--max-source-tokens", type=int, default=None,
                         help="drop examples with more source (untrained) tokens")

    packing = parser.add_argument_group("shuffling and packing")
    packing.add_argument("--packing", choices=PACKING_STRATEGIES, default="bfd")
    packing.add_argument("--seed", type=int, default=0)
    packing.add_argument("--bucket-tokens", type=int, default=DEFAULT_BUCKET_TOKENS,
                         help="tokens per shuffle bucket and shard; bounds a worker's memory")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    config = RunConfig(
        inputs=list(args.input),
        output=args.output.rstrip("/") or "/",
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        template=args.template,
        source_field=args.source_field,
        target_field=args.target_field,
        separator=args.separator,
        add_eos=args.add_eos,
        train_on=args.train_on,
        overlong=args.overlong,
        packing=args.packing,
        seed=args.seed,
        bucket_tokens=args.bucket_tokens,
        file_format=args.file_format,
        validation_fraction=args.validation_fraction,
        row_group_size=args.row_group_size,
        pad_id=args.pad_id,
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
        max_record_bytes=args.max_record_bytes,
        dedup=args.dedup,
        min_target_tokens=args.min_target_tokens,
        max_source_tokens=args.max_source_tokens,
        add_special_tokens=tuple(args.add_special_tokens),
        chat_style=args.chat_style,
        messages_field=args.messages_field,
        role_map=parse_role_map(args.role_map),
        system=args.system,
    )
    config.validate()
    return config


def parse_role_map(text: str) -> dict[str, str]:
    """``"human=user,bot=assistant"`` → ``{"human": "user", "bot": "assistant"}``."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, role = item.partition("=")
        if not sep or not name.strip() or not role.strip():
            raise UsageError(f"--role-map item {item!r} is not NAME=ROLE (e.g. human=user)")
        mapping[name.strip()] = role.strip()
    return mapping


def _all_option_classes() -> list[type[PipelineOptions]]:
    found, pending = [], [PipelineOptions]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Flags that no Beam options class knows: most likely a typo in a seqpack flag."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_option_classes():
        with contextlib.suppress(argparse.ArgumentError):  # an option registered by two classes
            cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    return [arg for arg in unknown if arg.startswith("-")]


DASK_RUNNERS = ("DaskRunner", "seqpack.pipeline.dask_runner.DaskRunner")


def _wants_dask(beam_args: list[str]) -> bool:
    """Whether ``--runner`` names the Dask runner; if so, load it, which also registers the ``--dask_*`` flags.

    Beam knows no short name for its ``DaskRunner``, and the one it ships cannot run seqpack's pipeline (see
    ``seqpack.pipeline.dask_runner``): ``--runner DaskRunner`` means seqpack's.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runner")
    runner = parser.parse_known_args(beam_args)[0].runner
    if runner not in DASK_RUNNERS and not any(arg.startswith("--dask_") for arg in beam_args):
        return False
    try:
        import seqpack.pipeline.dask_runner  # noqa: F401 - registers Beam's DaskOptions
    except ImportError as error:
        raise UsageError(f"--runner {runner}: {error}") from error
    return runner in DASK_RUNNERS


def pipeline_options(beam_args: list[str]) -> tuple[PipelineOptions, object | None]:
    """Beam options from the leftover flags; with no ``--runner``, the local multi-process FnApiRunner.

    Beam's default DirectRunner first tries the Prism runner, which downloads a binary; seqpack must run
    offline, so it picks the FnApiRunner itself, with one worker process per core.
    """
    dask = _wants_dask(beam_args)
    unknown = unknown_beam_args(beam_args)
    if unknown:
        raise UsageError(
            f"unknown option {unknown[0]}: see `seqpack run --help`; Beam pipeline options pass through"
        )
    options = PipelineOptions(beam_args)
    if dask:
        from seqpack.pipeline.dask_runner import DaskRunner

        return options, DaskRunner()
    if options.view_as(StandardOptions).runner is not None:
        return options, None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    direct = options.view_as(DirectOptions)
    given = " ".join(beam_args)
    if "--direct_running_mode" not in given:
        direct.direct_running_mode = "multi_processing"
    if "--direct_num_workers" not in given:
        direct.direct_num_workers = 0
    return options, FnApiRunner()
