"""`seqpack run --config job.yaml`: every option from a file, command-line flags win, bad files exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.cli.flags import config_from_args
from seqpack.cli.jobfile import apply_job_file, read_job_file
from seqpack.cli.main import _parser, main
from seqpack.config import RunConfig
from seqpack.errors import UsageError


def write_job(path: Path, job: dict | str) -> Path:
    path.write_text(job if isinstance(job, str) else yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


def resolve(argv: list[str]) -> tuple[RunConfig, list[str]]:
    """What `seqpack run ARGV` would run, without running it: the RunConfig and the Beam flags."""
    args, extra = _parser().parse_known_args(["run", *argv])
    beam_args = apply_job_file(args._run_parser, args, argv) + extra
    return config_from_args(args), beam_args


@pytest.fixture()
def demo_job(tmp_path: Path, tokenizer_dir: Path, pairs: list[dict[str, str]]) -> dict:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return {"input": [str(data)], "output": str(tmp_path / "out"), "tokenizer": str(tokenizer_dir)}


def test_job_file_runs_and_the_manifest_records_the_resolved_config(tmp_path: Path, demo_job: dict) -> None:
    job = write_job(tmp_path / "job.yaml", {
        **demo_job,
        "max-length": 128,
        "bucket_tokens": 2048,  # underscores work as well as dashes
        "seed": 5,
        "packing": "wrap",
        "beam": {"direct_running_mode": "in_memory"},
    })
    assert main(["run", "--quiet", "--config", str(job), "--seed", "7", "--packing", "bfd"]) == 0
    recorded = json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]
    expected = RunConfig(inputs=demo_job["input"], output=demo_job["output"], tokenizer=demo_job["tokenizer"],
                         max_length=128, bucket_tokens=2048, seed=7, packing="bfd")
    assert recorded == json.loads(json.dumps(expected.to_dict()))
    again = write_job(tmp_path / "from-manifest.yaml", recorded)
    resolved, _ = resolve(["--config", str(again)])
    assert json.loads(json.dumps(resolved.to_dict())) == recorded, "a manifest's config block is a job file"


def test_command_line_wins_even_when_it_repeats_a_default(tmp_path: Path, demo_job: dict) -> None:
    job = write_job(tmp_path / "job.yaml", {**demo_job, "seed": 5, "max-length": 64, "overwrite": True})
    config, _ = resolve(["--config", str(job), "--seed", "0", "--input", "other.jsonl"])
    assert config.seed == 0, "an explicit --seed 0 (the default) still overrides the file"
    assert config.inputs == ["other.jsonl"], "--input on the command line replaces the file's list"
    assert config.max_length == 64 and config.overwrite


def test_names_switches_and_lists(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", """
inputs: a.jsonl            # the manifest's name; a single value is a list of one
output: out/
tokenizer: tok/
no-eos: true               # the flag...
trust_remote_code: true
format: arrow              # --format, whose dest is file_format
pad-id: null               # null keeps the default
add-special-tokens: ["[SEP]", "[CLS]"]
""")
    config, _ = resolve(["--config", str(job)])
    assert config.inputs == ["a.jsonl"] and config.output == "out"
    assert config.add_eos is False and config.trust_remote_code is True
    assert config.file_format == "arrow" and config.pad_id is None
    assert config.add_special_tokens == ("[SEP]", "[CLS]")
    by_dest = write_job(tmp_path / "dest.yaml", "input: [a]\noutput: o\ntokenizer: t\nadd_eos: false\n")
    assert resolve(["--config", str(by_dest)])[0].add_eos is False, "...or its dest, with the dest's value"


def test_a_bare_off_is_the_choice_off_not_false(tmp_path: Path) -> None:
    """YAML reads `audit: off` as false: for an option whose choices include `off`, it means `off`."""
    job = write_job(tmp_path / "job.yaml", "input: [a]\noutput: o\ntokenizer: t\naudit: off\n")
    assert resolve(["--config", str(job)])[0].audit == "off"
    strict = write_job(tmp_path / "strict.yaml", "input: [a]\noutput: o\ntokenizer: t\naudit: strict\n")
    assert resolve(["--config", str(strict)])[0].audit == "strict"


def test_beam_options_from_the_file_come_before_the_command_line(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", {
        "input": ["a"], "output": "o", "tokenizer": "t",
        "beam": {"runner": "DataflowRunner", "experiments": ["use_runner_v2", "x"], "save_main_session": True,
                 "no_auth": False, "region": None},
    })
    _, beam_args = resolve(["--config", str(job), "--runner=PortableRunner"])
    assert beam_args == ["--runner=DataflowRunner", "--experiments=use_runner_v2", "--experiments=x",
                         "--save_main_session", "--runner=PortableRunner"]
    as_list = write_job(tmp_path / "list.yaml", "input: [a]\noutput: o\ntokenizer: t\nbeam: ['--runner=X']\n")
    assert resolve(["--config", str(as_list)])[1] == ["--runner=X"]


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("max-lenght: 2048\n", "unknown option 'max-lenght' (did you mean 'max-length'?)"),
        ("runner: DataflowRunner\n", "unknown option 'runner'"),
        ("max-length: abc\n", "max-length must be of type int"),
        ("max-length: 2.5\n", "max-length must be of type int"),
        ("packing: zip\n", "packing must be one of bfd, wrap, none"),
        ("overwrite: maybe\n", "overwrite is a switch"),
        ("seed: [1, 2]\n", "seed takes a single value"),
        ("max-length: 64\nmax_length: 128\n", "a second time"),
        ("- a\n- b\n", "must be a mapping"),
        ("input: [a\n", "not valid YAML"),
        ("beam: 3\n", "`beam:` must be a mapping"),
        ("config: other.yaml\n", "unknown option 'config'"),
        ("extra: {a: 1}\n", "unknown option 'extra'"),
    ],
)
def test_a_bad_job_file_exits_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    job: str, message: str) -> None:
    path = write_job(tmp_path / "job.yaml", job)
    assert main(["run", "--config", str(path), "-i", "a", "-o", str(tmp_path / "out"), "-t", "t"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_missing_file_and_missing_required_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read job file" in capsys.readouterr().err
    partial = write_job(tmp_path / "job.yaml", {"input": ["a"], "output": "o"})
    assert main(["run", "--config", str(partial)]) == 2
    assert "--tokenizer is required" in capsys.readouterr().err
    assert main(["run", "-i", "a", "-t", "t"]) == 2, "without a job file the three options are still required"
    assert "--output is required" in capsys.readouterr().err


SCALARS = {
    "max-length": st.integers(8, 1 << 16),
    "seed": st.integers(0, 2**31),
    "packing": st.sampled_from(["bfd", "wrap", "none"]),
    "overlong": st.sampled_from(["truncate-target", "truncate-left", "truncate", "split", "drop"]),
    "validation-fraction": st.sampled_from([0.0, 0.05, 0.5]),
    "separator": st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=8),
    "overwrite": st.booleans(),
    "no-eos": st.booleans(),
}


@settings(max_examples=40, deadline=None)
@given(st.fixed_dictionaries({}, optional=SCALARS))
def test_a_job_file_means_the_same_as_the_flags(tmp_path_factory: pytest.TempPathFactory, chosen: dict) -> None:
    base = {"input": ["a.jsonl"], "output": "out", "tokenizer": "tok"}
    job = write_job(tmp_path_factory.mktemp("job") / "job.yaml", {**base, **chosen})
    flags = ["-i", "a.jsonl", "-o", "out", "-t", "tok"]
    for name, value in chosen.items():
        if isinstance(value, bool):
            flags += [f"--{name}"] if value else []
        else:  # a backslash on the command line is written \\ (see the escapes test below)
            flags.append(f"--{name}={value}".replace("\\", "\\\\"))
    assert resolve(["--config", str(job)]) == resolve(flags)


def test_escapes_on_the_command_line_are_newlines_tabs_and_backslashes() -> None:
    """A shell passes `\\n` as two characters; a template with `\\n` means a newline (the README's example)."""
    flags = ["-i", "a.jsonl", "-o", "out", "-t", "tok"]
    config, _ = resolve([*flags, "--template", r"Q: {question}\nContext: {source}\nA: {target}",
                         "--separator", r"\t=>\n"])
    assert config.template == "Q: {question}\nContext: {source}\nA: {target}"
    assert config.separator == "\t=>\n"
    literal, _ = resolve([*flags, "--template", r"C:\\new {source} \x {target}\\", "--separator", "\\\\n"])
    assert literal.template == "C:\\new {source} \\x {target}\\", "\\\\ is a backslash; others stay as typed"
    assert literal.separator == r"\n", "\\\\n is a backslash and an n"
    assert resolve(flags)[0].separator == " = ", "the default is untouched"


def test_job_files_are_read_as_written_without_unescaping(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", (
        "input: [a.jsonl]\noutput: out\ntokenizer: tok\n"
        "template: 'Q: {source}\\nA: {target}'\n"  # single quotes: YAML keeps the backslash and the n
        'separator: "\\t|\\n"\n'  # double quotes: YAML makes a tab and a newline
    ))
    config, _ = resolve(["--config", str(job)])
    assert config.template == r"Q: {source}\nA: {target}"
    assert config.separator == "\t|\n"
    block = write_job(tmp_path / "block.yaml",
                      "input: [a]\noutput: o\ntokenizer: t\ntemplate: |-\n  Q: {source}\n  A: {target}\n")
    assert resolve(["--config", str(block)])[0].template == "Q: {source}\nA: {target}"


def test_every_run_option_can_be_set_from_a_job_file(tmp_path: Path) -> None:
    run_parser = _parser().parse_known_args(["run"])[0]._run_parser
    flags = [f for a in run_parser._actions for f in a.option_strings if f.startswith("--")]
    assert "--max-length" in flags
    for flag in set(flags) - {"--help", "--config"}:
        path = write_job(tmp_path / "one.yaml", {flag[2:]: None})
        try:
            read_job_file(str(path), run_parser)
        except UsageError as error:  # a switch refuses null: fine, the name itself was known
            assert "unknown option" not in str(error), flag
