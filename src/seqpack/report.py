"""``seqpack report``: one self-contained HTML file that shows a dataset at a glance.

It holds the run's numbers (records, rejections and drops by reason, tokens, blocks, fill), histograms of source,
target and example lengths with ``max_length`` marked, the distribution of block fill and of examples per block,
the rejected records by reason with a few raw examples, and a handful of decoded blocks coloured as
``seqpack inspect`` colours them. Plots are PNGs drawn by matplotlib (Agg, no display) and inlined as base64, and
there is no script, stylesheet or font to fetch, so the file can be mailed, attached to a CI run or opened offline.

    html = build_report("out/")                # a str; write_report("out/", "report.html") saves it

Needs matplotlib: ``pip install 'seqpack[report]'``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import seqpack
from seqpack.dataset import Location, ShardSet, open_manifest
from seqpack.schemas import REASONS, REJECTED_FILE, STATS_NAME, DatasetFormatError, Manifest, RejectedLine
from seqpack.schemas import stats as stats_format
from seqpack.tools.blocks import BlockView, InspectError, decoded_blocks, escape_text, load_dataset_tokenizer

EXAMPLES_PER_REASON = 3
RAW_CHARS = 400
"""How much of a rejected record's raw text the report shows."""
REJECTED_SCAN_BYTES = 64 << 20
"""Read at most this much of rejected.jsonl looking for examples: a huge file must not make the report slow."""
MAX_UNITS = 2000
"""Row groups whose ``seq_lens`` are read for the block plots; a larger dataset is sampled evenly."""
PLOT_COLOR, MARK_COLOR = "#4c72b0", "#c44e52"
_NONCHARACTERS = re.compile("[\ufdd0-\ufdef\ufffe\uffff]")


class MissingDependencyError(RuntimeError):
    """An optional dependency of the report is not installed; the message names the extra to install."""


def require_matplotlib() -> None:
    """Fail early, before a long run, when ``--report`` cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            "the HTML report draws its plots with matplotlib, which is not installed: pip install 'seqpack[report]'"
        ) from error


# -------------------------------------------------------------------------------------------------- plots


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    """A figure on the Agg canvas, made without pyplot: no GUI backend, no global state, safe in threads."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=11)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.spines[["top", "right"]].set_visible(False)
    axes.yaxis.get_major_locator().set_params(integer=True)
    return figure, axes


def _png(figure: Any) -> bytes:
    """PNG bytes with no software tag: the same data always gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _no_data(axes: Any) -> None:
    """Say so, and drop the ticks: autoscaled limits of an empty plot (-0.04 to 0.04) would read as data."""
    axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, color="#777777")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xticks([])
    axes.set_yticks([])


def _short(value: int) -> str:
    for unit, size in (("M", 1 << 20), ("k", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


@dataclass(frozen=True)
class Pow2Axis:
    """Where things go on a power-of-two length histogram: bin b is the bar centred at x = b, spanning
    [b - 0.5, b + 0.5), so a length v >= 1 sits at x = log2(v) + 0.5 and the edge left of bin b is 2**(b-1)."""

    bins: np.ndarray
    """The bins drawn, one bar each: every bin from the first used one to the last, and ``max_length``'s."""
    edges: np.ndarray
    """x of every bar edge, where the ticks go."""
    edge_labels: list[str]
    """The length at each edge: the ticks read as lengths, not as bin numbers."""
    mark: float
    """x of ``max_length``."""


def length_x(length: int) -> float:
    """x of a length on a ``Pow2Axis`` (length 0 is bin 0's centre)."""
    return float(np.log2(length)) + 0.5 if length >= 1 else 0.0


