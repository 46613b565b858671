"""docs/scheduling.md's service and scheduler snippets: the `seqpack` command lines they hold are what the real
parser accepts and makes a configuration of, and their stop timeouts leave a run time to abandon cleanly."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from seqpack.cli.flags import check_command_line, config_from_args
from seqpack.cli.main import _parser
from seqpack.pipeline.failures import GRACE_SECONDS
from seqpack.pipeline.watch import WatchOptions

DOC = (Path(__file__).resolve().parents[2] / "docs" / "scheduling.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", DOC, flags=re.MULTILINE | re.DOTALL)


def block(language: str, containing: str) -> str:
    [found] = [text for lang, text in BLOCKS if lang == language and containing in text]
    return found


def parsed(argv: list[str]) -> tuple[Any, Any]:
    """The command line as ``seqpack`` takes it: its flags, Beam's left over, and the run's configuration."""
    args, extra = _parser().parse_known_args(argv)
    check_command_line(args._run_parser, extra)
    if args.command == "watch":
        args.append = True
    return args, config_from_args(args)


def systemd_command() -> list[str]:
    unit = block("ini", "ExecStart=")
    line = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, flags=re.MULTILINE | re.DOTALL).group(1)
    return shlex.split(line.replace("\\\n", " "))


def kubernetes_deployment() -> dict[str, Any]:
    return yaml.safe_load(block("yaml", "kind: Deployment"))


def test_the_systemd_unit_runs_a_watch_the_parser_accepts() -> None:
    program, *argv = systemd_command()
    assert program.endswith("/seqpack") and argv[0] == "watch"
    args, config = parsed(argv)
    WatchOptions(interval=args.interval, settle=args.settle, min_new_tokens=args.min_new_tokens,
                 max_wait=args.max_wait).check()
    assert config.inputs == ["/data/incoming/*.jsonl"] and args.min_new_tokens == 2_000_000
    stop = re.search(r"^TimeoutStopSec=(\d+)", block("ini", "ExecStart="), flags=re.MULTILINE)
    assert float(stop.group(1)) > GRACE_SECONDS  # a generation in progress has time to abandon


def test_the_kubernetes_deployment_runs_one_watcher_with_time_to_stop() -> None:
    deployment = kubernetes_deployment()
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > GRACE_SECONDS
    [container] = pod["containers"]
    assert container["command"] == ["seqpack"]
    args, config = parsed(container["args"])
    assert args.command == "watch" and config.output == "gs://my-bucket/datasets/growing"
    assert args.settle == 60 and args.max_wait == 21600


@pytest.mark.parametrize("dag", ["seqpack_growing"])
def test_the_airflow_dag_appends_with_a_command_the_parser_accepts(dag: str) -> None:
    source = block("python", f'dag_id="{dag}"')
    commands = [ast.literal_eval(node.value) for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.keyword) and node.arg == "bash_command"]
    [command] = commands
    program, *argv = shlex.split(command)
    assert program.endswith("/seqpack") and argv[:2] == ["run", "--append"]
    args, config = parsed(argv)
    assert config.append and not config.overwrite and args.quiet
