"""``benchmarks/appends.py`` at a tiny size: it splits the data into files, times a full run and appends, checks
that generation 2 consumed exactly the new file, and prints the ratio. The runs are the real ``seqpack run``
commands, run in this process (each would otherwise start a Python and import Beam and torch: seconds)."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import pytest

from seqpack.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
appends = pytest.importorskip("appends")


def in_this_process(name: str, command: list[str]) -> object:
    """``appends.timed`` for a ``python -m seqpack.cli ...`` command, run by ``main`` here; start-up is not run."""
    err = io.StringIO()
    start = time.perf_counter()
    if command[1:3] == ["-m", "seqpack.cli"]:
        with contextlib.redirect_stderr(err):
            assert main(command[3:]) == 0, err.getvalue()
    seconds = time.perf_counter() - start
    return appends.Timed(name, seconds, seconds, 0.0, err.getvalue())


def test_the_append_benchmark_runs_and_checks_what_it_timed(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(appends, "timed", in_this_process)
    result_file = tmp_path / "result.json"
    argv = ["--pairs", "200", "--files", "4", "--max-length", "128", "--tokenizer", str(tokenizer_dir),
            "--work-dir", str(tmp_path / "work"), "--in-process", "--json", str(result_file)]
    assert appends.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(result_file.read_text())
    assert result["checked"] == {"generations": 2, "inputs": [4, 1], "records_read": 250}
    assert set(result["seconds"]) == {"startup", "tiny", "full", "append_nothing", "append", "new_alone"}
    assert result["ratio"] == pytest.approx(result["seconds"]["append"] / result["seconds"]["full"], rel=0.01)
    assert "append / full = " in printed and "| full run |" in printed and "'up to date' append" in printed
    data = tmp_path / "work" / "data-200-4"
    assert sorted(p.name for p in (data / "inputs").iterdir()) == [f"day-{i:03d}.jsonl" for i in range(4)]
    assert [p.name for p in (data / "later").iterdir()] == ["day-004.jsonl"], "the new file is put back"
    lines = [json.loads(line) for f in sorted((data / "inputs").iterdir()) for line in f.read_text().splitlines()]
    new = [json.loads(line) for line in (data / "later" / "day-004.jsonl").read_text().splitlines()]
    assert len(lines) == 200 and len(new) == 50
    assert not {(p["source"], p["target"]) for p in new} & {(p["source"], p["target"]) for p in lines}
