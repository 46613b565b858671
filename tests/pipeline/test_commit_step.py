"""The commit is the job's own last step: the job commits with its launcher gone, exactly once, retried or not,
and a refusal leaves the previous dataset as it was and the output unlocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_dask
import test_portable as portable
from helpers import run_args, write_jsonl
from test_crash_safety import committed_files, dataset_hashes, files_on_disk

from seqpack.cli.main import main
from seqpack.config import RunConfig
from seqpack.dataset import open_manifest
from seqpack.faults import FAULT_ENV
from seqpack.pipeline import commit as commit_module
from seqpack.pipeline.commit import prepare_output
from seqpack.pipeline.commit_step import CommitDoFn, CommitPlan, refusal_message
from seqpack.pipeline.lock import LockLostError, OutputLock
from seqpack.pipeline.run import run
from seqpack.schemas import LOCK_NAME, STAGING_NAME, TokenizerInfo
from seqpack.schemas.stats import AccountingError, empty_stats

job, local_dataset, services = portable.job, portable.local_dataset, portable.services  # the portable fixtures
cluster = test_dask.cluster  # a Dask cluster in the test's process: it outlives the launcher


@pytest.fixture(scope="module")
def input_file(tmp_path_factory: pytest.TempPathFactory, pairs: list) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("in") / "pairs.jsonl", pairs + ["{broken"])


def test_without_waiting_on_the_local_runner_the_job_has_committed_and_released_the_lock(
    tmp_path: Path, input_file: Path, tokenizer_dir: Path
) -> None:
    """The local runner runs the job in place: by the time the launcher returns, the job has committed."""
    output = tmp_path / "out"
    config = RunConfig(inputs=[str(input_file)], output=str(output), tokenizer=str(tokenizer_dir), max_length=128,
                       bucket_tokens=2048)
    manifest, stats = run(config, ["--direct_running_mode=in_memory"], wait=False)
    assert manifest == open_manifest(str(output)) and stats["records_rejected"] == 1
    assert files_on_disk(output) == committed_files(output), "no lock, no staging left"


@pytest.mark.parametrize("lost", ["in-cleanup", "after-releasing-the-lock"])
def test_a_retried_commit_step_commits_once_and_deletes_nothing_committed(
    tmp_path: Path, input_file: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The worker running the commit step is lost after the switch: in the middle of removing the old revision,
    or once done (``--no-wait``: the lock released) but before the runner heard of it. The runner retries the
    step, which finishes the cleanup, writes no second manifest and leaves the new revision whole."""
    output, clean = tmp_path / "out", tmp_path / "clean"
    assert main(run_args(input_file, clean, tokenizer_dir, "--seed", "4")) == 0
    assert main(run_args(input_file, output, tokenizer_dir)) == 0
    first = committed_files(output) - {"manifest.json"}
    original_process, original_cleanup = CommitDoFn.process, commit_module._clean_up_after_switch
    attempts = []

    def lost_worker(*args: object) -> None:
        raise SystemExit("the worker is gone")  # not an Exception: the commit's own cleanup must not catch it

    def retried(self: CommitDoFn, stats: dict, shards: list, inputs: list):  # noqa: ANN202 - a DoFn's generator
        if lost == "in-cleanup":
            monkeypatch.setattr(commit_module, "_clean_up_after_switch", lost_worker)
            with pytest.raises(SystemExit):
                list(original_process(self, stats, shards, inputs))
            assert first <= files_on_disk(output), "the first attempt died before removing the old revision"
            monkeypatch.setattr(commit_module, "_clean_up_after_switch", original_cleanup)
        else:
            list(original_process(self, stats, shards, inputs))
            assert not (output / LOCK_NAME).exists(), "the first attempt released the lock"
        attempts.append((open_manifest(str(output)).revision, (output / "manifest.json").stat().st_mtime_ns))
        yield from original_process(self, stats, shards, inputs)  # the retry

    monkeypatch.setattr(CommitDoFn, "process", retried)
    wait = "--no-wait" if lost == "after-releasing-the-lock" else "--wait"
    assert main(run_args(input_file, output, tokenizer_dir, "--overwrite", "--seed", "4", wait)) == 0
    [(revision, written_at)] = attempts
    assert revision == 2, "the first attempt switched the manifest"
    assert (output / "manifest.json").stat().st_mtime_ns == written_at, "the retry wrote no second manifest"
    manifest = open_manifest(str(output))
    assert manifest.revision == 2 and sorted(p.name for p in output.iterdir()) == ["manifest.json", "v000002"]
    assert files_on_disk(output) == committed_files(output), "the retry removed the old revision, and only it"
    assert dataset_hashes(output) == dataset_hashes(clean)


