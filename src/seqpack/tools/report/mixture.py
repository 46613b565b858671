"""The report's mixture section: what each source contributed (read, rejected, dropped, repeated, written,
tokens, trained tokens) and, for a weighted mixture, the share each source was asked for next to the share it got.

    html = mixture_section(stats)        # "" for a dataset that is not a mixture
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seqpack.tools.report.html import esc, image, table
from seqpack.tools.report.plots import png, shares_figure

COLUMNS = (
    ("records_read", "read"),
    ("records_rejected", "rejected"),
    ("examples_dropped", "dropped"),
    ("examples_repeated", "repeated"),
    ("examples_written", "written"),
    ("tokens_written", "tokens"),
    ("trained_tokens", "trained tokens"),
)


def mixture_section(stats: Mapping[str, Any]) -> str:
    """The section, or "" when the statistics have no sources."""
    sources = stats.get("sources") or {}
    if not sources:
        return ""
    mixture = stats.get("mixture") or {}
    shares = [share for share in mixture.get("shares", []) if isinstance(share, Mapping)]
    unit = mixture.get("weight_by", "tokens")
    order = list(dict.fromkeys([str(share.get("name")) for share in shares if share.get("name") in sources]
                               + list(sources)))  # source id order (stats.json sorts names)
    rows = [[name, *(f"{sources[name].get(key, 0):,}" for key, _ in COLUMNS), *_share_cells(shares, name)]
            for name in order]
    headers = ["source", *(label for _, label in COLUMNS)] + (["asked", "achieved (train)"] if shares else [])
    note = (f"<p>Weights are shares of {esc(unit)}; a source below its share is repeated, one above it is "
            "down-sampled (counted as dropped).</p>" if shares else "")
    return (f'<section id="mixture"><h2>Mixture</h2>{note}{table(headers, rows)}'
            f"{_charts(shares)}</section>")


def _share_cells(shares: list[Mapping[str, Any]], name: str) -> list[str]:
    if not shares:
        return []
    train = [share for share in shares if share.get("name") == name and share.get("split") == "train"]
    if not train:
        return ["", ""]
    return [f"{train[0].get('asked', 0.0):.2%}", f"{train[0].get('achieved', 0.0):.2%}"]


def _charts(shares: list[Mapping[str, Any]]) -> str:
    """One asked-vs-achieved chart per split that has shares (train first)."""
    splits = sorted({share.get("split", "") for share in shares}, key=lambda split: (split != "train", split))
    figures = []
    for split in splits:
        mine = [share for share in shares if share.get("split") == split]
        figure = shares_figure([str(s.get("name", "")) for s in mine], [float(s.get("asked", 0.0)) for s in mine],
                               [float(s.get("achieved", 0.0)) for s in mine], title=f"shares asked and achieved "
                               f"({split})")
        figures.append(image(png(figure), f"shares asked and achieved per source ({split})"))
    return f'<div class="plots">{"".join(figures)}</div>' if figures else ""
