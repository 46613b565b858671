"""benchmarks/pipeline.py's read + write floor: its start-up hook really replaces the tokenize step's encoding
with table lookups (a hook that silently stops patching would make the floor a second seqpack run)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from seqpack.transforms import tokenize
calls = []
def encode(texts):
    calls.append(list(texts))
    return tokenize.TokenLists.from_lists([[7] * len(text) for text in texts])
cache = tokenize.cache_for(encode, fast=True)
print(cache.encode(["in the table", "not in it"]).tolists(), calls)
"""


def test_the_floor_hook_looks_ids_up_and_tokenizes_only_what_is_missing(tmp_path: Path) -> None:
    table = tmp_path / "table.pkl"
    table.write_bytes(pickle.dumps({"in the table": array("i", [1, 2, 3])}))
    reports = tmp_path / "reports"
    reports.mkdir()
    env = dict(os.environ, SEQPACK_TOKEN_TABLE=str(table), SEQPACK_TOKEN_TABLE_REPORT=str(reports),
               PYTHONPATH=os.pathsep.join([str(ROOT / "benchmarks" / "table_hook"), str(ROOT / "src")]))
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[[1, 2, 3], [7, 7, 7, 7, 7, 7, 7, 7, 7]] [['not in it']]"
    assert [p.name.split("-")[0] for p in sorted(reports.iterdir())] == ["load", "miss"]
