"""What a new user meets in the first hour of runs: failures that say why, counts that add up, quiet logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import IN_PROCESS, dataset_file, run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.config import RunConfig
from seqpack.pipeline.run import run
from seqpack.pipeline.run_summary import summary
from seqpack.schemas import LOCK_NAME, STAGING_NAME, Manifest


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqpack.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


# ------------------------------------------------------------------------- (2) empty or mostly rejected


def test_a_wrong_field_name_fails_and_names_the_reason_and_an_example(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir, "--source-field", "english")) == 1
    error = capsys.readouterr().err
    assert "no example would be written (480 of 480)" in error and "missing_field" in error
    assert f"{pairs_file}:1: field 'english' is missing" in error, "one example, with its file and line"
    assert not output.exists(), "nothing committed, nothing left"


def test_more_rejections_than_the_limit_fail_unless_the_limit_is_raised(
    tmp_path: Path, pairs: list, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    records = [pair if i % 5 == 0 else "{broken" for i, pair in enumerate(pairs[:100])]  # 80 % invalid
    data = write_jsonl(tmp_path / "mostly-bad.jsonl", records)
    assert main(run_args(data, tmp_path / "out", tokenizer_dir)) == 1
    error = capsys.readouterr().err
    assert "80% of the records were rejected, more than --max-reject-fraction 0.5 (80 of 100)" in error
    assert "invalid_json" in error and f"{data}:2:" in error
    config = RunConfig(inputs=[str(data)], output=str(tmp_path / "kept"), tokenizer=str(tokenizer_dir),
                       max_length=128, max_reject_fraction=1.0)
    manifest, stats = run(config, [IN_PROCESS])
    assert stats["records_rejected"] == 80 and sum(stats["examples_by_split"].values()) == 20


def test_nothing_to_write_fails_even_without_rejections(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(run_args(pairs_file, tmp_path / "out", tokenizer_dir, "--min-target-tokens", "100")) == 1
    assert "no example would be written: of 480 records, 480 were dropped (target_too_short 480)" in \
        capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(run_args(empty, tmp_path / "out2", tokenizer_dir)) == 1
    assert "no records were read" in capsys.readouterr().err


# --------------------------------------------------------------------------- (3) counts that add up


def test_wrap_packing_summary_counts_segments_and_blocks_in_the_singular(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir, "--packing", "wrap", "--max-length", "4096",
                         "--bucket-tokens", "65536")) == 0
    manifest = Manifest.from_json((output / "manifest.json").read_text())
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert "examples" not in stats, "the counter that was always 0 is gone"
    text = summary(manifest, stats, str(output))
    rows = manifest.splits["train"].rows
    assert f"{rows} block{'s' * (rows != 1)} in 1 shard ·" in text
    assert f"{manifest.splits['train'].examples:,} segments" in text
    assert "480 records read: 480 written" in text


def test_a_blank_target_is_rejected_as_blank(tmp_path: Path, tokenizer_dir: Path, pairs: list) -> None:
    data = write_jsonl(tmp_path / "blank.jsonl", [*pairs[:10], {"source": "x", "target": "  \t "}])
    output = tmp_path / "out"
    assert main(run_args(data, output, tokenizer_dir)) == 0
    [rejected] = [json.loads(line) for line in dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()]
    assert rejected["reason"] == "empty_target" and "is blank" in rejected["detail"]


# ------------------------------------------------------------------------ (8) what truncation cost


LONG = "the cat sees a green book in the garden " * 8
OVERLONG_RECORDS = [{"source": LONG, "target": "le chat"}, {"source": "short", "target": LONG},
                    {"source": LONG * 2, "target": "oui"}, {"source": "a", "target": "b"}]


def test_the_summary_says_how_many_truncated_examples_lost_their_prompt_or_answer(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    """``--overlong truncate-left`` (the default before truncate-target) cuts prompts, and says so."""
    data = write_jsonl(tmp_path / "long.jsonl", OVERLONG_RECORDS)
    output = tmp_path / "out"
    assert main(run_args(data, output, tokenizer_dir, "--max-length", "16", "--bucket-tokens", "64",
                         "--overlong", "truncate-left")) == 0
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["examples_truncated"] == 3
    assert stats["examples_target_cut"] == 1, "the long target was cut"
    assert stats["examples_prompt_lost"] == 1, "the short source next to a long target is gone entirely"
    text = summary(Manifest.from_json((output / "manifest.json").read_text()), stats, str(output))
    assert "(3 truncated to fit: 1 kept none of their prompt, 1 lost the end of their answer)" in text


def test_the_default_keeps_every_prompt_whole_and_counts_what_it_cut_and_dropped(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "long.jsonl", OVERLONG_RECORDS)
    output = tmp_path / "out"
    assert main(run_args(data, output, tokenizer_dir, "--max-length", "16", "--bucket-tokens", "64")) == 0
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["examples_truncated"] == stats["examples_target_cut"] == 1, "the long target was cut"
    assert stats["examples_prompt_lost"] == 0
    assert stats["dropped_by_reason"] == {"prompt_too_long": 2}, "the two long sources leave no room for a target"
    assert stats["records_read"] == sum(stats["examples_by_split"].values()) + 2 + stats["records_rejected"]
    text = summary(Manifest.from_json((output / "manifest.json").read_text()), stats, str(output))
    assert "2 dropped (1 truncated to fit: 1 lost the end of their answer; 2 dropped as too long)" in text
    assert "dropped: prompt_too_long 2" in text


# ------------------------------------------------------------------ (4, 6, 7) quiet, stoppable, clean


@pytest.fixture
def private_tmp(tmp_path: Path) -> dict[str, str]:
    """A TMPDIR of the test's own, so the files a run leaves in the temporary directory can be counted."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}


