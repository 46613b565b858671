"""Command-line options of ``seqpack run``, and the Beam pipeline options that pass through unchanged."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import re
from collections.abc import Iterable
from dataclasses import MISSING, fields
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from seqpack.chat import STYLES as CHAT_STYLES
from seqpack.chat import TRAIN_ON as CHAT_TRAIN_ON
from seqpack.config import DEDUP_MODES, FILE_FORMATS, RunConfig
from seqpack.errors import UsageError
from seqpack.masking import OVERLONG_POLICIES, TRAIN_ON
from seqpack.packing import PACKING_STRATEGIES

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
"""RunConfig is the one place defaults live; the flags show them and fall back to them."""


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` typed on the command line become a newline, a tab and a backslash.

    A shell passes ``'Q: {question}\nA: {target}'`` as a backslash and an ``n``; a template means a newline. Any
    other backslash stays as typed. Job files hold real newlines and are read as written (see ``_job_scalar``).

        >>> unescape(r"Q: {source}\nA: {target}")
        'Q: {source}\nA: {target}'
    """
    return re.sub(r"\\([nt\\])", lambda match: _ESCAPES[match.group(1)], text)


_ESCAPES_HELP = r"; on the command line \n, \t and \\ are a newline, a tab and a backslash"


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known option most like ``name`` (dashes and underscores alike), for a "did you mean" hint."""
    by_key = {}
    for option in known:
        by_key.setdefault(_job_key(option), option)
    close = difflib.get_close_matches(_job_key(name), list(by_key), n=1)
    return by_key[close[0]] if close else None


def choice_error(name: str, value: object, choices: Iterable[object]) -> str:
    """The one line for a value that is not among an option's choices, on the command line or in a job file."""
    return f"{name} must be one of {', '.join(map(str, choices))} (got {value!r})"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", action="append", metavar="GLOB",
                    help="input files, globs or directories (JSONL, JSON, Parquet, Arrow, CSV/TSV, datasets "
                    "save_to_disk dirs; local or gs://, s3://); repeat for several")
    io.add_argument("--output", "-o", help="dataset directory to write (local or gs://, s3://)")
    io.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output")
    io.add_argument("--format", dest="file_format", choices=FILE_FORMATS, default=DEFAULTS["file_format"],
                    help="shard files: parquet (zstd) or arrow (Arrow IPC files, same schema)")
    io.add_argument("--validation-fraction", type=float, default=DEFAULTS["validation_fraction"],
                    help="hold out this fraction of pairs (chosen by a hash of their text) into validation/")
    io.add_argument("--row-group-size", type=int, default=DEFAULTS["row_group_size"],
                    help="blocks per Parquet row group")
    io.add_argument("--max-record-bytes", type=int, default=DEFAULTS["max_record_bytes"],
                    help="records larger than this are rejected without being parsed")
    io.add_argument("--max-reject-fraction", type=float, default=DEFAULTS["max_reject_fraction"],
                    help="fail, committing nothing, when more than this fraction of the records read is rejected "
                    "(a wrong field name or template); 1 commits whatever is left")
    io.add_argument("--report", action="store_true",
                    help="also write OUT/report.html: plots, rejected records and decoded blocks (needs matplotlib)")

    text = parser.add_argument_group("rendering")
    text.add_argument("--template", default=DEFAULTS["template"], type=unescape,
                      help="plain (source + separator → target), alpaca, chat (the tokenizer's chat template), "
                      "or a format string with {target}: the text before it is masked" + _ESCAPES_HELP)
    text.add_argument("--source-field", default=DEFAULTS["source_field"],
                      help="record field of the source, {source} in templates")
    text.add_argument("--target-field", default=DEFAULTS["target_field"],
                      help="record field of the target, {target} in templates")
    text.add_argument("--separator", default=DEFAULTS["separator"], type=unescape,
                      help="plain template: masked text between source and target" + _ESCAPES_HELP)

    chat = parser.add_argument_group("conversations (--template chat)")
    chat.add_argument("--chat-style", choices=CHAT_STYLES, default=DEFAULTS["chat_style"],
                      help="messages (OpenAI role/content), sharegpt (from/value), pair (source/target), or auto")
    chat.add_argument("--messages-field", default=DEFAULTS["messages_field"], help="field holding the message list")
    chat.add_argument("--role-map", default="", metavar="NAME=ROLE,...",
                      help="extra role names, e.g. human=user,bot=assistant")
    chat.add_argument("--system", default=DEFAULTS["system"],
                      help="system prompt for pairs and conversations without one")

    tok = parser.add_argument_group("tokenization and labels")
    tok.add_argument("--tokenizer", "-t",
                     help="Hugging Face tokenizer: local dir, tokenizer.json, .gguf file, gs:// dir or hub id")
    tok.add_argument("--trust-remote-code", action="store_true",
                     help="allow tokenizers that run code from their repository (off by default)")
    tok.add_argument("--max-length", type=int, default=DEFAULTS["max_length"],
                     help="tokens per packed block: the context length the model trains with")
    tok.add_argument("--no-eos", dest="add_eos", action="store_false", help="do not append EOS to the target")
    tok.add_argument("--train-on", choices=TRAIN_ON + CHAT_TRAIN_ON[:2], default=DEFAULTS["train_on"],
                     help="pairs: target (default), source+target (every token of each example), all (also across "
                     "example boundaries); chat: assistant (default), last (final assistant turn), all")
    tok.add_argument("--overlong", choices=OVERLONG_POLICIES, default=DEFAULTS["overlong"],
                     help="an example longer than --max-length: truncate (keep the target, cut the source from the "
                     "left), split (into --max-length pieces) or drop")
    tok.add_argument("--pad-id", type=int, default=DEFAULTS["pad_id"], help="padding id (default: pad token, else EOS)")

    hygiene = parser.add_argument_group("special tokens and data hygiene")
    hygiene.add_argument("--add-special-tokens", nargs="+", default=[], metavar="TOKEN",
                         help="add new special tokens (e.g. [SEP]); the extended tokenizer is saved in OUT/tokenizer/")
    hygiene.add_argument("--dedup", choices=DEDUP_MODES, default=DEFAULTS["dedup"],
                         help="exact: drop exact duplicate pairs/conversations, keeping the first (file, line)")
    hygiene.add_argument("--min-target-tokens", type=int, default=DEFAULTS["min_target_tokens"],
                         help="drop examples with fewer target tokens")
    hygiene.add_argument("--max-source-tokens", type=int, default=DEFAULTS["max_source_tokens"],
                         help="drop examples with more source (untrained) tokens")

    packing = parser.add_argument_group("shuffling and packing")
    packing.add_argument("--packing", choices=PACKING_STRATEGIES, default=DEFAULTS["packing"],
                         help="bfd (best-fit decreasing: examples never split), wrap (concatenate and cut every "
                         "--max-length tokens), none (one example per row, unpadded)")
    packing.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                         help="shuffle seed: the same seed, data and options give the same shards, byte for byte")
    packing.add_argument("--bucket-tokens", type=int, default=DEFAULTS["bucket_tokens"],
                         help="tokens per shuffle bucket and shard; bounds a worker's memory")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    for flag, value in (("--input", args.input), ("--output", args.output), ("--tokenizer", args.tokenizer)):
        if not value:  # not required by argparse: a --config job file may give it
            raise UsageError(f"{flag} is required: pass it on the command line or in the --config job file")
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
        max_reject_fraction=args.max_reject_fraction,
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


