"""Attacks on the output directory: other people's files, wrong paths, a run stopped or starved of disk.

A run writes only into a new or empty directory, or over its own dataset with --overwrite; whatever happens,
it never deletes a file it did not write, and a failed or stopped run leaves the output as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import dataset_file, run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.dataset import open_manifest, verify_dataset
from seqpack.schemas import LOCK_NAME, STAGING_NAME


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_copied_demo_directory_is_refused_and_its_tokenizer_kept(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """The issue's attack: `cp -r seqpack-demo democopy; seqpack run -o democopy -t democopy/tokenizer`."""
    demo = tmp_path / "democopy"
    shutil.copytree(tokenizer_dir, demo / "tokenizer")
    assert main(run_args(pairs_file, tmp_path / "dataset", demo / "tokenizer")) == 0
    shutil.copytree(tmp_path / "dataset", demo / "dataset")
    before = tree(demo)
    assert main(run_args(pairs_file, demo, demo / "tokenizer")) == 2
    error = capsys.readouterr().err
    assert "is not empty and is not a seqpack dataset" in error and str(demo / "dataset") in error
    assert tree(demo) == before, "nothing was touched"


@pytest.mark.parametrize("foreign", ["train/NOTES.txt", "rejected/todo.jsonl", "tokenizer/tokenizer.json", "a.txt"])
def test_a_directory_with_other_files_is_refused(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, foreign: str, capsys: pytest.CaptureFixture
) -> None:
    project = tmp_path / "proj"
    (project / foreign).parent.mkdir(parents=True, exist_ok=True)
    (project / foreign).write_text("mine")
    assert main(run_args(pairs_file, project, tokenizer_dir)) == 2
    assert f"{project / foreign}" in capsys.readouterr().err
    assert tree(project) == {foreign: b"mine"}


@pytest.mark.parametrize("foreign", ["NOTES.txt", "v000001/train/NOTES.txt", "v000001/extra.parquet"])
def test_overwrite_refuses_a_dataset_with_foreign_files_and_deletes_none(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, foreign: str, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0
    (output / foreign).write_text("mine")
    before = tree(output)
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite", "--seed", "3")) == 2
    assert "files it did not write" in capsys.readouterr().err
    assert tree(output) == before
    verify_dataset(str(output))


def test_overwrite_deletes_exactly_the_previous_datasets_files(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir, "--add-special-tokens", "[SEP]")) == 0
    first = open_manifest(str(output))
    assert any(path.endswith("tokenizer/tokenizer.json") for path in first.files)
    (output / "report.html").write_text("old report")
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite")) == 0
    second = open_manifest(str(output))
    assert second.revision == first.revision + 1 and second.directory != first.directory
    assert set(tree(output)) == {*second.shard_paths(), *second.files, "manifest.json"}
    assert not (output / first.directory).exists()


