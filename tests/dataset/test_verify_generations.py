"""``seqpack verify`` of a dataset grown by ``--append``: every generation checked, each shown with the total; a bad
shard named under its generation's directory; a one-generation dataset still gets its one OK line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.dataset import verify_dataset
from seqpack.schemas import DatasetFormatError


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path,
             pairs: list[dict[str, str]]) -> tuple[Path, Path]:
    """(a copy of the dataset after its first run, the dataset after one ``--append``)."""
    root = tmp_path_factory.mktemp("verify-generations")
    (root / "in").mkdir()
    write_jsonl(root / "in" / "a.jsonl", pairs[:40])
    assert main(run_args(root / "in" / "*.jsonl", root / "ds", tokenizer_dir, "--validation-fraction", "0.2")) == 0
    shutil.copytree(root / "ds", root / "one")
    write_jsonl(root / "in" / "b.jsonl", pairs[40:90])
    assert main(run_args(root / "in" / "*.jsonl", root / "ds", tokenizer_dir, "--validation-fraction", "0.2",
                         "--append")) == 0
    return root / "one", root / "ds"


def generations(dataset: Path) -> list[dict]:
    return json.loads((dataset / "manifest.json").read_text())["generations"]


def test_verify_reports_each_generation_and_the_total(datasets: tuple[Path, Path]) -> None:
    grown = datasets[1]
    summary = verify_dataset(str(grown))
    listed = generations(grown)
    assert [(g.id, g.directory) for g in summary.generations] == [(1, "v000001"), (2, "v000002")]
    for checked, generation in zip(summary.generations, listed, strict=True):
        shards = [s for split in generation["splits"].values() for s in split["shards"]]
        assert checked.shards == len(shards) and checked.bytes == sum(s["bytes"] for s in shards)
        assert (checked.rows, checked.examples, checked.tokens) == tuple(
            sum(split[name] for split in generation["splits"].values()) for name in ("rows", "examples", "tokens"))
    for total in ("shards", "bytes", "rows", "examples", "tokens"):
        assert getattr(summary, total) == sum(getattr(g, total) for g in summary.generations)
    assert summary.examples == 90


def test_the_command_prints_a_line_per_generation_and_the_total(datasets: tuple[Path, Path],
                                                                capsys: pytest.CaptureFixture) -> None:
    grown = datasets[1]
    assert main(["verify", str(grown)]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = verify_dataset(str(grown))
    assert lines[0] == f"{grown}: OK ({summary})"
    assert [line.split()[:3] for line in lines[1:3]] == [["generation", "1", "v000001"], ["generation", "2", "v000002"]]
    for line, generation in zip(lines[1:3], summary.generations, strict=True):
        assert f"{generation.examples:,} examples" in line and f"{generation.tokens:,} tokens" in line
        assert line.endswith("OK")
    assert lines[3].startswith("  total: 2 generations") and f"{summary.examples:,} examples" in lines[3]
    assert len(lines) == 4


def test_a_dataset_of_one_generation_keeps_its_one_line(datasets: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture) -> None:
    one = datasets[0]
    assert main(["verify", str(one)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{one}: OK ({verify_dataset(str(one))})"]


def test_a_bad_shard_of_an_older_generation_is_named(datasets: tuple[Path, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(datasets[1], broken)
    shard = generations(broken)[0]["splits"]["train"]["shards"][0]["path"]
    data = bytearray((broken / shard).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / shard).write_bytes(bytes(data))
    with pytest.raises(DatasetFormatError, match=rf"1 of \d+ shards .*\n  .*{shard}: sha256"):
        verify_dataset(str(broken))
