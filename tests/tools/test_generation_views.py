"""A dataset grown by ``seqpack run --append``: ``inspect``, ``report``, ``stats`` and ``status`` show each generation
and the total, and ``status`` sorts the inputs into consumed, new, copied, changed and missing."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.schemas import STATS_NAME
from seqpack.schemas import stats as stats_format
from seqpack.tools.status import dataset_status

DAYS = 3
PER_DAY = 30
BAD_LINE = "{not json, in day 2"


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]) -> Path:
    """Three generations: a first run over ``in/*.jsonl``, then a new file and an ``--append`` each day; day 2
    has one line that is not JSON (a rejected record of generation 2)."""
    root = tmp_path_factory.mktemp("grown")
    (root / "in").mkdir()
    for day in range(DAYS):
        bad = [BAD_LINE] if day == 1 else []
        write_jsonl(root / "in" / f"day{day + 1}.jsonl", pairs[day * PER_DAY : (day + 1) * PER_DAY] + bad)
        extra = ["--validation-fraction", "0.2", *(["--append"] if day else [])]
        assert main(run_args(root / "in" / "*.jsonl", root / "ds", tokenizer_dir, *extra)) == 0
    return root


def manifest(grown: Path) -> dict:
    return json.loads((grown / "ds" / "manifest.json").read_text())


def test_the_fixture_has_one_generation_per_input_file(grown: Path) -> None:
    generations = manifest(grown)["generations"]
    assert [g["id"] for g in generations] == [1, 2, 3]
    assert [[Path(i["path"]).name for i in g["inputs"]] for g in generations] == [["day1.jsonl"], ["day2.jsonl"],
                                                                                    ["day3.jsonl"]]


# ------------------------------------------------------------------------------------------------- inspect


def inspect(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    code = main(["inspect", *args, "--plain"])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def train_rows(grown: Path) -> list[int]:
    return [g["splits"]["train"]["rows"] for g in manifest(grown)["generations"]]


def test_inspect_header_shows_each_generation_and_the_total(grown: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = inspect(capsys, str(grown / "ds"))
    assert code == 0
    found = re.search(r" · (\d+) blocks in 3 generations \(1: (\d+), 2: (\d+), 3: (\d+)\) · ", out[0])
    assert found, out[0]
    total, *parts = map(int, found.groups())
    assert parts == train_rows(grown) and total == sum(parts)


def test_inspect_one_generation_numbers_its_blocks_from_its_first(grown: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    first, second, _ = train_rows(grown)
    code, whole, _ = inspect(capsys, str(grown / "ds"), "--block", str(first), "--block", str(first + second - 1))
    assert code == 0
    code, only, _ = inspect(capsys, str(grown / "ds"), "--generation", "2", "--block", "0", "--block", "-1")
    assert code == 0
    assert f"generation 2 (v000002) of 3 · split train · {second} blocks of {sum(train_rows(grown))}" in only[0]
    summaries = [line for line in only if line.startswith("block ")]
    assert summaries[0].startswith("block 0 (train, generation 2): ")
    assert summaries[1].startswith(f"block {second - 1} (train, generation 2): ")
    examples = [line for line in only if line.lstrip().startswith("#")]
    assert examples and examples == [line for line in whole if line.lstrip().startswith("#")]


def test_inspect_a_generation_or_block_that_does_not_exist(grown: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = inspect(capsys, str(grown / "ds"), "--generation", "7")
    assert code == 2 and not out
    assert "no generation 7; it has 1, 2, 3" in err
    second = train_rows(grown)[1]
    code, _, err = inspect(capsys, str(grown / "ds"), "--generation", "2", "--block", str(second))
    assert code == 2
    assert f"generation 2 in split train has {second} blocks" in err


# --------------------------------------------------------------------------------------------- stats, report


def stats_of(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["stats", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_total_is_the_merge_of_each_generations_file(grown: Path, capsys: pytest.CaptureFixture) -> None:
    files = [json.loads((grown / "ds" / g["directory"] / STATS_NAME).read_text())
             for g in manifest(grown)["generations"]]
    total = stats_of(capsys, str(grown / "ds"))
    assert total == stats_format.finalize(stats_format.merge_stats(files))
    assert total["records_read"] == DAYS * PER_DAY + 1 == sum(f["records_read"] for f in files)
    assert total["rejected_by_reason"] == {"invalid_json": 1}
    written = [s["examples"] for g in manifest(grown)["generations"] for s in g["splits"].values()]
    assert sum(total["examples_by_split"].values()) == sum(written)
    assert total["fill"] == pytest.approx(total["tokens_written"] / total["block_tokens"])
    assert stats_of(capsys, str(grown / "ds"), "--generation", "2") == files[1]


def test_stats_of_a_generation_that_does_not_exist_is_a_usage_error(grown: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["stats", str(grown / "ds"), "--generation", "4"]) == 2
    assert "has no generation 4; it has 1, 2, 3" in capsys.readouterr().err


def test_report_shows_the_generations_and_the_total(grown: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    total = stats_of(capsys, str(grown / "ds"))
    assert main(["report", str(grown / "ds"), "-o", str(tmp_path / "r.html"), "--blocks", "0"]) == 0
    document = (tmp_path / "r.html").read_text(encoding="utf-8")
    table = document.split("<h3>Generations</h3>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", table)
    cells = [row.split("</td><td>") for row in rows]
    generations = manifest(grown)["generations"]
    assert [row[0] for row in cells] == ["1", "2", "3", "total (3)"]
    for row, generation in zip(cells, generations, strict=False):
        assert row[1] == generation["committed_at"] and row[2] == "1 file"
        assert row[3] == f"{sum(split['examples'] for split in generation['splits'].values()):,}"
    assert [row[6] for row in cells] == ["0", "1", "0", "1"]  # rejected
    assert cells[-1][2] == "3 files" and cells[-1][5] == f"{total['fill']:.2%}"
    summary = document.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    assert f"<td>records read</td><td>{total['records_read']:,}</td>" in summary
    rejected = document.split('<section id="rejected">', 1)[1].split("</section>", 1)[0]
    assert "v000002/rejected/rejected.jsonl" in rejected and "{not json, in day 2" in rejected


# ---------------------------------------------------------------------------------------------------- status


def status(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict[str, str], str]:
    """Exit code, ``{input file name: its state line}``, and the whole output."""
    code = main(["status", *args])
    out = capsys.readouterr().out
    states = {}
    for line in out.splitlines():
        found = re.match(r"  (consumed|new|copy|changed|missing|unlisted) +(\S+)", line)
        if found:
            states[Path(found.group(2)).name] = line.split()[0]
    return code, states, out


def test_status_lists_the_generations_and_the_total(grown: Path, capsys: pytest.CaptureFixture) -> None:
    code, states, out = status(capsys, str(grown / "ds"))
    assert code == 0
    assert states == {"day1.jsonl": "consumed", "day2.jsonl": "consumed", "day3.jsonl": "consumed"}
    generations = manifest(grown)["generations"]
    for generation in generations:
        line = next(line for line in out.splitlines() if line.startswith(f"  generation {generation['id']} "))
        examples = sum(split["examples"] for split in generation["splits"].values())
        assert generation["directory"] in line and generation["committed_at"] in line
        assert re.search(rf"\b1 file consumed +{examples:,} examples", line), line
    total = next(line for line in out.splitlines() if line.startswith("  total "))
    assert "3 generations" in total and "3 files consumed" in total
    examples = sum(s["examples"] for g in generations for s in g["splits"].values())
    assert f"{examples:,} examples" in total


def test_status_of_inputs_that_match_nothing_or_were_not_recorded(grown: Path, capsys: pytest.CaptureFixture) -> None:
    code, states, out = status(capsys, str(grown / "ds"), "--input", str(grown / "nowhere" / "*.jsonl"))
    assert code == 0 and "no file matches" in out
    assert set(states.values()) == {"unlisted"}
    old = dataset_status(str(grown / "ds"))
    old.manifest = replace(old.manifest, format_version=1)  # as a dataset written before inputs were recorded
    assert "inputs: not recorded (format version 1)" in old.lines()[-1]


def test_status_sorts_new_copied_changed_and_missing_inputs(grown: Path, pairs: list[dict[str, str]],
                                                             capsys: pytest.CaptureFixture) -> None:
    """Changes the fixture's inputs (not its dataset): keep it the last test that reads them."""
    inputs = grown / "in"
    write_jsonl(inputs / "day4.jsonl", pairs[DAYS * PER_DAY : DAYS * PER_DAY + 5])
    shutil.copy(inputs / "day2.jsonl", inputs / "again.jsonl")
    code, states, out = status(capsys, str(grown / "ds"))
    assert code == 0, out
    assert states == {"day1.jsonl": "consumed", "day2.jsonl": "consumed", "day3.jsonl": "consumed",
                      "day4.jsonl": "new", "again.jsonl": "copy"}
    assert "1 new: the next `seqpack run --append` reads them" in out

    day1 = inputs / "day1.jsonl"
    before = day1.stat()
    edited = day1.read_bytes().replace(b"The", b"Thy", 1)  # same size
    day1.write_bytes(edited)
    os.utime(day1, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same time: only a hash sees it
    assert status(capsys, str(grown / "ds"))[1]["day1.jsonl"] == "consumed"
    code, states, out = status(capsys, str(grown / "ds"), "--rehash")
    assert code == 1 and states["day1.jsonl"] == "changed", out

    os.utime(day1)  # a new time: now the quick check sees it too
    (inputs / "day3.jsonl").unlink()
    code, states, out = status(capsys, str(grown / "ds"))
    assert code == 1, out
    assert states == {"day1.jsonl": "changed", "day2.jsonl": "consumed", "day3.jsonl": "missing",
                      "day4.jsonl": "new", "again.jsonl": "copy"}
    assert "1 changed after a generation consumed them" in out and "--rebuild" in out
    code, states, _ = status(capsys, str(grown / "ds"), "--input", str(inputs / "day4.jsonl"))
    assert code == 0 and states == {"day4.jsonl": "new", "day1.jsonl": "unlisted", "day2.jsonl": "unlisted",
                                    "day3.jsonl": "missing"}