def pow2_axis(hist: Sequence[int], max_length: int) -> Pow2Axis:
    """The layout of a ``stats.json`` length histogram (bin b counts lengths in [2**(b-1), 2**b); bin 0 is 0)."""
    counts = np.asarray(hist, dtype=np.int64)
    limit_bin = int(max_length).bit_length()
    used = np.flatnonzero(counts)
    low = min(int(used[0]) if len(used) else limit_bin, limit_bin)
    high = max(int(used[-1]) if len(used) else limit_bin, limit_bin)
    bins = np.arange(low, high + 1)
    edges = np.arange(low, high + 2) - 0.5
    labels = [_short(0 if b == 0 else 1 << (b - 1)) for b in range(low, high + 2)]
    return Pow2Axis(bins, edges, labels, length_x(max_length))


def pow2_histogram_figure(hist: Sequence[int], *, title: str, max_length: int) -> Any:
    """A ``stats.json`` length histogram with ``max_length`` marked where it falls among the bar edges."""
    figure, axes = _figure(title, "length in tokens (log scale: each bar covers [n, 2n))", "examples")
    counts = np.asarray(hist, dtype=np.int64)
    if not counts.any():
        _no_data(axes)
        return figure
    layout = pow2_axis(counts, max_length)
    padded = np.concatenate([counts, np.zeros(max(0, int(layout.bins[-1]) + 1 - len(counts)), dtype=np.int64)])
    axes.bar(layout.bins, padded[layout.bins], width=1.0, color=PLOT_COLOR, edgecolor="white", linewidth=0.8)
    axes.set_xticks(layout.edges, layout.edge_labels, rotation=45 if len(layout.edges) > 12 else 0)
    axes.set_xlim(layout.edges[0], layout.edges[-1])
    axes.axvline(layout.mark, color=MARK_COLOR, linestyle="--", label=f"max_length {max_length:,}")
    axes.legend(frameon=False)
    return figure


def histogram_figure(
    values: np.ndarray, *, title: str, xlabel: str, ylabel: str, bins: int, value_range: tuple[float, float],
    mark: float | None = None, mark_label: str = "",
) -> Any:
    figure, axes = _figure(title, xlabel, ylabel)
    if not len(values):
        _no_data(axes)
        return figure
    axes.hist(values, bins=bins, range=value_range, color=PLOT_COLOR)
    if mark is not None:
        axes.axvline(mark, color=MARK_COLOR, linestyle="--", label=mark_label)
        axes.legend(frameon=False)
    return figure


MAX_COUNT_TICKS = 20
"""Up to this many distinct counts, every integer between the least and the greatest gets a tick."""


def count_limits(values: np.ndarray) -> tuple[float, float]:
    """x limits for a bar per integer: one empty step either side, so a single bar at 2 spans 1 to 3, not the
    1.6 to 2.4 that autoscaling gives."""
    return float(np.min(values)) - 1, float(np.max(values)) + 1


def counts_figure(values: np.ndarray, *, title: str, xlabel: str) -> Any:
    """A bar per integer value: right for small counts such as examples per block."""
    figure, axes = _figure(title, xlabel, "blocks")
    if not len(values):
        _no_data(axes)
        return figure
    counts = np.bincount(values)
    present = np.flatnonzero(counts)
    axes.bar(present, counts[present], width=0.8, color=PLOT_COLOR)
    low, high = count_limits(values)
    axes.set_xlim(low, high)
    if high - low <= MAX_COUNT_TICKS:
        axes.set_xticks(np.arange(low + 1, high))
    else:
        axes.xaxis.get_major_locator().set_params(integer=True)
    return figure


# ------------------------------------------------------------------------------------------ reading the data


@dataclass(frozen=True)
class BlockStats:
    """Per-block figures from the shards' ``seq_lens`` (a small column: a few ints per block)."""

    segment_lengths: np.ndarray
    examples_per_block: np.ndarray
    fill: np.ndarray
    units_read: int
    units_total: int


def _evenly(total: int, count: int) -> list[int]:
    if total <= count:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]


def _read_seq_lens(location: Location, file_format: str, path: str, units: Iterable[int]) -> Iterator[pa.Array]:
    """The ``seq_lens`` column of some row groups (record batches) of one shard, nothing else decoded."""
    with location.fs.open(location.path(path), "rb") as handle:
        if file_format == "parquet":
            reader = pq.ParquetFile(handle)
            for unit in units:
                yield reader.read_row_group(unit, columns=["seq_lens"]).column("seq_lens").combine_chunks()
        else:
            reader = pa.ipc.open_file(handle)
            for unit in units:
                yield reader.get_batch(unit).column("seq_lens")


