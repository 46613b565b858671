"""docs/scaling.md's tables are what benchmarks/cost_model.py prints from seqpack's own constants: a change to
the shuffle's constants (bucket size, spill size, batch rows) that is not carried into the doc fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cost_tables_in_the_doc_are_the_models_output() -> None:
    printed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cost_model.py")], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert printed and printed in (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8"), \
        "docs/scaling.md is out of date: paste the output of `python benchmarks/cost_model.py` into it"


def test_the_spill_path_grows_quadratically_and_the_runner_path_linearly() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cost_model import Assumptions, runner_path, spill_path
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    small, large = 10**10, 10**11
    for path, growth in ((spill_path, 100), (runner_path, 10)):
        ratio = path(large, Assumptions()).requests / path(small, Assumptions()).requests
        assert 0.8 * growth < ratio < 1.2 * growth, (path.__name__, ratio)
    read = [runner_path(t, Assumptions()).bytes_read / t for t in (small, large)]
    assert abs(read[1] / read[0] - 1) < 0.01, "runner path: bytes read per token are flat"