def _beam_parser() -> argparse.ArgumentParser:
    """A parser of every Beam pipeline option loaded so far (``--dask_*`` once the Dask runner is loaded)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in _all_option_classes():
        with contextlib.suppress(argparse.ArgumentError):  # an option registered by two classes
            cls._add_argparse_args(parser)
    return parser


def unknown_beam_args(beam_args: list[str]) -> list[str]:
    """Flags that no Beam options class knows: most likely a typo in a seqpack flag."""
    _, unknown = _beam_parser().parse_known_args(beam_args)
    return [arg for arg in unknown if arg.startswith("-")]


def _long_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]


def check_beam_args(beam_args: list[str], seqpack_flags: Iterable[str] = ()) -> None:
    """Refuse the first flag that no Beam option class knows, naming the seqpack or Beam option it most looks like.

    Flags Beam knows (``--runner``, ``--project``, ``--direct_running_mode=in_memory``) pass; only the others are
    reported, so a misspelled ``--max-lenght 128`` fails up front instead of being handed to Beam.
    """
    unknown = unknown_beam_args(beam_args)
    if not unknown:
        return
    flag = unknown[0].split("=", 1)[0]
    hint = closest(flag, [*seqpack_flags, *_long_flags(_beam_parser())])
    did_you_mean = f" (did you mean {hint}?)" if hint else ""
    raise UsageError(
        f"unknown option {flag}{did_you_mean}: see `seqpack run --help`; Beam pipeline options pass through"
    )


def check_command_line(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """The flags ``parser`` (``seqpack run``) left over must be Beam options; say which option a typo meant."""
    _wants_dask(extra)  # loads the --dask_* options when the Dask runner is asked for
    check_beam_args(extra, _long_flags(parser))


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
    check_beam_args(beam_args)
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
    if "--direct_num_workers" not in given and direct.direct_running_mode != "in_memory":
        direct.direct_num_workers = 0  # one worker per core
    return options, FnApiRunner()


# Job files: `seqpack run --config job.yaml` takes every option from a YAML mapping; flags on the command line win.

JOB_BEAM_KEY = "beam"


def _job_key(name: str) -> str:
    return name.strip().lstrip("-").replace("_", "-")


def _job_names(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, bool]]:
    """The names a job file may use for each option: its long flags, dashes or underscores, and its dest.

    The bool says whether the name is the dest (``add_eos: false``) rather than a flag (``no-eos: true``).
    ``inputs`` is accepted for ``--input`` because that is the manifest's name for it.
    """
    names: dict[str, tuple[argparse.Action, bool]] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "config") or action.dest.startswith("_"):
            continue
        for flag in action.option_strings:
            if flag.startswith("--"):
                names[_job_key(flag)] = (action, False)
        names.setdefault(_job_key(action.dest), (action, True))
    if "input" in names:
        names.setdefault("inputs", names["input"])
    return names


def _job_scalar(action: argparse.Action, key: str, value: Any) -> Any:
    """One value as argparse would parse it from the command line: same type conversion, same choices."""
    if value is None:
        return None
    if isinstance(value, dict):  # as a manifest records --role-map: {human: user} is "human=user"
        value = ",".join(f"{name}={item}" for name, item in value.items())
    if isinstance(value, bool | list):
        raise ValueError(f"{key} takes a single value, got {value!r}")
    convert = None if action.type is unescape else action.type  # YAML has real newlines: no escapes to undo
    try:
        converted = convert(str(value)) if callable(convert) else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
        kind = getattr(action.type, "__name__", "value")
        raise ValueError(f"{key} must be of type {kind}, got {value!r} ({error})") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(choice_error(key, value, action.choices))
    return converted


def _job_value(action: argparse.Action, key: str, value: Any, via_dest: bool) -> Any:
    if action.nargs == 0:  # a switch: --overwrite, --no-eos (dest add_eos), --quiet
        if not isinstance(value, bool):
            raise ValueError(f"{key} is a switch: write true or false, got {value!r}")
        return value if via_dest else (action.const if value else action.default)
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_job_scalar(action, key, item) for item in items]  # [] is "none", as a manifest records it
    return _job_scalar(action, key, value)


def _job_beam_args(value: Any, where: str) -> list[str]:
    """``beam:`` as a mapping (``runner: DataflowRunner``, ``experiments: [a, b]``, ``save_main_session: true``)
    or as a list of flags (``["--runner=DataflowRunner"]``)."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    if not isinstance(value, dict):
        raise UsageError(f"{where}: `beam:` must be a mapping of Beam option: value, or a list of flags")
    args: list[str] = []
    for name, item in value.items():
        flag = "--" + str(name).lstrip("-")
        for one in item if isinstance(item, list) else [item]:
            if one is True:
                args.append(flag)
            elif one is not None and one is not False:
                args.append(f"{flag}={one}")
    return args