def block_stats(url: str, manifest: Manifest, *, max_units: int = MAX_UNITS) -> BlockStats:
    """Segment lengths, examples per block and fill over every split, sampling row groups evenly past
    ``max_units`` so a terabyte dataset reports in seconds."""
    location = Location.of(url)
    chosen: list[tuple[str, int]] = []
    for split in sorted(manifest.splits):
        shards = ShardSet.open(url, split=split)
        units = zip(shards.unit_shard.tolist(), shards.unit_index.tolist(), strict=True)
        chosen += [(shards.shards[shard].path, index) for shard, index in units]
        shards.close()
    picked = [chosen[i] for i in _evenly(len(chosen), max_units)]
    by_path: dict[str, list[int]] = {}
    for path, unit in picked:
        by_path.setdefault(path, []).append(unit)
    arrays = [
        column
        for path, units in by_path.items()
        for column in _read_seq_lens(location, manifest.file_format, path, units)
    ]
    if not arrays:
        empty = np.zeros(0, dtype=np.int64)
        return BlockStats(empty, empty, np.zeros(0), 0, len(chosen))
    lists = pa.concat_arrays(arrays)
    lengths = lists.flatten().to_numpy().astype(np.int64)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(lengths)])
    real = cumulative[offsets[1:]] - cumulative[offsets[:-1]]
    block_length = real if manifest.packing == "none" else np.full_like(real, manifest.max_length)
    fill = np.divide(real, block_length, out=np.zeros(len(real)), where=block_length > 0)
    return BlockStats(lengths, np.diff(offsets), fill, len(picked), len(chosen))


@dataclass
class RejectedSamples:
    """A few raw rejected records per reason, read from the start of ``rejected.jsonl``."""

    by_reason: dict[str, list[RejectedLine]] = field(default_factory=dict)
    truncated_scan: bool = False
    path: str = REJECTED_FILE
    """The file, relative to the dataset directory."""


def rejected_samples(
    url: str, manifest: Manifest, reasons: Iterable[str], *, per_reason: int = EXAMPLES_PER_REASON
) -> RejectedSamples:
    location = Location.of(url)
    path = location.path(manifest.path_of(REJECTED_FILE))
    samples = RejectedSamples({reason: [] for reason in reasons}, path=manifest.path_of(REJECTED_FILE))
    if not samples.by_reason or not location.fs.exists(path):
        return samples
    read = 0
    with location.fs.open(path, "rb") as handle:
        for line in handle:
            read += len(line)
            if read > REJECTED_SCAN_BYTES:
                samples.truncated_scan = True
                break
            try:
                entry = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(entry, dict):
                continue
            found = samples.by_reason.setdefault(str(entry.get("reason")), [])
            if len(found) < per_reason:
                found.append(entry)
            if all(len(found) >= per_reason for found in samples.by_reason.values()):
                break
    return samples


def read_stats(url: str, manifest: Manifest) -> dict[str, Any]:
    """The dataset's ``stats.json``, checked field by field (``DatasetFormatError`` if missing or damaged)."""
    location = Location.of(url)
    relative = manifest.path_of(STATS_NAME)
    path = location.path(relative)
    if not location.fs.isfile(path):
        raise DatasetFormatError(f"{location.name(relative)} is missing: the report needs the run's statistics")
    with location.fs.open(path, "rb") as handle:
        return stats_format.parse(handle.read(), location.name(relative))


def sample_blocks(url: str, manifest: Manifest, *, split: str, count: int, tokenizer: str | None) -> list[BlockView]:
    """``count`` blocks spread evenly over ``split``, decoded; raises ``InspectError`` when they cannot be."""
    if count <= 0 or split not in manifest.splits:
        return []
    loaded = load_dataset_tokenizer(url, manifest, tokenizer)
    shards = ShardSet.open(url, split=split)
    try:
        return list(decoded_blocks(shards, _evenly(shards.num_rows, count), loaded.decode))
    finally:
        shards.close()