def test_a_failed_identity_keeps_the_previous_dataset_and_unlocks_the_output(
    tmp_path: Path, input_file: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    output = tmp_path / "out"
    assert main(run_args(input_file, output, tokenizer_dir)) == 0
    before, hashes = files_on_disk(output), dataset_hashes(output)
    monkeypatch.setenv(FAULT_ENV, "lose_example")  # the packer loses one example; the accounting must see it
    assert main(run_args(input_file, output, tokenizer_dir, "--overwrite", "--seed", "4", "--no-wait")) == 1
    error = capsys.readouterr().err
    assert "do not add up" in error and "Traceback" not in error and "workers' log" not in error, error
    assert files_on_disk(output) == before, "no new revision, no staging, no lock: the old dataset as it was"
    assert dataset_hashes(output) == hashes


def test_a_refusal_reaches_the_launcher_as_its_message_not_a_traceback() -> None:
    worker = ("Traceback (most recent call last):\n  File \"commit.py\", line 9\nseqpack.pipeline.commit_checks."
              "TooFewWritten: no records were read from the inputs [while running 'Commit']\n")
    assert refusal_message(RuntimeError(worker)) == "no records were read from the inputs"
    assert refusal_message(RuntimeError("Traceback ...\nValueError: a bug")) is None


def _plan(output: Path, lock: OutputLock) -> CommitPlan:
    config = RunConfig(inputs=["pairs.jsonl"], output=str(output), tokenizer="tok")
    tokenizer = TokenizerInfo(name="tok", vocab_size=10, pad_id=0, bos_id=None, eos_id=1, fingerprint="f")
    return CommitPlan(config=config, tokenizer=tokenizer, destination=prepare_output(config, lock),
                      lock_token=lock.token, release_lock=True)


def test_the_commit_step_of_a_job_launched_without_waiting_releases_the_lock_when_it_refuses(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out"
    launcher = OutputLock(str(output), lease_seconds=3600)
    launcher.acquire()
    plan = _plan(output, launcher)
    launcher.detach()  # the launcher has left
    (output / plan.destination.directory).mkdir()
    stats = {**empty_stats(), "records_read": 3}  # three records read, none accounted for
    with pytest.raises(AccountingError, match="do not add up"):
        list(CommitDoFn(plan).process(stats, [], []))
    assert not (output / LOCK_NAME).exists(), "the job released its launcher's lock"
    assert sorted(os.listdir(output)) == [], "the run's revision and staging are removed"


def test_the_commit_step_does_not_commit_under_another_runs_lock(tmp_path: Path) -> None:
    output = tmp_path / "out"
    with OutputLock(str(output)) as launcher:
        plan = _plan(output, launcher)
    with OutputLock(str(output)):  # the launcher was stopped and another run took the output
        stats = {**empty_stats(), "records_read": 1, "examples_by_split": {"train": 1}}  # they add up
        with pytest.raises(LockLostError, match="lost its lock"):
            list(CommitDoFn(plan).process(stats, [], []))
        assert (output / LOCK_NAME).exists(), "the other run's lock is left alone"
    assert not (output / "manifest.json").exists()


# -------------------------------------------------------------------------- the launcher killed, the job goes on


def _runner_args(runner: str, request: pytest.FixtureRequest) -> list[str]:
    if runner == "dask":
        return ["--runner=DaskRunner", f"--dask_client_address={request.getfixturevalue('cluster').scheduler_address}"]
    services = request.getfixturevalue("services")
    return ["--runner=PortableRunner", f"--job_endpoint={services['job_endpoint']}", "--environment_type=EXTERNAL",
            f"--environment_config={services['pool']}"]


def _wait_until(condition, what: str, timeout: float = 240.0) -> None:  # noqa: ANN001 - a predicate
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("runner", ["portable", "dask"])
def test_a_launcher_killed_after_submitting_leaves_the_job_to_commit_exactly_once(
    tmp_path: Path, job: dict, local_dataset: Path, runner: str, request: pytest.FixtureRequest
) -> None:
    """``seqpack run --no-wait`` on the portable runner (a job service and an SDK worker pool, each its own
    process) or on a Dask cluster: the launcher is killed (SIGKILL) the moment it says the job was submitted;
    the job commits the dataset by itself, exactly once, with the same bytes as the local runner, and gives the
    lock back."""
    out = tmp_path / "out"
    args = ["run", "-i", job["inputs"][0], "-o", str(out), "-t", job["tokenizer"], "--max-length", "128",
            "--bucket-tokens", "2048", "--validation-fraction", "0.1", "--no-wait", *_runner_args(runner, request)]
    # the launcher kills itself the moment it says the job was submitted (it would return just as fast)
    launcher = subprocess.Popen([sys.executable, "-m", "seqpack.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, FAULT_ENV: "submitted"})
    said = launcher.stderr.readlines()
    launcher.wait(timeout=60)
    assert any(line.startswith("seqpack: submitted") for line in said), "".join(said)
    uncommitted_at_kill = not (out / "manifest.json").exists()  # an SDK worker takes seconds to start
    assert launcher.returncode == -signal.SIGKILL, "".join(said)
    assert uncommitted_at_kill, "the launcher returned before the job committed: the job must commit by itself"
    holder = json.loads((out / LOCK_NAME).read_text())
    assert holder["pid"] == launcher.pid and holder["lease_until"] > time.time(), "the lock is left to the job"

    _wait_until(lambda: (out / "manifest.json").exists(), "the job commits")
    _wait_until(lambda: not (out / LOCK_NAME).exists(), "the job releases the lock")
    assert main(["verify", str(out)]) == 0
    assert open_manifest(str(out)).revision == 1
    assert files_on_disk(out) == committed_files(out), "one revision, no staging, no lock"
    assert not (out / STAGING_NAME).exists()
    assert portable.dataset_bytes(out) == portable.dataset_bytes(local_dataset)


def test_without_waiting_a_dask_cluster_seqpack_would_start_itself_is_refused(
    tmp_path: Path, input_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    args = run_args(input_file, tmp_path / "out", tokenizer_dir, "--no-wait", "--runner=DaskRunner")
    assert main([arg for arg in args if not arg.startswith("--direct_running_mode")]) == 2
    assert "needs --dask_client_address" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
