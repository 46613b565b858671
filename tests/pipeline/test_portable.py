"""The portable path (Flink, Spark, Dataflow Runner v2): the same bytes through a job service and SDK workers.

The test starts Beam's own Python job service and an SDK worker pool as separate processes on localhost, and
runs the pipeline with ``PortableRunner`` and an ``EXTERNAL`` environment: the pipeline travels as a proto,
the job service runs it, and the DoFns run in a worker process the pool starts. Nothing can reach the
launching process's memory, as on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_jsonl

from seqpack.config import RunConfig
from seqpack.pipeline.run import run

BAD = ['{"source": "no target"}', "{not json"]


def dataset_bytes(dataset: Path) -> dict[str, str]:
    """sha256 of every file, and the manifest without the fields that may differ: the output path, the
    ``--shuffle`` the run was given (recorded as asked; both shuffles write the same bytes), and when each
    generation was committed."""
    digests = {
        str(p.relative_to(dataset)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = json.loads((dataset / "manifest.json").read_text())
    del manifest["config"]["output"], manifest["config"]["shuffle"]
    for generation in manifest["generations"]:
        del generation["committed_at"]
    digests["manifest.json"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]], tokenizer_dir: Path) -> dict:
    data = write_jsonl(tmp_path_factory.mktemp("in") / "pairs.jsonl", [*pairs[:200], *BAD, *pairs[200:]])
    return {"inputs": [str(data)], "tokenizer": str(tokenizer_dir), "max_length": 128, "bucket_tokens": 2048,
            "validation_fraction": 0.1}


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory, job: dict) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds"
    run(RunConfig(output=str(out), **job), ["--direct_running_mode=in_memory"])
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the job service did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return path.read_text().strip()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Beam's local job service and an SDK worker pool, each its own process, on localhost."""
    work = tmp_path_factory.mktemp("services")
    # The pool starts workers as `python -c ...`: make that this interpreter (the venv's), whatever PATH says.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    job_log, pool_log = work / "job.log", work / "pool.log"
    pool_port = free_port()
    job_service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
         "--port", "0", "--port_file", str(work / "job.port"), "--staging_dir", str(work / "staging")],
        env=env, stdout=job_log.open("w"), stderr=subprocess.STDOUT,
    )
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
        env=env, stdout=pool_log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        job_port = wait_for(work / "job.port", job_service, job_log)
        yield {"job_endpoint": f"localhost:{job_port}", "pool": f"localhost:{pool_port}", "pool_log": pool_log,
               "job_log": job_log}
    finally:
        for process in (job_service, pool):
            process.terminate()
        for process in (job_service, pool):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.parametrize("shuffle", ["auto", "spill"])  # auto: the runner's shuffle (the local one spills)
def test_portable_runner_writes_the_same_bytes_as_the_local_runner(
    tmp_path: Path, job: dict, local_dataset: Path, services: dict, shuffle: str
) -> None:
    out = tmp_path / "portable"
    manifest, stats = run(RunConfig(output=str(out), shuffle=shuffle, **job), [
        "--runner=PortableRunner",
        f"--job_endpoint={services['job_endpoint']}",
        "--environment_type=EXTERNAL",
        f"--environment_config={services['pool']}",
    ])
    assert "Starting worker with command" in services["pool_log"].read_text(), "no SDK worker process was started"
    assert "Completed job" in services["job_log"].read_text()
    assert stats["records_rejected"] == len(BAD) and set(manifest.splits) == {"train", "validation"}
    assert dataset_bytes(out) == dataset_bytes(local_dataset)
