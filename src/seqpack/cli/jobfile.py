"""Job files: ``seqpack run --config job.yaml`` takes every option from a YAML mapping; flags on the command line
win. Beam options go under ``beam:``."""

from __future__ import annotations

import argparse
from typing import Any

from seqpack.cli.flags import choice_error, unescape
from seqpack.errors import UsageError, closest, option_key

JOB_BEAM_KEY = "beam"


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
                names[option_key(flag)] = (action, False)
        names.setdefault(option_key(action.dest), (action, True))
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


def _job_sources(value: Any, path: str) -> list[dict[str, Any]]:
    """``sources:``: a list of mappings with the flags' names (or ``--source`` strings), keys checked."""
    from seqpack.cli.sources import parse_source_flag, source_keys

    if not isinstance(value, list):
        raise UsageError(f"job file {path}: sources must be a list of mappings (- name: code\n  input: code/*.jsonl)")
    sources = []
    for index, item in enumerate(value):
        where = f"job file {path}: source {index + 1}"
        if isinstance(item, str):
            try:
                item = parse_source_flag(item)
            except argparse.ArgumentTypeError as error:
                raise UsageError(f"{where}: {error}") from None
        source_keys(item, where)
        sources.append(dict(item))
    return sources


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
        found = names.get(option_key(str(key)))
        if found is None:
            close = closest(str(key), names)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise UsageError(f"job file {path}: unknown option {key!r}{hint}; Beam options go under `beam:`")
        action, via_dest = found
        if action.dest in values:
            raise UsageError(f"job file {path}: {key!r} sets {action.option_strings[-1]} a second time")
        if action.dest == "sources":  # a list of mappings, checked here so that errors name the job file
            values[action.dest] = _job_sources(value, path)
            continue
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
