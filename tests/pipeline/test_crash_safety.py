"""Crash safety: kill the CLI (SIGKILL) at many points; the output is refused or is the previous dataset,
and a clean rerun gives the same bytes as a run that was never interrupted."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.config import RunConfig
from seqpack.dataset import open_manifest, verify_dataset
from seqpack.faults import FAULT_ENV
from seqpack.pipeline.build import shard_format
from seqpack.pipeline.lock import LOCK_NAME, OutputLock
from seqpack.schemas import DatasetFormatError
from seqpack.transforms.pack import ShardBlocks
from seqpack.transforms.write import WriteShardDoFn


def run_killed(args: list[str], point: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{FAULT_ENV: point})
    return subprocess.run([sys.executable, "-m", "seqpack.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def dataset_hashes(output: Path) -> dict[str, str]:
    """Each shard's sha256, by its path inside the revision directory (revisions are numbered per output)."""
    manifest = open_manifest(str(output))
    verify_dataset(str(output))
    prefix = f"{manifest.directory}/"
    return {s.path.removeprefix(prefix): s.sha256 for split in manifest.splits.values() for s in split.shards}


def files_on_disk(output: Path) -> set[str]:
    return {p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()}


def committed_files(output: Path) -> set[str]:
    manifest = open_manifest(str(output))
    return set(manifest.shard_paths()) | set(manifest.files) | {"manifest.json"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, pairs: list, tokenizer_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("crash")
    input_file = write_jsonl(root / "pairs.jsonl", pairs + ["{broken"])
    baseline = root / "baseline"
    assert main(run_args(input_file, baseline, tokenizer_dir)) == 0
    return {"root": root, "input": input_file, "tokenizer": tokenizer_dir, "hashes": dataset_hashes(baseline)}


@pytest.mark.parametrize("point", ["read", "tokenize", "write_shard", "commit_manifest"])
def test_killed_fresh_run_leaves_nothing_usable_and_rerun_matches(setup: dict, point: str) -> None:
    output = setup["root"] / f"fresh-{point}"
    killed = run_killed(run_args(setup["input"], output, setup["tokenizer"]), point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with pytest.raises(DatasetFormatError):
        open_manifest(str(output))
    assert main(run_args(setup["input"], output, setup["tokenizer"])) == 0
    assert dataset_hashes(output) == setup["hashes"]
    assert files_on_disk(output) == committed_files(output), "the rerun cleans up what the crashed run left"


@pytest.mark.parametrize("point", ["write_shard", "commit_manifest", "commit_cleanup"])
def test_killed_overwrite_keeps_previous_dataset_or_commits_the_new_one(setup: dict, point: str) -> None:
    output = setup["root"] / f"overwrite-{point}"
    assert main(run_args(setup["input"], output, setup["tokenizer"], "--seed", "7")) == 0
    (output / "report.html").write_text("the report of the previous dataset")
    previous = dataset_hashes(output)
    assert previous != setup["hashes"]
    killed = run_killed(run_args(setup["input"], output, setup["tokenizer"], "--overwrite"), point)
    assert killed.returncode == -signal.SIGKILL
    if point == "commit_cleanup":
        assert dataset_hashes(output) == setup["hashes"], "the switch happened: the new dataset is whole"
    else:
        assert dataset_hashes(output) == previous, "the old dataset stays readable until the new one is complete"
    assert main(run_args(setup["input"], output, setup["tokenizer"], "--overwrite")) == 0
    assert dataset_hashes(output) == setup["hashes"]
    assert files_on_disk(output) == committed_files(output), "no file of an earlier dataset is left behind"


def test_killed_in_cleanup_the_next_run_removes_the_old_revision(setup: dict) -> None:
    output = setup["root"] / "fresh-cleanup"
    assert main(run_args(setup["input"], output, setup["tokenizer"], "--seed", "7")) == 0
    first = committed_files(output)
    killed = run_killed(run_args(setup["input"], output, setup["tokenizer"], "--overwrite"), "commit_cleanup")
    assert killed.returncode == -signal.SIGKILL
    assert first - {"manifest.json"} <= files_on_disk(output), "killed before the old revision was removed"
    assert main(run_args(setup["input"], output, setup["tokenizer"], "--overwrite", "--seed", "7")) == 0
    assert files_on_disk(output) == committed_files(output)
    assert open_manifest(str(output)).revision == 3


def test_lost_example_fails_the_accounting_and_commits_nothing(setup: dict) -> None:
    output = setup["root"] / "lost"
    result = run_killed(run_args(setup["input"], output, setup["tokenizer"]), "lose_example")
    assert result.returncode == 1
    assert "do not add up" in result.stderr
    assert not (output / "manifest.json").exists()


def test_second_concurrent_run_refuses(setup: dict, capsys: pytest.CaptureFixture) -> None:
    output = setup["root"] / "locked"
    with OutputLock(str(output)):
        assert main(run_args(setup["input"], output, setup["tokenizer"])) == 2
    assert "another seqpack run" in capsys.readouterr().err
    assert main(run_args(setup["input"], output, setup["tokenizer"])) == 0


def test_stale_lock_of_a_dead_run_is_taken_over(setup: dict) -> None:
    output = setup["root"] / "stale"
    output.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"host": os.uname().nodename, "pid": int(dead.stdout), "heartbeat": 0}
    (output / LOCK_NAME).write_text(json.dumps(lock))
    assert main(run_args(setup["input"], output, setup["tokenizer"])) == 0
    assert dataset_hashes(output) == setup["hashes"]


def test_a_retried_shard_write_gives_one_correct_shard(tmp_path: Path) -> None:
    from helpers import pack

    from seqpack.masking import Piece

    pieces = [Piece(np.arange(1, 9, dtype=np.int32) * (i + 1), 2) for i in range(10)]
    blocks = pack(pieces, strategy="bfd", max_length=32, pad_id=0)
    shard = ShardBlocks("train", 0, 1, blocks, len(pieces))
    config = RunConfig(inputs=["x"], output=str(tmp_path), tokenizer="t", max_length=32)
    results = []
    for _attempt in range(2):  # the runner retries the bundle: the same shard is written twice
        do_fn = WriteShardDoFn(shard_format(config), str(tmp_path))
        do_fn.start_bundle()
        results.append(list(do_fn.process(shard)))
    assert results[0] == results[1]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["train/part-00000-of-00001.parquet"]
    data = (tmp_path / files[0]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == results[0][0]["sha256"]
