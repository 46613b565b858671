"""Small helpers shared by tests (importable as ``helpers`` since pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


def dataset_file(dataset: Path, name: str) -> Path:
    """Where the committed revision of ``dataset`` keeps ``name`` (``stats.json``, ``rejected/rejected.jsonl``)."""
    manifest = json.loads((Path(dataset) / "manifest.json").read_text())
    return Path(dataset) / manifest.get("directory", "") / name
