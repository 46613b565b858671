"""``seqpack watch``: when files count as settled and a generation is due (pure), and the service itself: files
dropped over time become generations, a stop by SIGTERM between or during a generation and a ``kill -9`` lose
nothing and double nothing, and every input pair lands in exactly one generation."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from seqpack.cli.main import main
from seqpack.errors import RunFailedError, UsageError
from seqpack.generations import FoundFile
from seqpack.inputs.records import InputError
from seqpack.pipeline.watch import _patterns_of
from seqpack.schemas import LOCK_NAME, MANIFEST_NAME, STAGING_NAME, STATS_NAME, WATCH_STATUS_NAME, Manifest
from seqpack.watching import (
    BYTES_PER_TOKEN_GUESS,
    Seen,
    commit_reason,
    find_backlog,
    observe,
    poll_line,
    tokens_per_byte,
)

IN_PROCESS = "--direct_running_mode=in_memory"

# ------------------------------------------------------------------------------------------ pure logic


def test_a_file_is_unchanged_since_its_modification_time_and_starts_over_when_it_changes() -> None:
    seen = observe({}, [FoundFile("a", 10, 100.0), FoundFile("b", 5, 500.0)], now=200.0)
    assert seen["a"].stable_since == 100.0  # written long ago: a restarted watcher need not wait again
    assert seen["b"].stable_since == 200.0  # a clock ahead of ours counts from now
    again = observe(seen, [FoundFile("a", 10, 100.0), FoundFile("b", 7, 210.0)], now=220.0)
    assert again["a"] is seen["a"]
    assert again["b"] == Seen(7, 210.0, 220.0)  # grew: its settle time starts over when the watcher saw it
    assert observe(again, [FoundFile("b", 7, 210.0)], now=230.0).keys() == {"b"}  # a is gone (consumed, moved)


def test_backlog_splits_settled_from_settling_and_the_oldest_decides_max_wait() -> None:
    seen = {"old": Seen(4000, 1.0, 100.0), "new": Seen(400, 2.0, 190.0), "writing": Seen(40, 3.0, 199.0)}
    backlog = find_backlog(seen, 200.0, settle=10.0)
    assert set(backlog.settled) == {"old", "new"} and set(backlog.settling) == {"writing"}
    assert backlog.settled_bytes == 4400 and backlog.bytes == 4440
    assert backlog.oldest_stable_since == 100.0
    assert backlog.files() == {"new": (400, 2.0), "old": (4000, 1.0)}
    assert commit_reason(backlog, 0.25, min_new_tokens=0, max_wait=3600, now=200.0) is not None
    assert commit_reason(backlog, 0.25, min_new_tokens=1100, max_wait=3600, now=200.0) is not None  # 4400 / 4
    assert commit_reason(backlog, 0.25, min_new_tokens=1101, max_wait=3600, now=200.0) is None
    assert "waited" in commit_reason(backlog, 0.25, min_new_tokens=10**9, max_wait=100, now=200.0)
    assert commit_reason(backlog, 0.25, min_new_tokens=10**9, max_wait=101, now=200.0) is None
    nothing_settled = find_backlog({"writing": Seen(40, 3.0, 199.0)}, 200.0, settle=10.0)
    assert commit_reason(nothing_settled, 1.0, min_new_tokens=0, max_wait=0, now=10**6) is None


def test_tokens_per_byte_is_measured_on_the_dataset_or_guessed() -> None:
    def manifest(sizes: list[int], tokens: int) -> Manifest:
        generation = SimpleNamespace(inputs=[SimpleNamespace(size=size) for size in sizes])
        return SimpleNamespace(generations=[generation], splits={"train": SimpleNamespace(tokens=tokens)})  # type: ignore[return-value]

    assert tokens_per_byte(None) == 1 / BYTES_PER_TOKEN_GUESS
    assert tokens_per_byte(manifest([], 0)) == 1 / BYTES_PER_TOKEN_GUESS  # a dataset of older seqpack: no inputs
    assert tokens_per_byte(manifest([300, 700], 500)) == 0.5


def test_poll_line_counts_files_and_estimates_tokens() -> None:
    backlog = find_backlog({"a": Seen(100_000, 0.0, 0.0), "b": Seen(80_000, 0.0, 0.0),
                            "c": Seen(20_000, 0.0, 99.0)}, 100.0, settle=10.0)
    assert poll_line(12, backlog, 0.25) == "watch: poll 12: 3 new files (2 settled, 1 settling), backlog ~50,000 tokens"


def test_a_run_lists_only_the_patterns_of_its_settled_files_in_the_order_given() -> None:
    backlog = find_backlog({"in/b.jsonl": Seen(1, 0.0, 0.0), "in/a.parquet": Seen(1, 0.0, 0.0),
                            "more/c.jsonl": Seen(1, 0.0, 99.0)}, 100.0, settle=10.0)
    patterns = {"in/b.jsonl": "in/*.jsonl", "in/a.parquet": "in/*.parquet", "more/c.jsonl": "more/"}
    inputs = ["more/", "in/*.parquet", "in/*.jsonl", "empty/*.csv"]
    assert _patterns_of(backlog, patterns, inputs) == ["in/*.parquet", "in/*.jsonl"]


def test_a_run_reads_only_the_settled_files_as_they_settled(tmp_path: Path) -> None:
    """``run(only=...)``: a file not among them, or changed since it settled, is left for a later generation."""
    from seqpack.config import RunConfig
    from seqpack.inputs.records import InputFile
    from seqpack.pipeline.appends import select_inputs

    paths = {name: tmp_path / f"{name}.jsonl" for name in ("settled", "grew", "new", "gone")}
    for path in paths.values():
        path.write_text('{"source": "a", "target": "b"}\n')
    seen = {str(p): (p.stat().st_size, p.stat().st_mtime) for name, p in paths.items() if name != "new"}
    with paths["grew"].open("a") as out:
        out.write('{"source": "c", "target": "d"}\n')
    paths["gone"].unlink()
    files = [InputFile(str(p), "jsonl", str(p)) for name, p in paths.items() if name != "gone"]
    config = RunConfig(inputs=[str(tmp_path / "*.jsonl")], output=str(tmp_path / "out"), tokenizer="t", append=True)
    selection = select_inputs(config, files, None, None, only=seen)  # type: ignore[arg-type]
    assert [f.path for f in selection.files] == [str(paths["settled"])]
    assert [(f.path, f.size) for f in selection.found] == [(str(paths["settled"]), paths["settled"].stat().st_size)]


# ------------------------------------------------------------------------------------------ the service

FILES = 6
"""The demo pairs cut into this many input files, dropped one or two at a time."""


def watch_args(root: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["watch", "-i", str(root / "in" / "*.jsonl"), "-o", str(root / "out"), "-t", str(tokenizer),
            "--max-length", "128", "--bucket-tokens", "2048", "--interval", "0.3", "--settle", "1", IN_PROCESS,
            *extra]


class Watcher:
    """A ``seqpack watch`` process and what it says."""

    def __init__(self, root: Path, tokenizer: Path, *extra: str) -> None:
        self.root = root
        self.path = root / f"watch-{time.monotonic_ns()}.log"
        self.log = self.path.open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "seqpack.cli", *watch_args(root, tokenizer, *extra)],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        """The status file, once this watcher wrote it (a dead one's may be there before)."""
        found = status(self.root / "out")
        return found if found.get("pid") == self.process.pid else {}

    def output(self) -> str:
        return self.path.read_text()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the watcher ended ({self.process.returncode}) waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=40)
        finally:
            self.log.close()


