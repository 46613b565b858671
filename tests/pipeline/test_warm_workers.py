"""Warm worker processes: a launcher hands its worker's part to one, or starts the worker cold; nothing is left
running; a real local pipeline runs in the warm processes; the output is the same as with cold workers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apache_beam as beam
import pytest

from seqpack.pipeline import warm_workers, worker_launcher
from seqpack.pipeline.runners import local_provision_info, pipeline_options
from seqpack.pipeline.warm_workers import DISABLE_VARIABLE, WarmPool, start_early, start_pool, warm_local_runner

COLD = [sys.executable, "-c", "print('cold start')"]


def _serve(pool: Path, slots: int, body: str) -> subprocess.Popen:
    """A server of warm processes whose 'worker' is ``body`` (a function body returning an exit status), not
    Beam's."""
    code = "\n".join([
        "import os, sys, time",
        "from seqpack.pipeline.warm_workers import serve",
        "def target():",
        textwrap.indent(textwrap.dedent(body).strip(), "    "),
        f"serve({str(pool)!r}, {slots}, target)",
    ])
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=dict(os.environ))


def _pool_dir(tmp_path: Path, slots: int) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / worker_launcher.SLOTS_FILE).write_text(str(slots))
    return pool


def _wait_for_socket(pool: Path, slot: int) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(worker_launcher.socket_path(str(pool), slot)):
        assert time.monotonic() < deadline, "the warm process never listened"
        time.sleep(0.02)