def test_overwrite_of_a_dataset_in_the_flat_layout_of_older_seqpack(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path
) -> None:
    """Datasets written before revisions had train/, stats.json and rejected/ at the top."""
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    directory = manifest.pop("directory")
    for key in ("revision", "files", "generations"):
        manifest.pop(key)
    manifest["format_version"] = 1
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            shard["path"] = shard["path"].removeprefix(f"{directory}/")
    for path in sorted((output / directory).rglob("*")):
        if path.is_file():
            target = output / path.relative_to(output / directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    shutil.rmtree(output / directory)
    (output / "manifest.json").write_text(json.dumps(manifest))
    verify_dataset(str(output))
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite")) == 0
    fresh = open_manifest(str(output))
    assert set(tree(output)) == {*fresh.shard_paths(), *fresh.files, "manifest.json"}


def test_output_that_is_a_file_or_has_a_directory_as_manifest_is_refused(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(run_args(pairs_file, a_file, tokenizer_dir)) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    odd = tmp_path / "odd"
    (odd / "manifest.json").mkdir(parents=True)
    assert main(run_args(pairs_file, odd, tokenizer_dir, "--overwrite")) == 2
    assert "is a directory" in capsys.readouterr().err
    assert (odd / "manifest.json").is_dir()


def test_a_manifest_seqpack_cannot_read_is_not_overwritten(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    (output / "manifest.json").write_text('{"someone": "else"}')
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite")) == 2
    assert "cannot read as its own" in capsys.readouterr().err
    assert tree(output) == {"manifest.json": b'{"someone": "else"}'}


def test_inputs_inside_the_output_are_refused(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0
    before = tree(output)
    assert main(run_args(output, output, tokenizer_dir, "--overwrite")) == 2
    assert "is inside --output" in capsys.readouterr().err
    assert tree(output) == before


# ------------------------------------------------------------------------------- stopped and starved runs


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, pairs: list) -> Path:
    """Enough records for several tokenize batches, so a slowed run is still working when a test acts."""
    return write_jsonl(tmp_path_factory.mktemp("in") / "many.jsonl", pairs * 8)


def _slow_run(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, SEQPACK_TEST_SLOW_TOKENIZE="1")
    return subprocess.Popen([sys.executable, "-m", "seqpack.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigterm_stops_the_run_cleanly_and_keeps_the_previous_dataset(
    tmp_path: Path, pairs_file: Path, many: Path, tokenizer_dir: Path
) -> None:
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0
    before = tree(output)
    process = _slow_run(run_args(many, output, tokenizer_dir, "--overwrite", "--seed", "5"))
    _wait_for(output / STAGING_NAME / "v000002.run")  # the run has prepared its new revision
    time.sleep(2)  # and is tokenizing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM; nothing was committed" in stderr
    assert "Traceback" not in stderr
    assert tree(output) == before, "no lock, no staging, no half revision left; the old dataset as it was"


def test_a_run_that_loses_its_lock_commits_nothing(tmp_path: Path, many: Path, tokenizer_dir: Path) -> None:
    """A run paused past the stale limit finds another run's token in the lock: it must not commit."""
    output = tmp_path / "out"
    process = _slow_run(run_args(many, output, tokenizer_dir))
    _wait_for(output / STAGING_NAME / "v000001.run")
    other = json.dumps({"host": "elsewhere", "pid": 1, "token": "the-other-run", "heartbeat": time.time()})
    (output / LOCK_NAME).write_text(other)  # as if another run had taken the lock over
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "lost its lock" in stderr and "Nothing was committed" in stderr
    assert not (output / "manifest.json").exists()
    assert (output / LOCK_NAME).read_text() == other, "the other run's lock is left alone"
    assert not (output / "v000001").exists() and not (output / STAGING_NAME).exists()


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_with_a_message_and_leaves_the_disk_clean(
    small_disk: Path, tmp_path: Path, pairs: list, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    big = write_jsonl(tmp_path / "big.jsonl", pairs * 40)
    output = small_disk / "out"
    code = main(run_args(big, output, tokenizer_dir, "--bucket-tokens", "128"))
    error = capsys.readouterr().err
    assert code == 1, error
    assert "the disk is full" in error and "Nothing was committed" in error
    assert "Traceback" not in error
    assert tree(small_disk) == {}, "the run removed its files: the disk is free again"


# ----------------------------------------------------------------------------------- tampered datasets


def test_report_on_tampered_stats_or_manifest_fails_with_a_message(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("matplotlib")
    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0
    stats_path = dataset_file(output, "stats.json")
    original = stats_path.read_text()
    for tampered in ('{"records_read": -1}', "[]", '{"fill": "x"}', "not json",
                     original.replace('"records_read": ', '"records_read": "many", "x": ')):
        stats_path.write_text(tampered)
        assert main(["report", str(output), "-o", str(tmp_path / "r.html")]) == 1
        error = capsys.readouterr().err
        assert "report failed" in error and "stats.json" in error and "Traceback" not in error
    stats_path.write_text(original)
    (output / "manifest.json").write_text('{"format": "seqpack-blocks"')
    assert main(["report", str(output), "-o", str(tmp_path / "r.html")]) == 1
    assert "manifest.json" in capsys.readouterr().err


def test_a_stop_after_the_switch_keeps_the_committed_dataset(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job dies while removing the old revision, or the launcher is stopped once the job has committed:
    the new revision is committed and must stay whole."""
    from seqpack.pipeline import commit, run

    output = tmp_path / "out"
    assert main(run_args(pairs_file, output, tokenizer_dir)) == 0

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commit, "remove_empty_directories", interrupted)  # in the job's commit step
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite", "--seed", "9")) == 0
    assert "the job failed after it committed v000002" in caplog.text
    assert open_manifest(str(output)).revision == 2
    verify_dataset(str(output))
    monkeypatch.undo()

    monkeypatch.setattr(run, "read_committed", interrupted)  # in the launcher, after the job
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite", "--seed", "3")) == 130
    assert open_manifest(str(output)).revision == 3
    verify_dataset(str(output))
    monkeypatch.undo()
    assert main(run_args(pairs_file, output, tokenizer_dir, "--overwrite")) == 0
    fresh = open_manifest(str(output))
    assert set(tree(output)) == {*fresh.shard_paths(), *fresh.files, "manifest.json"}
