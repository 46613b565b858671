"""``seqpack report`` and ``run --report``: one valid, self-contained HTML5 file with every section and plot."""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import html5lib
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, write_jsonl
from shardgen import write_dataset

import seqpack
from seqpack.cli.main import main
from seqpack.schemas import REASONS, STATS_NAME
from seqpack.schemas import stats as stats_format
from seqpack.tools.report import plots

SECTIONS = ("summary", "audit", "lengths", "blocks", "rejected", "samples")
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


# ------------------------------------------------------------------------------- plot layout, empty datasets


def _ticks(axes: Any) -> dict[str, float]:
    return {label.get_text(): tick for tick, label in zip(axes.get_xticks(), axes.get_xticklabels(), strict=True)}


@pytest.mark.parametrize(("max_length", "below", "power"), [(256, "256", 256), (100, "64", 64), (4096, "4k", 4096)])
def test_max_length_line_falls_where_max_length_is_on_the_labelled_axis(max_length: int, below: str,
                                                                         power: int) -> None:
    hist = [0] * 32
    hist[6], hist[8], hist[10] = 3, 5, 1  # lengths in [32, 64), [128, 256), [512, 1024)
    axes = plots.pow2_histogram_figure(hist, title="t", max_length=max_length).axes[0]
    ticks = _ticks(axes)
    line = axes.lines[0].get_xdata()[0]
    # Ticks are lengths at the bar edges, a doubling apart: max_length sits log2(max_length / power) past its tick.
    assert line == pytest.approx(ticks[below] + math.log2(max_length / power))
    bars = [patch for patch in axes.patches if patch.get_height()]
    for patch, (low, high) in zip(bars, [("32", "64"), ("128", "256"), ("512", "1k")], strict=True):
        assert (patch.get_x(), patch.get_x() + patch.get_width()) == pytest.approx((ticks[low], ticks[high]))
    assert "log scale" in axes.get_xlabel()


def test_one_block_gets_integer_ticks_and_a_sensible_range() -> None:
    axes = plots.counts_figure(np.array([2]), title="examples per block", xlabel="examples").axes[0]
    assert axes.get_xlim() == (1, 3)
    assert all(float(tick).is_integer() for tick in axes.get_xticks())
    assert 2 in axes.get_xticks()


@pytest.mark.parametrize("draw", [
    lambda: plots.pow2_histogram_figure([0] * 32, title="t", max_length=64),
    lambda: plots.counts_figure(np.zeros(0, dtype=np.int64), title="t", xlabel="x"),
    lambda: plots.histogram_figure(np.zeros(0), title="t", xlabel="x", ylabel="y", bins=4, value_range=(0, 1)),
])
def test_an_empty_plot_says_no_data_and_shows_no_made_up_axes(draw: Any) -> None:
    axes = draw().axes[0]
    assert [text.get_text() for text in axes.texts] == ["no data"]
    assert not len(axes.get_xticks()) and not len(axes.get_yticks()) and not axes.patches


@pytest.fixture(scope="module")
def empty_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed dataset in which every record was rejected: nothing was written. (``run`` now refuses to commit
    one, but older datasets and other writers can still hand the report such a directory.)"""
    out = tmp_path_factory.mktemp("empty") / "ds"
    out.mkdir()
    manifest = write_dataset(str(out), {"train": []}, revision=1)
    stats_file = out / manifest.path_of(STATS_NAME)
    stats_file.parent.mkdir(parents=True, exist_ok=True)
    stats = {**stats_format.empty_stats(), "records_read": 3, "records_rejected": 3,
             "rejected_by_reason": {"missing_field": 1, "invalid_json": 1, "empty_target": 1}}
    stats_file.write_text(stats_format.to_json(stats_format.finalize(stats)), encoding="utf-8")
    return out


def test_a_dataset_with_nothing_written_gets_a_banner_and_no_empty_plots(
    empty_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "r.html"
    assert main(["report", str(empty_dataset), "-o", str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    document = path.read_text(encoding="utf-8")
    page = parse(document)
    banner = document.split("<h1>", 1)[1].split('<section id="summary">', 1)[0]
    assert 'class="banner"' in banner and "Nothing was written" in banner
    assert "3 records read, 3 were rejected" in banner
    assert not [tag for tag, _ in page.tags if tag == "img"]
    assert "Not plotted" in page.text["lengths"] and "Not plotted" in page.text["blocks"]
    assert "No block was written" in page.text["blocks"]


def test_a_dataset_with_examples_has_no_banner(report: str) -> None:
    assert 'class="banner"' not in report


# --------------------------------------------------------------------------------------- the reason catalogue

_CODE = r'"([a-z0-9_]+)"'
_EMITTED = re.compile(
    rf"(?:Rejected|RenderError|_Failure)\(\s*{_CODE}|^REASON = {_CODE}|return {_CODE}, \(", re.MULTILINE
)


def emitted_reasons() -> set[str]:
    """Every reason code spelled out where a rejection is made, in any module of the package."""
    found = set()
    for path in Path(seqpack.__file__).parent.rglob("*.py"):
        for match in _EMITTED.finditer(path.read_text(encoding="utf-8")):
            found.add(next(group for group in match.groups() if group))
    return found


def test_every_reason_code_the_code_can_emit_has_a_description() -> None:
    emitted = emitted_reasons()
    assert {"invalid_json", "record_too_large", "missing_field", "bad_message", "chat_template_error",
            "template_not_prefix_stable", "assistant_turn_first"} <= emitted  # the search itself works
    assert sorted(emitted - REASONS.keys()) == []
    assert sorted(REASONS.keys() - emitted) == []  # and the catalogue holds no code that nothing emits
    assert all(text.strip() for text in REASONS.values())


def test_the_mixture_section_shows_each_source_and_its_shares_asked_and_achieved() -> None:
    from seqpack.tools.report.mixture import mixture_section

    assert mixture_section({"sources": {}}) == "" and mixture_section({}) == ""
    counts = {"records_read": 1200, "records_rejected": 3, "examples_dropped": 400, "examples_repeated": 0,
              "examples_written": 797, "tokens_written": 51234, "trained_tokens": 40000}
    stats = {
        # stats.json sorts source names; the table follows the sources' ids, as the shares list them
        "sources": {"chat": {**counts, "examples_dropped": 0, "examples_repeated": 250}, "code": counts},
        "mixture": {"weight_by": "tokens", "shares": [
            {"split": "train", "name": "code", "asked": 0.3, "achieved": 0.3004, "target": 3.0, "written": 3},
            {"split": "train", "name": "chat", "asked": 0.7, "achieved": 0.6996, "target": 7.0, "written": 7},
            {"split": "validation", "name": "code", "asked": 0.3, "achieved": 0.25, "target": 1.0, "written": 1},
        ]},
    }
    html = mixture_section(stats)
    assert html.startswith('<section id="mixture">') and "shares of tokens" in html
    rows = re.findall(r"<tr><td>(.*?)</tr>", html)
    assert [row.split("</td>")[0] for row in rows] == ["code", "chat"]
    assert "<td>1,200</td><td>3</td><td>400</td><td>0</td><td>797</td><td>51,234</td><td>40,000</td>" in rows[0]
    assert "<td>30.00%</td><td>30.04%</td>" in rows[0] and "<td>250</td>" in rows[1]
    assert html.count("<img ") == 2, "one chart per split with shares: train and validation"
    assert "asked" not in mixture_section({"sources": {"code": counts}}).split("<table>")[1].split("</thead>")[0]