def read_job_file(path: str, parser: argparse.ArgumentParser) -> tuple[dict[str, Any], list[str]]:
    """A job file's options as ``{dest: value}`` for ``parser``, and its Beam flags.

        >>> values, beam_args = read_job_file("job.yaml", run_parser)

    Raises ``UsageError`` (exit code 2) for a file that cannot be read, is not a YAML mapping, names an option
    ``seqpack run`` does not have, or gives a value the option would refuse on the command line.
    """
    import yaml
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) if "://" in path else open(path, "rb") as handle:
            data = yaml.safe_load(handle.read())
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read job file {path}: {error}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(f"job file {path} is not valid YAML{where}: {problem}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"job file {path} must be a mapping of option: value, not {type(data).__name__}")
    names = _job_names(parser)
    values: dict[str, Any] = {}
    beam_args: list[str] = []
    for key, value in data.items():
        if str(key) == JOB_BEAM_KEY:
            beam_args = _job_beam_args(value, path)
            continue
        if str(key) == "extra" and not value:  # in every manifest's config; nothing sets it
            continue
        found = names.get(_job_key(str(key)))
        if found is None:
            close = closest(str(key), names)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise UsageError(f"job file {path}: unknown option {key!r}{hint}; Beam options go under `beam:`")
        action, via_dest = found
        if action.dest in values:
            raise UsageError(f"job file {path}: {key!r} sets {action.option_strings[-1]} a second time")
        try:
            values[action.dest] = _job_value(action, str(key), value, via_dest)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            raise UsageError(f"job file {path}: {error}") from error
    return values, beam_args


def _given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests the command line sets, found by parsing it again with every default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(given))


def apply_job_file(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> list[str]:
    """Fill ``args`` (parsed from ``argv`` by ``parser``) from ``args.config``, except what ``argv`` sets;
    return the job file's Beam flags, to go before the command line's (so that those win)."""
    if not getattr(args, "config", None):
        return []
    values, beam_args = read_job_file(args.config, parser)
    given = _given_on_command_line(parser, argv)
    for dest, value in values.items():
        if dest not in given:
            setattr(args, dest, value)
    return beam_args
