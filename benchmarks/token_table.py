"""The "read + write only" floor of ``pipeline.py``: ``seqpack run`` with tokenizing replaced by a lookup.

Before the run, untimed, every distinct text seqpack tokenizes (source + separator, and target: the plain
template, as the ceiling counts them) is encoded once with the Hugging Face backend and the ids are pickled as a
``{text: array('i')}`` table (cached under ``.work/tables/`` by the data's and the tokenizer's content).
``table_hook/sitecustomize.py``, put first on ``PYTHONPATH`` with ``SEQPACK_TOKEN_TABLE`` naming the table, then
replaces the tokenize step's encode caches in every process (driver and Beam workers) with lookups into it:
the run reads, renders, builds examples, shuffles, packs and writes as usual, but encodes nothing. Its time is
the floor of everything in ``seqpack run`` that is not tokenizing; its shards are the real run's (the same ids).

What stays in the floor: start-up, loading the tokenizer (and the fast encoder's check on the driver), loading
the table in each worker (reported apart), and one dict lookup per text. Pairs jobs only (``--chat`` tokenizes
segments elsewhere). A text missing from the table (another template) is tokenized as usual and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from array import array
from pathlib import Path
from typing import Any

HOOK_DIR = Path(__file__).resolve().parent / "table_hook"
TABLE_ENV = "SEQPACK_TOKEN_TABLE"
REPORT_ENV = "SEQPACK_TOKEN_TABLE_REPORT"
_BATCH = 16_384


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def build(data: Path, tokenizer: Path, work: Path, separator: str) -> Path:
    """The table of ``data``'s texts under ``tokenizer`` (built once, then reused): its path."""
    path = work / "tables" / f"{_digest(data)}-{_digest(tokenizer / 'tokenizer.json')}.pkl"
    if path.exists():
        return path
    from tokenizers import Tokenizer

    texts: dict[str, None] = {}
    with open(data, encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            texts[pair["source"] + separator] = None
            texts[pair["target"]] = None
    backend = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    distinct = list(texts)
    table: dict[str, array] = {}
    for start in range(0, len(distinct), _BATCH):
        chunk = distinct[start : start + _BATCH]
        for text, encoding in zip(chunk, backend.encode_batch_fast(chunk, add_special_tokens=False), strict=True):
            table[text] = array("i", encoding.ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(table, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    print(f"  token table: {len(table):,} distinct texts -> {path} ({path.stat().st_size / 1e6:,.0f} MB)",
          file=sys.stderr)
    return path


def hook_env(env: dict[str, str], table: Path, report_dir: Path) -> dict[str, str]:
    """``env`` with the hook first on ``PYTHONPATH`` and the table and the report directory named."""
    report_dir.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOOK_DIR), env.get("PYTHONPATH")]))
    env[TABLE_ENV] = str(table)
    env[REPORT_ENV] = str(report_dir)
    return env


def read_reports(report_dir: Path) -> dict[str, Any]:
    """What the hooked processes wrote: how many loaded the table, their load CPU s, and texts not found."""
    loads = [json.loads(p.read_text()) for p in report_dir.glob("load-*.json")]
    misses = sum(int(p.read_text() or 0) for p in report_dir.glob("miss-*.txt"))
    return {"processes": len(loads), "load_cpu_s": sum(r["cpu_s"] for r in loads), "misses": misses}