# ---------------------------------------------------------------------------------------------------- HTML


def esc(text: object) -> str:
    """Escape for HTML text and attributes. Control characters become visible escapes (as in ``inspect``) and
    ``://`` is written as ``:&#47;/``: it renders the same, and a search of the file for external URLs then
    finds only real references, never text from the data."""
    escaped = html.escape(escape_text(str(text)), quote=True).replace("://", ":&#47;/")
    return _NONCHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, raw_html: bool = False) -> str:
    """A table; ``headers`` may be empty (a two-column list of names and values needs none)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    cell = (lambda v: str(v)) if raw_html else esc
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}"></figure>'


def _by_reason(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items())) or "none"


def summary_section(url: str, manifest: Manifest, stats: Mapping[str, Any]) -> str:
    written = sum(stats.get("examples_by_split", {}).values())
    records = [
        ("records read", f"{stats.get('records_read', 0):,}"),
        ("examples written", f"{written:,}"),
        ("rejected", f"{stats.get('records_rejected', 0):,} ({_by_reason(stats.get('rejected_by_reason', {}))})"),
        ("dropped", f"{stats.get('examples_dropped', 0):,} ({_by_reason(stats.get('dropped_by_reason', {}))})"),
        ("truncated", f"{stats.get('examples_truncated', 0):,}"),
        ("split into pieces", f"{stats.get('examples_split', 0):,}"),
    ]
    tokens = [
        (name.replace("_", " "), f"{stats.get(name, 0):,}")
        for name in ("tokens_in", "tokens_written", "tokens_truncated", "tokens_dropped", "source_tokens",
                     "target_tokens", "trained_tokens")
    ]
    blocks = [
        ("blocks", f"{stats.get('blocks', 0):,}"),
        ("fill", f"{stats.get('fill', 0.0):.2%} of {stats.get('block_tokens', 0):,} block tokens"),
        ("max_length", f"{manifest.max_length:,}"),
        ("packing", manifest.packing),
        ("file format", manifest.file_format),
    ]
    splits = _table(
        ["split", "blocks", "examples", "tokens", "shards"],
        [
            (name, f"{s.rows:,}", f"{s.examples:,}", f"{s.tokens:,}", len(s.shards))
            for name, s in manifest.splits.items()
        ],
    )
    return (
        '<section id="summary"><h2>Summary</h2>'
        f"<p>{esc(url)} · made by {esc(manifest.created_by)} · tokenizer {esc(manifest.tokenizer.name)} "
        f"(vocabulary {manifest.tokenizer.vocab_size:,})</p>"
        '<div class="cards">'
        f"<div><h3>Records</h3>{_table([], records)}</div>"
        f"<div><h3>Tokens</h3>{_table([], tokens)}</div>"
        f"<div><h3>Blocks</h3>{_table([], blocks)}</div>"
        f"</div><h3>Splits</h3>{splits}</section>"
    )


def _plots(figures: Sequence[tuple[str, bool, Any]]) -> str:
    """The plots that have data, and a line naming those left out (an empty plot only shows made-up axes)."""
    drawn = "".join(_img(_png(figure), alt) for alt, has_data, figure in figures if has_data)
    empty = [alt for alt, has_data, _ in figures if not has_data]
    left_out = f"<p>Not plotted, as there is nothing to count: {esc(', '.join(empty))}.</p>" if empty else ""
    return f'{left_out}<div class="plots">{drawn}</div>'


def lengths_section(manifest: Manifest, stats: Mapping[str, Any], blocks: BlockStats) -> str:
    limit = manifest.max_length
    figures = []
    for role in ("source", "target", "example"):
        hist = stats.get(f"{role}_length_hist", [])
        title = f"{role} lengths (tokens, from stats.json)"
        figures.append((f"histogram of {role} lengths", any(hist),
                        pow2_histogram_figure(hist, title=title, max_length=limit)))
    exact = histogram_figure(
        blocks.segment_lengths, title="example lengths in the blocks (exact, from seq_lens)", xlabel="tokens",
        ylabel="examples", bins=min(64, limit), value_range=(0, limit), mark=limit, mark_label=f"max_length {limit:,}",
    )
    figures.append(("histogram of example lengths in the blocks", bool(len(blocks.segment_lengths)), exact))
    note = (
        "<p>Source, target and example lengths are as tokenized, before truncation, so examples longer than "
        "max_length show right of the line. The last plot counts what was packed: examples after truncation, "
        "and each piece of a split one.</p>"
    )
    return f'<section id="lengths"><h2>Lengths</h2>{note}{_plots(figures)}</section>'


def blocks_section(blocks: BlockStats) -> str:
    fill = histogram_figure(
        blocks.fill * 100, title="block fill", xlabel="real tokens, % of the block", ylabel="blocks", bins=20,
        value_range=(0, 100),
    )
    examples = counts_figure(blocks.examples_per_block, title="examples per block", xlabel="examples")
    if not blocks.units_total:
        sampled = "<p>No block was written.</p>"
    elif blocks.units_read < blocks.units_total:
        sampled = f"<p>From {blocks.units_read:,} of {blocks.units_total:,} row groups, spread evenly.</p>"
    else:
        sampled = f"<p>From every block ({len(blocks.fill):,}).</p>"
    has_blocks = bool(len(blocks.fill))
    plots = _plots([("histogram of block fill", has_blocks, fill), ("examples per block", has_blocks, examples)])
    return f'<section id="blocks"><h2>Blocks</h2>{sampled}{plots}</section>'


def nothing_written_banner(stats: Mapping[str, Any]) -> str:
    """A banner at the top when no example was written: otherwise a reader meets empty plots and has to work out
    from the numbers why."""
    if sum(stats.get("examples_by_split", {}).values()) or stats.get("blocks", 0):
        return ""
    read = stats.get("records_read", 0)
    if not read:
        why = "no record was read from the inputs"
    else:
        why = (
            f"of {read:,} records read, {stats.get('records_rejected', 0):,} were rejected and "
            f"{stats.get('examples_dropped', 0):,} examples dropped; the reasons are under Rejected records below"
        )
    return f'<p class="banner" role="alert"><strong>Nothing was written</strong>: {esc(why)}.</p>'


def _sample_html(entry: RejectedLine) -> str:
    raw = str(entry.get("raw", ""))
    shown = raw[:RAW_CHARS] + ("…" if len(raw) > RAW_CHARS else "")
    where = f"{entry.get('file')}:{entry.get('line')}" if entry.get("line") is not None else str(entry.get("file"))
    binary = " (not UTF-8: bad bytes shown as �)" if "raw_base64" in entry else ""
    return (
        f'<div class="sample"><div class="where">{esc(where)} — {esc(entry.get("detail", ""))}{esc(binary)}</div>'
        f"<pre>{esc(shown)}</pre></div>"
    )


def rejected_section(stats: Mapping[str, Any], samples: RejectedSamples) -> str:
    rejected = stats.get("rejected_by_reason", {})
    rows = [
        (
            esc(reason),
            f"{count:,}",
            esc(REASONS.get(reason, "")),
            "".join(_sample_html(entry) for entry in samples.by_reason.get(reason, [])),
        )
        for reason, count in sorted(rejected.items(), key=lambda item: (-item[1], item[0]))
    ]
    table = (
        _table(["reason", "records", "meaning", "examples (raw)"], rows, raw_html=True)
        if rows
        else "<p>No record was rejected.</p>"
    )
    dropped = stats.get("dropped_by_reason", {})
    dropped_html = (
        "<h3>Dropped by policy</h3>"
        + _table(["reason", "examples"], [(reason, f"{n:,}") for reason, n in sorted(dropped.items())])
        if dropped
        else "<p>No example was dropped.</p>"
    )
    scan = "<p>Examples come from the first 64 MiB of rejected.jsonl.</p>" if samples.truncated_scan else ""
    return (
        f'<section id="rejected"><h2>Rejected records</h2><p>All of them are in {esc(samples.path)}, raw, with '
        f"their file and line.</p>{table}{scan}{dropped_html}</section>"
    )


def block_html(block: BlockView) -> str:
    """A decoded block: masked runs dim, trained runs highlighted, one list item per example."""
    items = []
    for example in block.examples:
        spans = "".join(
            f'<span class="{"t" if span.trained else "m"}">{esc(span.text)}</span>' for span in example.spans
        )
        items.append(f"<li>{spans}</li>")
    return f'<div class="block"><p class="head">{esc(block.summary())}</p><ol>{"".join(items)}</ol></div>'


def samples_section(blocks: Sequence[BlockView], problem: str | None, split: str) -> str:
    legend = (
        '<p class="legend"><span class="m">dim</span>: no loss (label -100: the source and each example\'s first '
        'token) · <span class="t">highlighted</span>: trained · each numbered item is one example</p>'
    )
    if problem:
        body = f'<p class="problem">The blocks could not be decoded: {esc(problem)}</p>'
    elif not blocks:
        body = f"<p>The {esc(split)} split has no blocks.</p>"
    else:
        body = legend + "".join(block_html(block) for block in blocks)
    return f'<section id="samples"><h2>Decoded blocks ({esc(split)})</h2>{body}</section>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#202124;
padding:0 1em}h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #e0e0e0;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f5f5f5}.cards{display:flex;flex-wrap:wrap;gap:1.5em}.plots{display:flex;
flex-wrap:wrap;gap:.5em}figure{margin:0}img{max-width:100%}pre{white-space:pre-wrap;word-break:break-all;
margin:.2em 0;background:#f8f8f8;padding:.3em;max-height:12em;overflow:auto}.where{color:#555;font-size:.9em}
.block{border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.5em 1em}.head{font-weight:600;margin:.2em 0}
ol{margin:0;padding-left:2.5em}li{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
word-break:break-word;border-top:1px dashed #ccc;padding:.2em 0}li::marker{color:#1a73e8}
.m{color:#8a8f95}.t{background:#e6f4ea;color:#0d652d;font-weight:600}.problem{color:#b3261e}
.banner{background:#fce8e6;border:1px solid #b3261e;border-radius:4px;color:#8c1d18;padding:.6em 1em;font-size:1.1em}
"""


