"""The flags of ``seqpack run``, and the ``RunConfig`` they make (defaults come from ``RunConfig``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import MISSING, fields

from seqpack.chat import STYLES as CHAT_STYLES
from seqpack.chat import TRAIN_ON as CHAT_TRAIN_ON
from seqpack.config import DEDUP_MODES, FILE_FORMATS, SHUFFLE_MODES, RunConfig
from seqpack.errors import UsageError
from seqpack.masking import OVERLONG_ALIASES, OVERLONG_POLICIES, TRAIN_ON
from seqpack.packing import PACKING_STRATEGIES
from seqpack.pipeline.lock import DEFAULT_LEASE_SECONDS
from seqpack.pipeline.runners import check_beam_args, long_flags, wants_dask

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


def choice_error(name: str, value: object, choices: Iterable[object]) -> str:
    """The one line for a value that is not among an option's choices, on the command line or in a job file."""
    return f"{name} must be one of {', '.join(map(str, choices))} (got {value!r})"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from seqpack.cli.sources import parse_source_flag
    from seqpack.sources import WEIGHT_BY

    io = parser.add_argument_group("input and output")
    io.add_argument("--input", "-i", action="append", metavar="GLOB",
                    help="input files, globs or directories (JSONL, JSON, Parquet, Arrow, CSV/TSV, datasets "
                    "save_to_disk dirs; local or gs://, s3://); repeat for several")
    io.add_argument("--source", dest="sources", action="append", type=parse_source_flag, metavar="KEY=VALUE,...",
                    help="a source of a mixture, e.g. 'name=code,input=code/*.jsonl,template=alpaca,weight=0.3'; "
                    "repeat for each source. Keys are the per-source flags' names; the top-level flags are every "
                    "source's defaults (see README, Mixtures)")
    io.add_argument("--weight-by", choices=WEIGHT_BY, default=DEFAULTS["weight_by"],
                    help="a mixture's weights are shares of its tokens or of its examples")
    io.add_argument("--mix-total-tokens", type=int, default=DEFAULTS["mix_total_tokens"], metavar="N",
                    help="a mixture's size in tokens (default: as large as its sources and weights allow)")
    io.add_argument("--output", "-o", help="dataset directory to write (local or gs://, s3://)")
    io.add_argument("--overwrite", "--rebuild", dest="overwrite", action="store_true",
                    help="replace a dataset already in --output with one generation built from every input")
    io.add_argument("--append", action="store_true",
                    help="add a generation holding only the inputs no generation of --output consumed (by "
                    "content); nothing new: prints 'up to date'. Refused if a setting that shapes examples changed")
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

    launch = parser.add_argument_group("launching (the job commits the dataset itself, as its last step)")
    # --no-wait comes first: its default (wait) is the option's; --wait's own default (False) is what a job
    # file's `wait: false` gives.
    launch.add_argument("--no-wait", dest="wait", action="store_false", default=True,
                        help="return once the job is submitted, leaving the output locked for the job until it "
                        "commits (the Flex Template's default); check it with `seqpack verify OUT`")
    launch.add_argument("--wait", dest="wait", action="store_true", default=False,
                        help="wait for the job and print its summary (the default, except in the Flex Template)")
    launch.add_argument("--lock-lease", type=float, default=DEFAULT_LEASE_SECONDS, metavar="SECONDS",
                        help="with --no-wait: how long the output stays locked for the job if it never commits "
                        "(it fails, or is cancelled)")

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
    tok.add_argument("--overlong", choices=OVERLONG_POLICIES + tuple(OVERLONG_ALIASES), default=DEFAULTS["overlong"],
                     help="an example longer than --max-length: truncate-target (keep the whole prompt, cut the "
                     "target's end, with no EOS; drop the example when the prompt alone does not fit), truncate-left "
                     "(cut the prompt from the left, then the target; 'truncate' is its old name), split (into "
                     "--max-length pieces) or drop")
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
                         help="tokens per shuffle bucket; bounds a worker's memory")
    packing.add_argument("--shard-bytes", type=int, default=DEFAULTS["shard_bytes"],
                         help="about how large a shard file grows: consecutive buckets share a shard (one bucket "
                         "per shard when a bucket alone is larger); the loader reads any size")
    packing.add_argument("--shuffle", choices=SHUFFLE_MODES, default=DEFAULTS["shuffle"],
                         help="how buckets gather their examples: spill (each reads a slice of every spill file; "
                         "best on the local runner), runner (each spill file read once, buckets grouped by the "
                         "runner: requests grow linearly with the data), auto (spill locally, runner elsewhere); "
                         "the dataset is the same")


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """``seqpack watch``'s own flags: when to look, and when new files make a generation."""
    from seqpack.pipeline.watch import WatchOptions

    defaults = WatchOptions()
    when = parser.add_argument_group("watching (each generation is a `seqpack run --append` of the settled files)")
    when.add_argument("--interval", type=float, default=defaults.interval, metavar="SECONDS",
                      help="seconds between polls of the inputs")
    when.add_argument("--settle", type=float, default=defaults.settle, metavar="SECONDS",
                      help="read a new file once its size and modification time have not changed this long")
    when.add_argument("--min-new-tokens", type=int, default=defaults.min_new_tokens, metavar="N",
                      help="commit only once the settled files hold about this many tokens (estimated from the "
                      "dataset's tokens per input byte; 4 bytes a token before the first generation)")
    when.add_argument("--max-wait", type=float, default=defaults.max_wait, metavar="SECONDS",
                      help="commit fewer than --min-new-tokens once the oldest settled file has waited this long")
    when.add_argument("--once", action="store_true",
                      help="poll once (committing a generation if one is due), then exit: for cron")
    when.add_argument("--status-file", metavar="PATH",
                      help="where to keep the watcher's status JSON (last poll, last generation, backlog; local "
                      "or gs://, s3://) (default: OUT/.seqpack-watch.json)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    from seqpack.cli.sources import sources_from_args

    sources = sources_from_args(args)
    for flag, value in (("--input", args.input or sources), ("--output", args.output), ("--tokenizer", args.tokenizer)):
        if not value:  # not required by argparse: a --config job file may give it
            raise UsageError(f"{flag} is required: pass it on the command line or in the --config job file")
    config = RunConfig(
        inputs=[] if sources else list(args.input),
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
        shard_bytes=args.shard_bytes,
        shuffle=args.shuffle,
        file_format=args.file_format,
        validation_fraction=args.validation_fraction,
        row_group_size=args.row_group_size,
        pad_id=args.pad_id,
        trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite,
        append=args.append,
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
        sources=sources,
        weight_by=args.weight_by,
        mix_total_tokens=args.mix_total_tokens,
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


def check_command_line(parser: argparse.ArgumentParser, extra: list[str]) -> None:
    """The flags ``parser`` (``seqpack run``) left over must be Beam options; say which option a typo meant."""
    wants_dask(extra)  # loads the --dask_* options when the Dask runner is asked for
    check_beam_args(extra, long_flags(parser))