def _launch(pool: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-I", worker_launcher.__file__, str(pool), *COLD]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env if env is not None else dict(os.environ), **kwargs)


def test_an_adopted_worker_writes_to_the_launchers_streams_and_its_status_is_the_launchers(tmp_path: Path) -> None:
    pool = _pool_dir(tmp_path, 1)
    warm = _serve(pool, 1, """
        print("worker", os.environ["WORKER_ID"], os.getcwd(), flush=True)
        print("on stderr", file=sys.stderr, flush=True)
        return 7
    """)
    _wait_for_socket(pool, 0)
    launcher = _launch(pool, env={**os.environ, "WORKER_ID": "worker_3"})  # Beam's per-worker variables pass
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 7, (out, err)
    assert out == f"worker worker_3 {os.getcwd()}\n" and "on stderr" in err
    assert warm.wait(timeout=10) == 0, "the server ends once its warm process has"
    assert (pool / "adopted-0").exists()


def test_a_changed_environment_is_refused_and_the_worker_starts_cold(tmp_path: Path) -> None:
    pool = _pool_dir(tmp_path, 1)
    warm = _serve(pool, 1, "return 0")
    _wait_for_socket(pool, 0)
    launcher = _launch(pool, env={**os.environ, "SOMETHING_NEW": "1"})
    out, _ = launcher.communicate(timeout=60)
    assert (launcher.returncode, out) == (0, "cold start\n")
    assert warm.wait(timeout=10) == 0 and not (pool / "adopted-0").exists()


def test_without_a_warm_process_to_claim_the_worker_starts_cold(tmp_path: Path) -> None:
    assert _launch(tmp_path / "no-pool").communicate(timeout=60)[0] == "cold start\n"
    pool = _pool_dir(tmp_path, 2)  # slots whose processes never started: nothing listens
    assert _launch(pool).communicate(timeout=60)[0] == "cold start\n"
    assert sorted(p.name for p in pool.iterdir() if p.name.startswith("claim")) == ["claim-0", "claim-1"]


def test_two_launchers_never_claim_the_same_warm_process(tmp_path: Path) -> None:
    pool = _pool_dir(tmp_path, 1)
    warm = _serve(pool, 1, "print('warm', flush=True); return 0")
    _wait_for_socket(pool, 0)
    launchers = [_launch(pool) for _ in range(2)]
    outs = sorted(launcher.communicate(timeout=60)[0] for launcher in launchers)
    assert outs == ["cold start\n", "warm\n"]
    warm.wait(timeout=10)


def test_a_killed_launcher_takes_its_worker_with_it(tmp_path: Path) -> None:
    pool = _pool_dir(tmp_path, 1)
    warm = _serve(pool, 1, "print('running', flush=True); time.sleep(60); return 0")
    _wait_for_socket(pool, 0)
    launcher = _launch(pool)
    assert launcher.stdout.readline() == "running\n"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    warm.wait(timeout=10)  # the server ends once its warm process has
    worker = int((pool / "warm-0").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_an_idle_warm_process_ends_when_the_driver_closes_the_pool(tmp_path: Path) -> None:
    pool = start_pool(2)
    assert pool is not None
    for slot in range(2):
        _wait_for_socket(Path(pool.directory), slot)
    pool.server.stdin.close()  # as when the driver dies
    assert pool.server.wait(timeout=30) == 0, "the server ends once its idle warm processes have"
    assert len(pool.warm_pids()) == 2
    for pid in pool.warm_pids():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    pool.close()
    assert not os.path.exists(pool.directory)


def test_a_local_pipeline_runs_in_the_warm_processes(tmp_path: Path) -> None:
    options, runner = pipeline_options(["--direct_num_workers=2"])
    with warm_local_runner(options, runner, local_provision_info(options)) as warm:
        pool: WarmPool = warm.warm_pool
        with beam.Pipeline(runner=warm, options=options) as pipeline:
            record = str(tmp_path)  # a lambda travels by value: the workers cannot import this test module
            _ = pipeline | beam.Create(range(20)) | beam.Map(lambda _: Path(record, str(os.getpid())).touch())
        assert pool.adopted() == 2
        pids = {int(name) for name in os.listdir(tmp_path)}
        assert pids and pids <= set(pool.warm_pids())
    assert pool.server.poll() is not None


@pytest.mark.parametrize("beam_args", [["--direct_running_mode=in_memory"], ["--runner=DataflowRunner"]])
def test_other_runners_are_left_as_they_are(beam_args: list[str]) -> None:
    options, runner = pipeline_options(beam_args)
    with warm_local_runner(options, runner) as chosen:
        assert chosen is runner


def test_warm_workers_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    options, runner = pipeline_options([])
    with warm_local_runner(options, runner) as chosen:
        assert chosen is runner


def test_the_progress_variable_is_the_one_progress_counts_reads() -> None:
    from seqpack.pipeline.warm_workers import PER_WORKER_VARIABLES
    from seqpack.transforms.progress_counts import PROGRESS_DIR_ENV

    assert PROGRESS_DIR_ENV in PER_WORKER_VARIABLES


def test_a_run_with_warm_workers_writes_what_cold_workers_write(
    tmp_path: Path, pairs_file: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from seqpack.config import RunConfig
    from seqpack.pipeline.run import run

    def build(name: str) -> tuple[dict, bytes]:
        config = RunConfig(inputs=[str(pairs_file)], output=str(tmp_path / name), tokenizer=str(tokenizer_dir),
                           max_length=128, bucket_tokens=2048, validation_fraction=0.1)
        manifest, _ = run(config, ["--direct_num_workers=2"])
        assert manifest.tokenizer.backend == "fast", "the check on the driver's thread reached the commit step"
        shards = {s.path: s.sha256 for split in manifest.splits.values() for s in split.shards}
        return shards, (tmp_path / name / manifest.directory / "stats.json").read_bytes()

    caplog.set_level("INFO", logger="seqpack")
    warm = build("warm")
    assert "local workers: 2 of 2 started warm" in caplog.text
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    caplog.clear()
    assert build("cold") == warm
    assert "started warm" not in caplog.text


def test_without_a_usable_temp_directory_the_workers_start_cold(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    import errno
    import tempfile

    real = tempfile.mkdtemp
    long_dir = tmp_path / ("x" * 120)
    long_dir.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kwargs: real(**kwargs, dir=str(long_dir)))
    assert start_pool(2) is None, "a socket path over the limit"
    assert list(long_dir.iterdir()) == []

    def full(**_kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    assert start_pool(2) is None


def _gone(pool: WarmPool) -> bool:
    return pool.server.poll() is not None and not os.path.exists(pool.directory)


def test_a_local_run_takes_the_pool_started_as_the_command_began(tmp_path: Path) -> None:
    """``seqpack run`` starts the pool before it imports Beam; the run's local runner takes that very pool (its
    workers run in it) and closes it at the end."""
    start_early(["-i", "in.jsonl", "-o", "out", "-t", "tok"])
    early = warm_workers._EARLY
    assert early is not None and early.workers == multiprocessing.cpu_count()
    options, runner = pipeline_options([])
    with warm_local_runner(options, runner, local_provision_info(options)) as warm:
        assert warm.warm_pool is early and warm_workers._EARLY is None
        with beam.Pipeline(runner=warm, options=options) as pipeline:
            record = str(tmp_path)
            _ = pipeline | beam.Create(range(20)) | beam.Map(lambda _: Path(record, str(os.getpid())).touch())
        assert {int(name) for name in os.listdir(tmp_path)} <= set(early.warm_pids())
    assert _gone(early)


@pytest.mark.parametrize("run_argv", [["--runner=DataflowRunner"], ["--direct_running_mode=in_memory"],
                                      ["--no-wait"], ["--dry-run"], ["--help"]])
def test_no_early_pool_where_the_command_line_may_run_elsewhere_or_nothing(run_argv: list[str]) -> None:
    start_early(["-i", "in.jsonl", *run_argv])
    assert warm_workers._EARLY is None


def test_an_early_pool_no_run_takes_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another runner or worker count (a job file's), or a command that fails before its run, ends the pool."""
    start_early([])
    early = warm_workers._EARLY
    options, runner = pipeline_options(["--direct_running_mode=in_memory"])
    with warm_local_runner(options, runner) as chosen:
        assert chosen is runner
    assert warm_workers._EARLY is None and _gone(early)

    start_early([])
    early = warm_workers._EARLY
    options, runner = pipeline_options([f"--direct_num_workers={early.workers + 1}"])
    with warm_local_runner(options, runner) as warm:
        assert warm.warm_pool is not early and warm.warm_pool.workers == early.workers + 1
    assert _gone(early)

    from seqpack.cli.main import main

    monkeypatch.setattr(warm_workers, "close_early", counted := _Counted(warm_workers.close_early))
    assert main(["run", "-i", "missing.jsonl", "-o", "out", "-t", "tok", "--nonsense"]) != 0
    assert counted.calls == 1 and warm_workers._EARLY is None


class _Counted:
    def __init__(self, function) -> None:  # noqa: ANN001 - any callable
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204 - passes everything through
        self.calls += 1
        return self.function(*args, **kwargs)


def test_the_server_loads_the_tokenizer_the_driver_names_before_it_forks(tmp_path: Path, tokenizer_dir: Path
                                                                          ) -> None:
    """The driver's one word (``WarmPool.preload_tokenizer``): the server loads that fast encoder, and the
    worker forked after it finds it loaded for that definition."""
    pytest.importorskip("fastokens")
    pool = _pool_dir(tmp_path, 1)
    definition = tokenizer_dir / "tokenizer.json"
    warm = _serve(pool, 1, f"""
        from seqpack import fast_encoder
        digest = fast_encoder._definition_digest(open({str(definition)!r}, encoding="utf-8").read())
        print("preloaded", sorted(fast_encoder._PRELOADED) == [digest], flush=True)
        return 0
    """)
    server = WarmPool(str(pool), warm, 1)
    server.preload_tokenizer(str(definition))
    server.preload_tokenizer(str(tmp_path / "another.json"))  # said once: a second word is not sent
    _wait_for_socket(pool, 0)
    launcher = _launch(pool)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, (out, err)
    assert out == "preloaded True\n"
    assert warm.wait(timeout=10) == 0


def test_no_word_once_the_server_has_forked(tmp_path: Path, tokenizer_dir: Path) -> None:
    """A word after the fork would reach the warm processes, which take anything on stdin for the pool closing:
    once the server has forked (here for a launcher that came first), the word is not sent."""
    pool = _pool_dir(tmp_path, 2)
    warm = _serve(pool, 2, "time.sleep(60); return 0")
    server = WarmPool(str(pool), warm, 2)
    _wait_for_socket(pool, 1)
    launcher = _launch(pool)
    deadline = time.monotonic() + 30
    while len(server.warm_pids()) < 2:
        assert time.monotonic() < deadline, "the server never forked"
        time.sleep(0.02)
    server.preload_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    assert not server.told
    launcher.kill()
    launcher.wait(timeout=10)
    server.close()
