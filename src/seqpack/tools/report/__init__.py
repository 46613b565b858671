"""``seqpack report``: one self-contained HTML file that shows a dataset at a glance.

It holds the dataset's numbers (records, rejections and drops by reason, tokens, blocks, fill: every generation's
added up, and a table of the generations), histograms of source, target and example lengths with ``max_length``
marked, the distribution of block fill and of examples per block, the rejected records by reason with a few raw
examples, and a handful of decoded blocks coloured as ``seqpack inspect`` colours them. Plots are PNGs drawn by
matplotlib (Agg, no display) and inlined as base64, and there is no script, stylesheet or font to fetch, so the
file can be mailed, attached to a CI run or opened offline.

    html = build_report("out/")                # a str; write_report("out/", "report.html") saves it

Needs matplotlib: ``pip install 'seqpack[report]'``.

- :mod:`~seqpack.tools.report.data`: what is shown, read from the dataset (statistics, rejected records, blocks).
- :mod:`~seqpack.tools.report.plots`: the matplotlib figures.
- :mod:`~seqpack.tools.report.page`: the HTML sections, and ``build_report``/``write_report``.
"""

from seqpack.tools.report.page import build_report, write_report
from seqpack.tools.report.plots import MissingDependencyError, require_matplotlib

__all__ = ["MissingDependencyError", "build_report", "require_matplotlib", "write_report"]
