"""``seqpack report`` and ``run --report``: one valid, self-contained HTML5 file with every section and plot."""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import html5lib
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, write_jsonl

from seqpack.pipeline.cli import main

SECTIONS = ("summary", "lengths", "blocks", "rejected", "samples")
PLOTS = 6  # source, target, example lengths (stats.json); exact example lengths; block fill; examples per block
BAD_LINES = ['{"source": "no target"}', "{not json", '{"source": "a", "target": ""}']


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]) -> Path:
    """Made with ``run --report``: rejected records, an overlong pair that is dropped, a validation split."""
    root = tmp_path_factory.mktemp("report")
    long_pair = {"source": " ".join(p["source"] for p in pairs[:20]), "target": "Trop long."}
    lines = [json.dumps(p) for p in pairs[:150]] + BAD_LINES + [json.dumps(long_pair)]
    source = write_jsonl(root / "pairs.jsonl", lines)
    out = root / "ds"
    code = main(["run", "-q", "--report", "-i", str(source), "-o", str(out), "-t", str(tokenizer_dir),
                 "--max-length", "64", "--overlong", "drop", "--validation-fraction", "0.1",
                 "--bucket-tokens", "1024", "--direct_running_mode=in_memory"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def report(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(dataset), "-o", str(path), "--blocks", "2"]) == 0
    return path.read_text(encoding="utf-8")


class _Collect(HTMLParser):
    """Every start tag with its attributes, and the text of each section."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.section: str | None = None
        self.text: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.section = dict(attrs).get("id")
            self.text[self.section or ""] = ""

    def handle_data(self, data: str) -> None:
        if self.section:
            self.text[self.section] += data


def parse(document: str) -> _Collect:
    html5lib.HTMLParser(strict=True).parse(document)  # raises on any HTML5 parse error
    collected = _Collect()
    collected.feed(document)
    return collected


def test_report_is_valid_html5_with_every_section(report: str) -> None:
    assert report.startswith("<!DOCTYPE html>")
    page = parse(report)
    ids = [attrs.get("id") for tag, attrs in page.tags if tag == "section"]
    assert ids == list(SECTIONS)
    assert all(page.text[name].strip() for name in SECTIONS)


def test_one_inline_png_per_plot(report: str) -> None:
    images = [attrs for tag, attrs in parse(report).tags if tag == "img"]
    assert len(images) == PLOTS
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
        assert attrs.get("alt")


def test_nothing_is_fetched_from_anywhere(report: str) -> None:
    assert "http://" not in report and "https://" not in report
    page = parse(report)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for _, attrs in page.tags:
        for name in ("src", "href", "srcset", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (name, value)
    assert "url(" not in report  # no CSS that loads anything


def test_summary_and_rejected_sections_hold_the_numbers(dataset: Path, report: str) -> None:
    stats = json.loads(dataset_file(dataset, "stats.json").read_text())
    page = parse(report)
    summary = page.text["summary"]
    assert f"{stats['records_read']:,}" in summary and f"{stats['fill']:.2%}" in summary
    assert "overlong 1" in summary
    rejected = page.text["rejected"]
    for reason in ("missing_field", "invalid_json", "empty_target"):
        assert reason in rejected and stats["rejected_by_reason"][reason] == 1
    assert "{not json" in rejected  # a raw example
    assert "overlong" in rejected  # the dropped table


def test_decoded_blocks_have_one_item_per_example(dataset: Path, report: str) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    rows = [row for shard in manifest["splits"]["train"]["shards"]
            for row in pq.read_table(dataset / shard["path"], columns=["seq_lens"]).to_pylist()]
    page = parse(report)
    blocks = [attrs for tag, attrs in page.tags if tag == "div" and attrs.get("class") == "block"]
    assert len(blocks) == 2
    items = report.split('id="samples"')[1].count("<li>")
    assert items == len(rows[0]["seq_lens"]) + len(rows[-1]["seq_lens"])
    assert '<span class="m">&lt;s&gt;' in report and "&lt;/s&gt;</span>" in report


def test_run_report_writes_the_report_into_the_dataset(dataset: Path) -> None:
    written = (dataset / "report.html").read_text(encoding="utf-8")
    assert len([tag for tag, _ in parse(written).tags if tag == "img"]) == PLOTS


def test_without_matplotlib_the_error_names_the_extra(dataset: Path, tmp_path: Path, tokenizer_dir: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert main(["report", str(dataset), "-o", str(tmp_path / "r.html")]) == 2
    assert "pip install 'seqpack[report]'" in capsys.readouterr().err
    assert main(["run", "--report", "-i", str(dataset_file(dataset, "stats.json")), "-o", str(tmp_path / "never"),
                 "-t", str(tokenizer_dir)]) == 2
    assert "pip install 'seqpack[report]'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists() and not (tmp_path / "r.html").exists()


def test_a_bad_dataset_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "half").mkdir()
    assert main(["report", str(tmp_path / "half"), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert "has no manifest.json" in err and len(err.strip().splitlines()) == 1
