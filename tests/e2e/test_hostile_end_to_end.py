"""The whole hostile corpus through the CLI: nothing crashes, every record is accounted for, every bad one kept."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import dataset_file

from seqpack.cli.main import main

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"


def test_hostile_corpus_is_accounted_for(tmp_path: Path, tokenizer_dir: Path) -> None:
    expected = json.loads((HOSTILE / "expected.json").read_text())
    huge = tmp_path / "huge.jsonl"
    with open(huge, "w") as out:  # one 100 MB record, above the 64 MiB default cap
        out.write('{"source": "a", "target": "')
        out.write("x" * (100 << 20))
        out.write('"}\n{"source": "small", "target": "fine"}\n')
    inputs = [str(HOSTILE / name) for name in sorted(expected)] + [str(huge)]
    output = tmp_path / "out"
    args = ["run", "-q", "-o", str(output), "-t", str(tokenizer_dir), "--direct_running_mode=in_memory",
            "--max-reject-fraction", "1"]  # the corpus is mostly bad on purpose
    for path in inputs:
        args += ["-i", path]
    assert main(args) == 0

    stats = json.loads(dataset_file(output, "stats.json").read_text())
    total = sum(len(entries) for entries in expected.values()) + 2
    assert stats["records_read"] == total, "every record present in the input is counted (commit checks the rest)"

    rejected = [json.loads(line) for line in dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == stats["records_rejected"]
    by_place = {(Path(r["file"]).name, r["line"]): r["reason"] for r in rejected}
    for name, entries in expected.items():
        for line, outcome in entries:
            if outcome != "record":
                assert by_place.get((name, line)) == outcome, (name, line)
    assert by_place[("huge.jsonl", 1)] == "record_too_large"
    invalid_utf8 = [r for r in rejected if r["reason"] == "invalid_utf8"]
    assert invalid_utf8 and all("raw_base64" in r for r in invalid_utf8), "exact bytes are kept for replay"
