"""Live progress: workers' counter files, the driver's lines, and a real run made slow on purpose."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, flat, write_jsonl

from seqpack.cli.main import main
from seqpack.inputs import InputFile, Record, iter_file_lists
from seqpack.pipeline.live_progress import (
    InputSize,
    LiveProgress,
    ProgressFormatter,
    Totals,
    clock_text,
    input_size,
    read_totals,
)
from seqpack.transforms.progress_counts import CHECK_EVERY, FIELDS, PROGRESS_DIR_ENV, ProgressCounter, progress_from_env
from seqpack.transforms.read import beam_open

PROGRESS_LINE = re.compile(r"^seqpack: \d+:\d\d ")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------ worker side


def test_counter_writes_cumulative_lines_at_most_once_per_period(tmp_path: Path) -> None:
    clock = FakeClock()
    counter = ProgressCounter(str(tmp_path), period=2.0, clock=clock)
    for _ in range(1024):
        counter.read_records(1)
    assert not Path(counter.path).exists(), "nothing before the period has passed"
    clock.now = 2.5
    for _ in range(CHECK_EVERY):  # the clock is read once per CHECK_EVERY records
        counter.read_records(1, rejected=1)
    counter.tokenized(10, 300)
    lines = Path(counter.path).read_text().splitlines()
    assert len(lines) == 1, "one line per period"
    assert json.loads(lines[0]) == {**dict.fromkeys(FIELDS, 0), "records_read": 1024 + CHECK_EVERY,
                                    "records_rejected": CHECK_EVERY}
    counter.flush()
    assert json.loads(Path(counter.path).read_text().splitlines()[-1])["tokens"] == 300


def test_counter_stops_quietly_when_the_directory_is_gone(tmp_path: Path) -> None:
    counter = ProgressCounter(str(tmp_path / "gone"), period=0.0)
    counter.flush()
    assert not counter.enabled


def test_no_counter_unless_the_driver_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_DIR_ENV, raising=False)
    assert progress_from_env() is None
    monkeypatch.setenv(PROGRESS_DIR_ENV, str(tmp_path / "missing"))
    assert progress_from_env() is None
    monkeypatch.setenv(PROGRESS_DIR_ENV, str(tmp_path))
    assert isinstance(progress_from_env(), ProgressCounter)


def _input_files(root: Path) -> dict[str, tuple[Path, str]]:
    rows = [{"source": f"s{i} é", "target": f"t{i}"} for i in range(3000)]
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (root / "a.jsonl").write_bytes(jsonl)
    (root / "b.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (root / "c.csv").write_text("source,target\n" + "".join(f"s{i},t{i}\n" for i in range(3000)))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, root / "d.parquet", row_group_size=500)
    with pa.ipc.new_file(str(root / "e.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=700)
    stream = io.BytesIO()
    with pa.ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table, max_chunksize=700)
    (root / "f.arrow").write_bytes(stream.getvalue())
    return {name: (root / name, fmt) for name, fmt in
            [("a.jsonl", "jsonl"), ("b.jsonl.gz", "jsonl"), ("c.csv", "csv"), ("d.parquet", "parquet"),
             ("e.arrow", "arrow"), ("f.arrow", "arrow")]}


def test_counting_open_reads_every_format_exactly_like_beam_open(tmp_path: Path) -> None:
    for name, (path, fmt) in _input_files(tmp_path).items():
        counter = ProgressCounter(str(tmp_path), period=60.0)
        expected = flat(iter_file_lists(str(path), beam_open, fmt))
        counted = flat(iter_file_lists(str(path), counter.counting_open, fmt))
        assert counted == expected, name
        assert all(isinstance(item, Record) for item in counted), name
        size = path.stat().st_size
        # every byte of a streamed file, the compressed bytes of a compressed one; columnar readers re-read a little
        # (an Arrow magic number; up to 64 KiB around a Parquet footer)
        slack = 64 << 10 if fmt in ("parquet", "arrow") else 0
        assert 0.5 * size <= counter.bytes_read <= size + slack, (name, counter.bytes_read, size)


# ------------------------------------------------------------------------------------------ driver side


def test_read_totals_sums_the_last_complete_line_of_each_worker(tmp_path: Path) -> None:
    (tmp_path / "1-a.jsonl").write_text('{"records_read": 5}\n{"records_read": 10, "bytes_read": 100}\n')
    (tmp_path / "2-b.jsonl").write_text('{"records_read": 7, "tokens": 40}\n{"records_read": 9')  # being written
    (tmp_path / "ignored.txt").write_text('{"records_read": 1000}\n')
    assert read_totals(str(tmp_path)) == Totals(records_read=17, bytes_read=100, tokens=40)
    assert read_totals(str(tmp_path / "absent")) == Totals()


def test_lines_follow_the_phases_with_percent_rate_and_time_left() -> None:
    formatter = ProgressFormatter(InputSize(files=2, bytes=1_000_000))
    assert formatter.line(Totals(), 3) == "seqpack: 0:03 starting workers"
    formatter.line(Totals(records_read=1000, bytes_read=100_000), 10)
    line = formatter.line(Totals(records_read=3000, bytes_read=300_000, files_read=1), 20)
    assert line == ("seqpack: 0:20 reading 30% of 1.0 MB (1 of 2 files) · 3,000 records (200/s) · ~0:35 left")
    line = formatter.line(Totals(records_read=10_000, records_rejected=2, bytes_read=1_000_000, files_read=2), 30)
    assert line == "seqpack: 0:30 read 10,000 records (1.0 MB) · spreading them over the workers"
    done = Totals(records_read=10_000, records_rejected=2, bytes_read=1_000_000, files_read=2)
    formatter.line(Totals(**{**done.__dict__, "records_tokenized": 1000, "tokens": 20_000}), 40)
    line = formatter.line(Totals(**{**done.__dict__, "records_tokenized": 4998, "tokens": 100_000}), 50)
    assert line == ("seqpack: 0:50 tokenizing 50% · 4,998 of 9,998 records (399/s) · 100,000 tokens (8,000/s) "
                    "· ~0:12 left")
    line = formatter.line(Totals(**{**done.__dict__, "records_tokenized": 9998, "tokens": 200_000}), 60)
    assert line == "seqpack: 1:00 tokenized 9,998 records (200,000 tokens) · packing and writing shards"
    assert clock_text(3723) == "1:02:03"


def test_a_file_read_in_byte_ranges_is_read_until_every_range_is() -> None:
    """Ranges of one file finish in any order: reading is done when all are, and the line counts parts."""
    formatter = ProgressFormatter(InputSize(files=1, bytes=1_000_000, parts=4))
    line = formatter.line(Totals(records_read=900, bytes_read=250_000, files_read=1), 5)
    assert line == "seqpack: 0:05 reading 25% of 1.0 MB (1 of 4 parts) · 900 records"
    line = formatter.line(
        Totals(records_read=2000, bytes_read=500_000, files_read=2, records_tokenized=1500, tokens=30_000), 10
    )
    assert line == ("seqpack: 0:10 reading and tokenizing 50% of 1.0 MB · 2,000 records read · 1,500 tokenized · "
                    "30,000 tokens · ~0:10 left")
    line = formatter.line(
        Totals(records_read=4000, bytes_read=1_000_000, files_read=4, records_tokenized=3000, tokens=60_000), 15
    )
    assert line.startswith("seqpack: 0:15 tokenizing 75% · 3,000 of 4,000 records")


def test_input_size_from_the_listing(tmp_path: Path) -> None:
    files = [write_jsonl(tmp_path / f"{i}.jsonl", [{"source": "a", "target": "b"}] * (i + 1)) for i in range(3)]
    inputs = [InputFile(str(path), "jsonl", str(path)) for path in files]
    assert input_size(inputs) == InputSize(3, sum(p.stat().st_size for p in files), parts=len(inputs))
    assert input_size([InputFile(str(tmp_path / "gone.jsonl"), "jsonl", "gone")]).bytes is None


def test_live_progress_prints_sets_and_restores_the_directory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_DIR_ENV, raising=False)
    stream = io.StringIO()
    source = write_jsonl(tmp_path / "in.jsonl", [{"source": "a", "target": "b"}] * 5)
    with LiveProgress([InputFile(str(source), "jsonl", str(source))], interval=0.05, stream=stream) as live:
        directory = os.environ[PROGRESS_DIR_ENV]
        counter = progress_from_env()  # what a worker does in DoFn.setup
        assert counter is not None
        for _ in range(5):
            counter.read_records(1)
        counter.file_read()
        counter.tokenized(5, 50)
        counter.flush()
        for _ in range(100):
            if "tokenized 5 records" in stream.getvalue():
                break
            live._stop.wait(0.05)
    assert PROGRESS_DIR_ENV not in os.environ and not os.path.exists(directory)
    assert "tokenized 5 records (50 tokens)" in stream.getvalue()


# --------------------------------------------------------------------------------------------- real runs


def shard_hashes(dataset: Path) -> list[str]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return [shard["sha256"] for split in manifest["splits"].values() for shard in split["shards"]]


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    # Several batches, so that reading (fused with the slowed tokenizing) is seen going on.
    return write_jsonl(tmp_path_factory.mktemp("slow") / "pairs.jsonl", pairs * 4)


def test_a_slow_run_shows_progress_and_the_same_data(slow_input: Path, tokenizer_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in a subprocess with worker processes (the real path: they inherit the directory's name)."""
    env = {**os.environ, "SEQPACK_TEST_SLOW_TOKENIZE": "0.3", "SEQPACK_PROGRESS_INTERVAL": "0.5"}
    shown = tmp_path / "shown"
    result = subprocess.run(
        [sys.executable, "-m", "seqpack.cli", "run", "-i", str(slow_input), "-o", str(shown),
         "-t", str(tokenizer_dir), "--max-length", "128", "--direct_running_mode=multi_processing",
         "--direct_num_workers=1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if PROGRESS_LINE.match(line)]
    assert len(progress) >= 3, result.stderr
    assert any(re.search(r"tokeniz(ing \d+%|ed [\d,]+ records)", line) for line in progress), progress
    # Reading is fused with tokenizing when the input is read in byte ranges: either line shows the reading.
    assert any(re.search(r"read(ing( and tokenizing)? \d+% of| [\d,]+ records)", line) for line in progress), progress
    assert f"look at it: seqpack inspect {shown}" in result.stderr

    # --quiet silences it (the run lasts many intervals), and showing progress never changes the data.
    monkeypatch.setenv("SEQPACK_PROGRESS_INTERVAL", "0.1")
    quiet = tmp_path / "quiet"
    assert main(["run", "-q", "-i", str(slow_input), "-o", str(quiet), "-t", str(tokenizer_dir),
                 "--max-length", "128", "--direct_running_mode=in_memory"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if PROGRESS_LINE.match(line)]
    assert shard_hashes(quiet) == shard_hashes(shown)
    assert hashlib.sha256(dataset_file(quiet, "stats.json").read_bytes()).digest() == \
        hashlib.sha256(dataset_file(shown, "stats.json").read_bytes()).digest()
