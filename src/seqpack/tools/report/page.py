"""The report as one HTML5 document: a section per view, escaped text, inline PNGs, an inline stylesheet.

There is no script, stylesheet or font to fetch, so the file can be mailed, attached to a CI run or opened offline.

    html = build_report("out/")                # a str; write_report("out/", "report.html") saves it
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import fsspec

import seqpack
from seqpack.audit import FINDINGS
from seqpack.dataset import open_manifest
from seqpack.schemas import REASONS, Manifest, RejectedLine
from seqpack.tools.blocks import BlockView, InspectError
from seqpack.tools.report.audit_samples import AuditExample, AuditSamples, audit_samples
from seqpack.tools.report.data import (
    MAX_UNITS,
    BlockStats,
    RejectedSamples,
    block_stats,
    rejected_samples,
    sample_blocks,
)
from seqpack.tools.report.html import esc
from seqpack.tools.report.html import image as _img
from seqpack.tools.report.html import table as _table
from seqpack.tools.report.mixture import mixture_section
from seqpack.tools.report.plots import (
    counts_figure,
    histogram_figure,
    png,
    pow2_histogram_figure,
    require_matplotlib,
)
from seqpack.tools.stats import generation_stats, total_stats

RAW_CHARS = 400
"""How much of a rejected record's raw text the report shows."""


def _by_reason(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in sorted(counts.items())) or "none"


def generations_table(manifest: Manifest, per_generation: Mapping[int, Mapping[str, Any]],
                      stats: Mapping[str, Any]) -> str:
    """One row per generation (oldest first), then the total: what each run added to the dataset."""
    rows = []
    for generation in manifest.generations:
        part = per_generation[generation.id]
        inputs = _files(len(generation.inputs)) if manifest.inputs_recorded else "not recorded"
        rows.append((generation.id, generation.committed_at or "-", inputs, f"{generation.examples:,}",
                     f"{generation.tokens:,}", f"{part.get('fill', 0.0):.2%}", f"{part.get('records_rejected', 0):,}"))
    generations = manifest.generations
    consumed = _files(sum(len(g.inputs) for g in generations)) if manifest.inputs_recorded else ""
    rows.append((f"total ({len(generations)})", "", consumed, f"{sum(g.examples for g in generations):,}",
                 f"{sum(g.tokens for g in generations):,}", f"{stats.get('fill', 0.0):.2%}",
                 f"{stats.get('records_rejected', 0):,}"))
    headers = ["generation", "committed at (UTC)", "inputs consumed", "examples", "tokens", "fill", "rejected"]
    return f"<h3>Generations</h3>{_table(headers, rows)}"


def _files(count: int) -> str:
    return f"{count:,} file{'s' * (count != 1)}"


def summary_section(url: str, manifest: Manifest, stats: Mapping[str, Any],
                    per_generation: Mapping[int, Mapping[str, Any]] | None = None) -> str:
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
        f"</div><h3>Splits</h3>{splits}"
        f"{generations_table(manifest, per_generation, stats) if per_generation else ''}</section>"
    )


def _plots(figures: Sequence[tuple[str, bool, Any]]) -> str:
    """The plots that have data, and a line naming those left out (an empty plot only shows made-up axes)."""
    drawn = "".join(_img(png(figure), alt) for alt, has_data, figure in figures if has_data)
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
    where = (
        f"<p>All of them are in {esc(', '.join(samples.paths))}, raw, with their file and line.</p>" if samples.paths
        else ""
    )
    return (
        f'<section id="rejected"><h2>Rejected records</h2>{where}{table}{scan}{dropped_html}</section>'
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


def _audit_example_html(example: AuditExample) -> str:
    """One example as a block's item: numbered as in its row, masked text dim, trained text highlighted."""
    spans = "".join(
        f'<span class="{"t" if span.trained else "m"}">{esc(span.text)}</span>' for span in example.view.spans
    )
    return (f'<div class="sample"><div class="where">{esc(example.where)}</div>'
            f'<ol start="{example.number}"><li>{spans}</li></ol></div>')


def audit_section(stats: Mapping[str, Any], samples: AuditSamples, written: int) -> str:
    """The section: a line saying what was audited, then a row per finding code (code, meaning, count, decoded
    examples, masked text dim as in ``seqpack inspect``), or that there was nothing to find. ``written``: the
    examples the shards hold, as their blocks cut them (the manifest's count, which the audit's matches)."""
    audited, counts = stats.get("examples_audited", 0), stats.get("audit_by_code", {})
    if not audited:
        body = ("<p>Not audited: the dataset was written with --audit off or by a seqpack older than the audit; "
                "<code>seqpack audit DATASET</code> checks it.</p>")
        return f'<section id="audit"><h2>Audit</h2>{body}</section>'
    scope = f"{audited:,} examples (as the blocks cut them) audited as they were written"
    if written > audited:
        scope += f"; {written - audited:,} more, in generations written without the audit, were not"
    if not counts:
        return f'<section id="audit"><h2>Audit</h2><p>{esc(scope)}: no findings.</p></section>'
    codes = [code for code in FINDINGS if code in counts] + sorted(set(counts) - set(FINDINGS))
    rows = [
        (esc(code), f"{counts[code]:,}", esc(FINDINGS.get(code, "")),
         "".join(map(_audit_example_html, samples.by_code.get(code, []))))
        for code in codes
    ]
    problem = f'<p class="problem">The examples could not be decoded: {esc(samples.problem)}</p>' \
        if samples.problem else ""
    legend = ('<p class="legend"><span class="m">dim</span>: no loss · <span class="t">highlighted</span>: '
              "trained; <code>seqpack audit DATASET</code> lists them all</p>")
    return (f'<section id="audit"><h2>Audit</h2><p>{esc(scope)}.</p>{problem}{legend}'
            f'{_table(["finding", "examples", "meaning", "first examples (decoded)"], rows, raw_html=True)}</section>')


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
    per_generation = generation_stats(url, manifest)
    stats = total_stats(per_generation.values())
    block_figures = block_stats(url, manifest, max_units=max_units)
    samples = rejected_samples(url, manifest, stats["rejected_by_reason"])
    problem = None
    try:
        decoded = sample_blocks(url, manifest, split=split, count=blocks, tokenizer=tokenizer)
    except InspectError as error:
        decoded, problem = [], str(error)
    sections = [
        summary_section(url, manifest, stats, per_generation),
        audit_section(stats, audit_samples(url, manifest, stats, tokenizer=tokenizer),
                      sum(split.examples for split in manifest.splits.values())),
        mixture_section(stats),
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
