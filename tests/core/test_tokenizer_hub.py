"""A hub id with no hub to reach fails at once, in one line that says how to pass a local tokenizer; a hub id
already in the local Hugging Face cache still loads. Each case runs in a child process: the hub client reads its
settings (endpoint, offline mode, cache) when it is imported."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_jsonl
from transformers import AutoTokenizer

from seqpack.tokenizer import HUB_PROBE_SECONDS, hub_unreachable

HUB_ID = "some-org/some-model"
FAST = 20.0
"""Seconds a failing hub load may take, start-up included (it took 52 before: five retries, ~44 warnings)."""


def closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A server that lets clients connect and never answers, like a network that drops packets."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server


def url(server: socket.socket) -> str:
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def hub_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment with an empty Hugging Face cache and no offline switch unless ``settings`` sets one."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **settings}


def seqpack_run(tmp_path: Path, tokenizer: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    source = write_jsonl(tmp_path / "pairs.jsonl", [{"source": "a", "target": "b"}])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "seqpack.cli", "run", "-i", str(source), "-o", str(tmp_path / "out"),
         "-t", tokenizer], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    return done, time.monotonic() - started


def assert_one_clear_line(done: subprocess.CompletedProcess, elapsed: float, bound: float = FAST) -> str:
    assert done.returncode == 2, done.stderr
    assert elapsed < bound, f"took {elapsed:.1f}s"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no retry warnings, no traceback
    line = lines[0]
    assert line.startswith(f"seqpack: error: cannot load tokenizer {HUB_ID!r}: it is not a local path")
    assert "--tokenizer path/to/dir" in line and "tokenizer.json" in line and ".gguf" in line
    return line


def test_a_hub_that_refuses_connections_fails_fast_in_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    done, elapsed = seqpack_run(tmp_path, HUB_ID, hub_env(tmp_path, HF_ENDPOINT=endpoint))
    line = assert_one_clear_line(done, elapsed)
    assert f"the Hugging Face hub ({endpoint}) cannot be reached" in line


def test_a_hub_that_never_answers_fails_after_the_probe_timeout(tmp_path: Path, silent_server: socket.socket) -> None:
    endpoint = url(silent_server)
    done, elapsed = seqpack_run(tmp_path, HUB_ID, hub_env(tmp_path, HF_ENDPOINT=endpoint))
    # The probe waits HUB_PROBE_SECONDS, and the hub client itself one 3 s lookup (its agent registry) even when
    # reading only its cache; before, five retries of 10 s reads each.
    line = assert_one_clear_line(done, elapsed, bound=FAST + 10)
    assert "cannot be reached" in line and elapsed >= HUB_PROBE_SECONDS


def test_hf_hub_offline_is_honoured_without_trying_the_network(tmp_path: Path, silent_server: socket.socket) -> None:
    env = hub_env(tmp_path, HF_HUB_OFFLINE="1", HF_ENDPOINT=url(silent_server))
    done, elapsed = seqpack_run(tmp_path, HUB_ID, env)
    assert "HF_HUB_OFFLINE is set" in assert_one_clear_line(done, elapsed)
    silent_server.setblocking(False)
    with pytest.raises(BlockingIOError):  # nobody connected: no probe, no request at all
        silent_server.accept()


def test_the_default_hub_fails_in_one_line_whatever_the_network(tmp_path: Path) -> None:
    """This machine has no internet: the case of the issue. With network, the id does not exist: one line too."""
    done, elapsed = seqpack_run(tmp_path, HUB_ID, hub_env(tmp_path))
    assert done.returncode == 2 and elapsed < FAST, (elapsed, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"seqpack: error: cannot load tokenizer {HUB_ID!r}")


def test_a_hub_id_in_the_local_cache_loads_with_no_hub(tmp_path: Path, tokenizer_dir: Path) -> None:
    """The cache as a download of a tokenizer-only repository leaves it: files, refs/main, no config.json."""
    repo, revision = tmp_path / "hf-home" / "hub" / "models--test-org--tiny", "0" * 40
    shutil.copytree(tokenizer_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / ".no_exist" / revision).mkdir(parents=True)
    (repo / ".no_exist" / revision / "config.json").touch()
    env = hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    code = "from seqpack.tokenizer import load_tokenizer; print(len(load_tokenizer('test-org/tiny')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


def test_a_missing_tokenizer_file_is_named_without_asking_the_hub(tmp_path: Path) -> None:
    missing = "tok/tokenizer.json"  # a name the hub could hold: it must not be looked up there
    done, elapsed = seqpack_run(tmp_path, missing, hub_env(tmp_path, HF_ENDPOINT="http://127.0.0.1:9"))
    assert done.returncode == 2 and elapsed < FAST
    assert done.stderr.strip() == f"seqpack: error: no such tokenizer file {missing!r}: check the path"


def test_offline_variables_are_read_when_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub_unreachable() == "TRANSFORMERS_OFFLINE is set"
