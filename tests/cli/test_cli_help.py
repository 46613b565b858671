"""`seqpack run --help` explains every option and its default; a mistake gets one line saying how to fix it."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqpack.cli.flags import check_command_line
from seqpack.cli.main import _parser, main

README = Path(__file__).resolve().parents[2] / "README.md"
BEAM_FLAGS = ["--runner", "DirectRunner", "--project", "p", "--region", "r", "--temp_location", "/tmp/t",
              "--direct_num_workers", "1", "--direct_running_mode=in_memory", "--save_main_session",
              "--experiments=a", "--job_name", "j", "--dry_run=True", "--no_auth", "--max_num_workers", "4",
              "--sdk_container_image=img", "--environment_type=DOCKER"]


def seqpack(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "seqpack.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, timeout=120)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and action.dest != "help"]


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    for name, parser in subcommands().items():
        assert parser.description, f"`seqpack {name} --help` has no description"
        for action in documented(parser):
            assert action.help, f"seqpack {name} {action.option_strings[0]} has no help text"


def help_entries(text: str) -> dict[str, str]:
    """`--help` output as {first flag: its entry on one line}."""
    entries: dict[str, str] = {}
    flag = ""
    for line in text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
            entries[flag] = ""
        elif not line.startswith("  ") or not flag:
            flag = ""  # a group title or the epilog
            continue
        entries[flag] = " ".join((entries[flag] + " " + line).split())
    return entries


def test_run_help_shows_the_defaults() -> None:
    result = seqpack("run", "--help")
    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    for flag, shown in (("--max-length", "tokens per packed block"), ("--max-length", "(default: 2,048)"),
                        ("--packing", "(default: bfd)"), ("--overlong", "(default: truncate-target)"),
                        ("--format", "(default: parquet)"), ("--template", "(default: plain)"),
                        ("--separator", "(default: ' = ')"), ("--bucket-tokens", "(default: 4,194,304)"),
                        ("--seed", "shuffle seed"), ("--seed", "(default: 0)")):
        assert shown in entries[flag], (flag, entries[flag])
    for action in documented(subcommands()["run"]):
        if action.default not in (None, False, True, "", [], argparse.SUPPRESS) and "default" not in action.help:
            flag = action.option_strings[0]
            assert "(default: " in entries[flag], f"{flag} does not show its default: {entries[flag]}"


def test_demo_help_describes_the_command() -> None:
    result = seqpack("demo", "--help")
    assert result.returncode == 0
    assert "Run the whole pipeline on the bundled demo data." in result.stdout
    assert "(default: seqpack-demo)" in " ".join(result.stdout.split())


@pytest.mark.parametrize(("args", "line"), [
    (["--packing", "zip"], "seqpack: error: --packing must be one of bfd, wrap, none (got 'zip')"),
    (["--format=xml"], "seqpack: error: --format must be one of parquet, arrow (got 'xml')"),
    (["--overlong", "cut"], "seqpack: error: --overlong must be one of truncate-target, truncate-left, split, "
     "drop, truncate (got 'cut')"),
])
def test_a_bad_choice_is_one_line_naming_the_valid_ones(args: list[str], line: str) -> None:
    result = seqpack("run", "-i", "a", "-o", "o", "-t", "t", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == line, result.stderr
    assert result.stdout == ""


def test_other_argument_errors_are_one_line_too() -> None:
    result = seqpack("run", "--max-length", "many")
    assert result.returncode == 2
    assert result.stderr.strip() == ("seqpack: error: argument --max-length: invalid int value: 'many' "
                                     "(see `seqpack run --help`)")


def test_a_mistyped_flag_gets_did_you_mean(tmp_path: Path) -> None:
    result = seqpack("run", "-i", "a.jsonl", "-o", str(tmp_path / "out"), "-t", "tok", "--max-lenght", "128")
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("seqpack: error: unknown option --max-lenght (did you mean --max-length?)"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("typo", "meant"), [
    ("--max_length", "--max-length"),  # underscores: the Beam spelling of a seqpack flag
    ("--tokeniser", "--tokenizer"),
    ("--inptu", "--input"),
    ("--seperator", "--separator"),
    ("--runer", "--runner"),  # a Beam option's typo is named too
    ("--direct_running_mod=in_memory", "--direct_running_mode"),
])
def test_the_hint_names_the_closest_seqpack_or_beam_option(typo: str, meant: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-i", "a", "-o", "o", "-t", "t", *BEAM_FLAGS, typo, "1"]) == 2
    assert f"unknown option {typo.split('=')[0]} (did you mean {meant}?)" in capsys.readouterr().err


def test_beam_options_pass_through_and_are_never_reported(capsys: pytest.CaptureFixture[str]) -> None:
    run_parser = subcommands()["run"]
    check_command_line(run_parser, BEAM_FLAGS)  # no error
    assert main(["run", "-i", "a", "-t", "t", *BEAM_FLAGS]) == 2
    assert "--output is required" in capsys.readouterr().err, "the Beam flags got past the check"


def test_dask_options_pass_once_the_dask_runner_is_asked_for() -> None:
    pytest.importorskip("dask.distributed")
    check_command_line(subcommands()["run"], ["--runner", "DaskRunner", "--dask_client_address=tcp://h:8786"])


def _options_table() -> list[tuple[list[str], str]]:
    """The README's Options table: (the flags of a row, its default cell)."""
    section = README.read_text(encoding="utf-8").split("## Options", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    return [(re.findall(r"--[a-z-]+", flags), default.strip()) for flags, default, _ in rows]


def test_the_readme_options_table_lists_every_run_option_with_its_default() -> None:
    run = subcommands()["run"]
    by_flag = {flag: action for action in documented(run) for flag in action.option_strings}
    in_table = {flag for flags, _ in _options_table() for flag in flags}
    assert in_table <= set(by_flag), f"the README lists options `seqpack run` does not have: {in_table - set(by_flag)}"
    missing = {action.option_strings[0] for action in documented(run)} - in_table
    assert not missing, f"options missing from the README's Options table: {sorted(missing)}"
    for flags, cell in _options_table():
        if len(flags) != 1 or not re.fullmatch(r"`[^`]+`|[\d,.]+", cell):
            continue  # several options in a row, or no default, or one said in words
        default = by_flag[flags[0]].default
        written = cell.strip("`").strip('"') if cell.startswith("`") else cell.replace(",", "")
        if isinstance(default, int | float) and not isinstance(default, bool):
            assert float(written) == default, f"{flags[0]}: README says {cell}, the default is {default}"
        else:
            assert written == str(default), f"{flags[0]}: README says {cell}, the default is {default!r}"
