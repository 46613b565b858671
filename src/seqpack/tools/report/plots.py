"""The report's plots: matplotlib figures drawn on the Agg canvas (no display, no pyplot state), saved as PNG.

    figure = pow2_histogram_figure(stats["source_length_hist"], title="source lengths", max_length=2048)
    png_bytes = png(figure)

Needs matplotlib: ``pip install 'seqpack[report]'``; :func:`require_matplotlib` says so before a long run.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PLOT_COLOR, MARK_COLOR = "#4c72b0", "#c44e52"


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


def png(figure: Any) -> bytes:
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


def shares_figure(names: Sequence[str], asked: Sequence[float], achieved: Sequence[float], *, title: str) -> Any:
    """A mixture's share per source: the share asked (its weight) next to the share its examples have in what was
    written, as paired bars, each labelled with its percentage."""
    figure, axes = _figure(title, "source", "share")
    if not names:
        _no_data(axes)
        return figure
    x = np.arange(len(names), dtype=float)
    width = 0.38
    for offset, values, color, label in ((-width / 2, asked, "#b0b8c4", "asked"),
                                         (width / 2, achieved, PLOT_COLOR, "achieved")):
        bars = axes.bar(x + offset, values, width, color=color, label=label)
        axes.bar_label(bars, labels=[f"{value:.1%}" for value in values], fontsize=8, padding=2)
    axes.set_xticks(x, list(names))
    axes.yaxis.get_major_locator().set_params(integer=False)
    axes.set_ylim(0, max([*asked, *achieved, 0.01]) * 1.2)
    axes.legend(frameon=False, fontsize=9)
    return figure
