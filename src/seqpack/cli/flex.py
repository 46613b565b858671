"""Dataflow Flex Template entry point: the template's parameters in, a ``seqpack run`` command line out.

The launcher runs ``python FLEX_TEMPLATE_PYTHON_PY_FILE --input=gs://... --max_length=2048 --overwrite=true``
followed by the job's Beam options (``--project``, ``--region``, ``--temp_location``, ``--sdk_container_image``,
...). Template parameter names use underscores (``templates/flex/metadata.json``), switches arrive as
``true``/``false``, and one parameter holds several inputs separated by commas; ``seqpack run`` wants
``--max-length``, bare switches and one ``--input`` per glob. Everything that is not a seqpack option passes
through to Beam untouched.

The launcher does not wait for the job (``--no-wait``, unless the parameters say ``wait=true``): the job
commits the dataset itself, and Google asks Flex Template launchers not to wait.

    >>> to_run_argv(["--input=gs://b/a.jsonl,gs://b/c.jsonl", "--overwrite=true"])
    ['--input=gs://b/a.jsonl', '--input=gs://b/c.jsonl', '--overwrite', '--no-wait', '--runner=DataflowRunner']
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from seqpack.cli.flags import add_run_arguments
from seqpack.errors import UsageError

SEPARATOR = ","
"""Separates the values of a template parameter for an option that takes several (``input``)."""

EXTRA_OPTIONS = {"config": "one", "quiet": "switch"}
"""Options of ``seqpack run`` that the CLI adds to ``add_run_arguments``'s."""


def _kind(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    if isinstance(action, argparse._AppendAction):
        return "repeat"  # --input a --input b
    return "many" if action.nargs in ("+", "*") else "one"  # --add-special-tokens a b


def run_options() -> dict[str, str]:
    """Every long option of ``seqpack run`` (without dashes): ``switch``, ``repeat``, ``many`` or ``one``."""
    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    options = {
        flag[2:]: _kind(action)
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }
    return {**options, **EXTRA_OPTIONS}


def _switch(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise UsageError(f"template parameter {name} is a switch: pass true or false, got {value!r}")
    return lowered == "true"


def to_run_argv(argv: Sequence[str]) -> list[str]:
    """Template flags to ``seqpack run`` flags; Beam's pass through, and the runner defaults to Dataflow."""
    options = run_options()
    out: list[str] = []
    for arg in argv:
        name, equals, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        option = name.replace("_", "-")
        kind = options.get(option) if equals else None
        values = [item.strip() for item in value.split(SEPARATOR) if item.strip()]
        if kind is None:
            out.append(arg)  # a Beam option (or a seqpack flag already in command-line form)
        elif kind == "switch":
            out += [f"--{option}"] if _switch(name, value) else []
        elif kind == "repeat":
            out += [f"--{option}={item}" for item in values]
        elif kind == "many":
            out += [f"--{option}", *values]
        else:
            out.append(f"--{option}={value}")
    if "--wait" not in out and "--no-wait" not in out:
        out.append("--no-wait")  # the job commits itself; a launcher that waits blocks the launch until it ends
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in out):
        # Without it seqpack would run the whole job on the launcher VM with the local runner.
        out.append("--runner=DataflowRunner")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``seqpack run`` with the template's parameters; the exit code is the CLI's (0, 1 or 2)."""
    from seqpack.cli.main import EXIT_USAGE
    from seqpack.cli.main import main as cli_main

    try:
        run_argv = to_run_argv(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"seqpack: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return cli_main(["run", *run_argv])


if __name__ == "__main__":
    sys.exit(main())