def test_a_local_run_prints_only_seqpack_lines_and_leaves_no_temporary_files(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, private_tmp: dict[str, str]
) -> None:
    result = cli("run", "-i", str(pairs_file), "-o", str(tmp_path / "out"), "-t", str(tokenizer_dir),
                 "--max-length", "128", env={**private_tmp, "SEQPACK_PROGRESS_INTERVAL": "0.5"})
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line]
    assert lines and all(line.startswith(("seqpack: ", "  ")) for line in lines), result.stderr
    assert os.listdir(private_tmp["TMPDIR"]) == [], "no beam-pipeline-temp*, no worker log"


def test_a_worker_error_is_one_line_and_the_log_keeps_the_traceback(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, private_tmp: dict[str, str]
) -> None:
    output = tmp_path / "out"
    result = cli("run", "-i", str(pairs_file), "-o", str(output), "-t", str(tokenizer_dir), "--max-length", "128",
                 env={**private_tmp, "SEQPACK_FAULT": "raise:tokenize"})
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("seqpack: failed:")]
    assert "InjectedFault: a test asked this run to fail at 'tokenize'" in line
    assert "Traceback" not in result.stderr
    [log] = [name for name in os.listdir(private_tmp["TMPDIR"])]
    assert log.startswith("seqpack-workers-") and str(Path(private_tmp["TMPDIR"]) / log) in line
    text = (Path(private_tmp["TMPDIR"]) / log).read_text()
    assert "Traceback" in text and "the driver's traceback" in text
    assert not output.exists()


STOPS = [(signal.SIGINT, True, 130, "Ctrl-C"), (signal.SIGTERM, True, 143, "SIGTERM"),
         (signal.SIGTERM, False, 143, "SIGTERM")]


@pytest.mark.parametrize(("signum", "to_group", "code", "words"), STOPS,
                         ids=["ctrl-c-terminal", "sigterm-group", "sigterm-driver-only"])
def test_ctrl_c_and_sigterm_print_one_line_and_release_everything(
    tmp_path: Path, pairs: list, tokenizer_dir: Path, private_tmp: dict[str, str], signum: int, to_group: bool,
    code: int, words: str,
) -> None:
    """A terminal's Ctrl-C reaches the whole process group; a scheduler's SIGTERM often only the driver."""
    data = write_jsonl(tmp_path / "many.jsonl", pairs * 8)
    output = tmp_path / "out"
    env = {**os.environ, **private_tmp, "SEQPACK_TEST_SLOW_TOKENIZE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "seqpack.cli", "run", "-q", "-i", str(data), "-o",
                                str(output), "-t", str(tokenizer_dir), "--max-length", "128"],
                               env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((output / STAGING_NAME).glob("*/_spill")) and time.monotonic() < deadline:
        time.sleep(0.1)  # until the workers are tokenizing
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "nothing was committed" in lines[0], stderr
    assert not output.exists() or sorted(os.listdir(output)) == [], "no lock, no staging, no revision left"
    assert os.listdir(private_tmp["TMPDIR"]) == []
    assert not (output / LOCK_NAME).exists()


def test_verbose_shows_beams_log_lines(tmp_path: Path, pairs_file: Path, tokenizer_dir: Path) -> None:
    result = cli("run", "-v", "-i", str(pairs_file), "-o", str(tmp_path / "out"), "-t", str(tokenizer_dir),
                 "--max-length", "128", IN_PROCESS)
    assert result.returncode == 0, result.stderr
    assert "apache_beam" in result.stderr


def test_the_demo_says_where_its_tokenizer_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    assert f"the demo's tokenizer (built from the pairs): {tmp_path / 'demo' / 'tokenizer'}" in capsys.readouterr().err