def build_report(
    url: str, *, split: str = "train", blocks: int = 3, tokenizer: str | None = None, max_units: int = MAX_UNITS
) -> str:
    """The whole report as one HTML5 document. Raises ``DatasetFormatError`` for a bad dataset and
    ``MissingDependencyError`` without matplotlib; a tokenizer that cannot be loaded only costs the samples."""
    require_matplotlib()
    manifest = open_manifest(url)
    stats = read_stats(url, manifest)
    block_figures = block_stats(url, manifest, max_units=max_units)
    samples = rejected_samples(url, manifest, stats["rejected_by_reason"])
    problem = None
    try:
        decoded = sample_blocks(url, manifest, split=split, count=blocks, tokenizer=tokenizer)
    except InspectError as error:
        decoded, problem = [], str(error)
    sections = [
        summary_section(url, manifest, stats),
        lengths_section(manifest, stats, block_figures),
        blocks_section(block_figures),
        rejected_section(stats, samples),
        samples_section(decoded, problem, split),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="seqpack {esc(seqpack.__version__)}">'
        f"<title>seqpack report: {esc(url)}</title><style>{CSS}</style></head><body>"
        f"<h1>seqpack report: {esc(url)}</h1>{nothing_written_banner(stats)}" + "".join(sections) + "</body></html>\n"
    )


def write_report(url: str, output: str, **options: Any) -> str:
    """Build the report and write it to ``output`` (local path or any fsspec URL); return ``output``."""
    document = build_report(url, **options)
    with fsspec.open(output, "wb") as handle:
        handle.write(document.encode("utf-8", errors="replace"))
    return output