def generations(output: Path) -> list[Any]:
    manifest = output / MANIFEST_NAME
    if not manifest.exists():
        return []
    return Manifest.from_json(manifest.read_text(), where=str(manifest)).generations


def consumed(output: Path) -> set[int]:
    """The numbers of the input files the dataset's generations consumed."""
    return {int(Path(c.path).stem.removeprefix("part-")) for g in generations(output) for c in g.inputs}


def status(output: Path) -> dict[str, Any]:
    try:
        return json.loads((output / WATCH_STATUS_NAME).read_text())
    except (OSError, ValueError):
        return {}


def drop(root: Path, index: int, pairs: list[dict[str, str]], *, slowly: bool = False) -> None:
    """Write input file ``index`` (its share of the pairs); ``slowly``: half, a pause, then the rest, as a slow
    writer does in place (the watcher must not read it half-written)."""
    share = len(pairs) // FILES
    lines = [json.dumps(pair) + "\n" for pair in pairs[index * share : (index + 1) * share]]
    path = root / "in" / f"part-{index}.jsonl"
    with path.open("w") as out:
        out.writelines(lines[: len(lines) // 2])
        out.flush()
        if slowly:
            time.sleep(0.6)
        out.writelines(lines[len(lines) // 2 :])


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list) -> dict[str, Any]:
    """One watched directory through a watcher's life: started before any input exists, files dropped over time,
    stopped between generations, stopped during one, killed with -9 during one, and restarted each time."""
    root = tmp_path_factory.mktemp("watch")
    (root / "in").mkdir()
    out = root / "out"
    seen: dict[str, Any] = {"root": root, "out": out}

    # Generation 1 waits for both files: more tokens than one holds (4 bytes a token, before any generation).
    one_file = len("".join(json.dumps(pair) + "\n" for pair in pairs[: len(pairs) // FILES]).encode())
    first = Watcher(root, tokenizer_dir, "--min-new-tokens", str(one_file * 3 // 8))
    first.wait_for("a first poll", lambda: first.status().get("polls", 0) >= 1)
    seen["empty_status"] = status(out)
    drop(root, 0, pairs)
    drop(root, 1, pairs, slowly=True)
    first.wait_for("parts 0 and 1", lambda: consumed(out) == {0, 1} and first.status()["backlog"]["files"] == 0)
    asked = time.monotonic()
    seen["between"] = first.stop(signal.SIGTERM)
    seen["between_seconds"] = time.monotonic() - asked
    seen["between_status"] = status(out)
    seen["first_log"] = first.output()

    second = Watcher(root, tokenizer_dir)
    drop(root, 2, pairs)
    second.wait_for("a run holding the lock", lambda: (out / LOCK_NAME).exists())
    seen["during"] = second.stop(signal.SIGTERM)
    seen["after_stop"] = {"consumed": consumed(out), "lock": (out / LOCK_NAME).exists(),
                          "staging": (out / STAGING_NAME).exists(), "status": status(out)}
    seen["second_log"] = second.output()

    third = Watcher(root, tokenizer_dir)
    third.wait_for("part 2 (the stopped batch, again)",
                   lambda: consumed(out) == {0, 1, 2} and third.status().get("state") == "idle")
    drop(root, 3, pairs)
    drop(root, 4, pairs)
    third.wait_for("a run writing", lambda: (out / STAGING_NAME).exists() and (out / LOCK_NAME).exists())
    time.sleep(0.5)
    seen["killed"] = third.stop(signal.SIGKILL)
    seen["after_kill"] = {"consumed": consumed(out), "lock": (out / LOCK_NAME).exists()}

    drop(root, 5, pairs)
    time.sleep(1.1)  # the last file settles
    once = subprocess.run([sys.executable, "-m", "seqpack.cli", *watch_args(root, tokenizer_dir, "--once")],
                          capture_output=True, text=True, timeout=60)
    seen["once"] = once
    return seen


def test_the_watcher_waits_for_inputs_and_keeps_its_status_beside_the_dataset(story: dict) -> None:
    empty = story["empty_status"]
    assert empty["polls"] >= 1 and empty["state"] == "idle" and empty["last_generation"] is None
    assert empty["pid"] > 0 and empty["last_poll"].endswith("Z")
    log = story["first_log"]
    assert "watch: poll 1: 0 new files (0 settled, 0 settling), backlog ~0 tokens" in log
    assert "watch: committed generation 1: 2 files" in log  # --min-new-tokens: the slow one too, once complete


def test_sigterm_between_generations_exits_0_at_once(story: dict) -> None:
    assert story["between"] == 0
    assert story["between_seconds"] < 5  # not after the sleep between polls, nor a generation
    assert story["between_status"]["state"] == "stopped"
    assert "stopped by SIGTERM between generations" in story["first_log"]


def test_sigterm_during_a_generation_commits_nothing_and_the_restart_redoes_it(story: dict) -> None:
    assert story["during"] == 128 + signal.SIGTERM, story["second_log"]
    after = story["after_stop"]
    assert after == {"consumed": {0, 1}, "lock": False, "staging": False, "status": after["status"]}
    assert after["status"]["state"] == "stopping"
    assert "nothing was committed" in story["second_log"]


def test_after_kill_9_a_restarted_watcher_takes_over_the_dead_lock(story: dict) -> None:
    assert story["killed"] == -signal.SIGKILL
    assert story["after_kill"] == {"consumed": {0, 1, 2}, "lock": True}  # the dead watcher's lock is left behind
    once = story["once"]
    assert once.returncode == 0, once.stderr
    assert re.search(r"watch: committed generation \d+: 3 files", once.stderr)


def test_every_input_pair_lands_in_exactly_one_generation(story: dict, pairs: list) -> None:
    out = story["out"]
    share = len(pairs) // FILES
    made = generations(out)
    consumed = [Path(c.path).name for g in made for c in g.inputs]
    assert sorted(consumed) == [f"part-{i}.jsonl" for i in range(FILES)]  # each file once
    for generation in made:
        stats = json.loads((out / generation.directory / STATS_NAME).read_text())
        assert stats["records_read"] == share * len(generation.inputs)
        assert sum(stats["examples_by_split"].values()) == share * len(generation.inputs)
    assert main(["verify", str(out)]) == 0
    assert not (out / LOCK_NAME).exists() and not (out / STAGING_NAME).exists()
    final = status(out)
    assert final["state"] == "stopped" and final["last_generation"]["id"] == made[-1].id
    assert final["backlog"]["files"] == 0


def test_a_watcher_with_another_setting_than_its_dataset_stops_at_once(story: dict, tokenizer_dir: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(watch_args(story["root"], tokenizer_dir, "--once", "--max-length", "256")) == 2
    assert "--max-length is 256 here, but the dataset was built with 128" in capsys.readouterr().err


def test_ctrl_c_while_sleeping_between_polls_ends_the_watcher_at_once(tmp_path: Path, tokenizer_dir: Path) -> None:
    (tmp_path / "in").mkdir()
    watcher = Watcher(tmp_path, tokenizer_dir, "--interval", "3600")
    watcher.wait_for("a first poll", lambda: watcher.status().get("polls", 0) == 1)
    asked = time.monotonic()
    assert watcher.stop(signal.SIGINT) == 0
    assert time.monotonic() - asked < 5, "it slept on"
    assert "stopped by Ctrl-C (SIGINT) between generations" in watcher.output()
    assert status(tmp_path / "out")["state"] == "stopped"


def test_a_busy_output_is_tried_again_later(tmp_path: Path, tokenizer_dir: Path, pairs_file: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """Another live run holds the lock: this poll starts nothing and says so; the watcher keeps going."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(pairs_file.read_bytes())
    os.utime(tmp_path / "in" / "a.jsonl", (time.time() - 10, time.time() - 10))
    (tmp_path / "out").mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "other", "heartbeat": time.time()}
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps(holder))
    assert main(watch_args(tmp_path, tokenizer_dir, "--once")) == 0
    err = capsys.readouterr().err
    assert "watch: not started: another seqpack run" in err
    assert "is writing to" in status(tmp_path / "out")["last_error"]
    assert generations(tmp_path / "out") == []


@pytest.mark.parametrize(("error", "code"), [
    (RunFailedError("the disk is full"), 1),  # --once: cron learns that its generation failed
    (UsageError("no file matches 'in/*.jsonl'"), 1),  # the inputs moved meanwhile (an InputError's): try again
    (UsageError("the tokenizer does not load"), 2),  # the job cannot work: the watcher stops
])
def test_a_failed_generation_is_said_and_tried_again(tmp_path: Path, tokenizer_dir: Path, pairs_file: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                    error: Exception, code: int) -> None:
    def failing_run(*args: Any, **kwargs: Any) -> None:
        if "no file matches" in str(error):
            raise error from InputError(str(error))
        raise error

    monkeypatch.setattr("seqpack.pipeline.watch.run", failing_run)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(pairs_file.read_bytes())
    assert main(watch_args(tmp_path, tokenizer_dir, "--once", "--settle", "0")) == code
    err = capsys.readouterr().err
    assert str(error) in err
    if code == 1:
        assert str(error) in status(tmp_path / "out")["last_error"]


def test_watch_refuses_what_it_cannot_do(tmp_path: Path, tokenizer_dir: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert main(watch_args(tmp_path, tokenizer_dir, "--rebuild", "--once")) == 2
    assert "only appends" in capsys.readouterr().err
    assert main(watch_args(tmp_path, tokenizer_dir, "--no-wait", "--once")) == 2
    assert main(watch_args(tmp_path, tokenizer_dir, "--settle", "-1", "--once")) == 2
    assert "--settle must be 0 or more" in capsys.readouterr().err


def test_a_watched_bucket(object_store: Any, tokenizer_dir: Path, pairs: list, capsys: pytest.CaptureFixture) -> None:
    """Inputs, dataset and status in a bucket, listed and written through Beam's filesystems."""
    import fsspec

    options = {"token": "anon"} if object_store.scheme == "gs" else object_store.storage_options
    fs = fsspec.filesystem(object_store.scheme, skip_instance_cache=True, **options)
    for index in range(2):
        fs.pipe_file(f"{object_store.url}/in/part-{index}.jsonl",
                     "".join(json.dumps(pair) + "\n" for pair in pairs[index * 40 : (index + 1) * 40]).encode())
    args = ["watch", "-i", f"{object_store.url}/in/*.jsonl", "-o", f"{object_store.url}/out", "-t",
            str(tokenizer_dir), "--max-length", "128", "--bucket-tokens", "2048", IN_PROCESS, "--once",
            *object_store.beam_args]
    assert main([*args, "--settle", "3600"]) == 0  # just uploaded: not settled yet
    assert "watch: poll 1: 2 new files (0 settled, 2 settling)" in capsys.readouterr().err
    status_url = f"{object_store.url}/out/{WATCH_STATUS_NAME}"
    assert json.loads(fs.cat_file(status_url))["backlog"]["files"] == 2
    if object_store.scheme == "s3":
        return  # a run into moto's S3 takes half a minute (Beam makes a boto3 client per call); gs:// runs it
    assert main([*args, "--settle", "0"]) == 0
    assert "watch: committed generation 1: 2 files, 80 examples" in capsys.readouterr().err
    assert json.loads(fs.cat_file(status_url))["last_generation"]["id"] == 1
