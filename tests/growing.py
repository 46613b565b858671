"""Build datasets that grow, with the real command: ``seqpack run`` once, then ``seqpack run --append``.

    first, second = halves(pairs)
    commit(root, out, tokenizer_dir, first, "day1")
    commit(root, out, tokenizer_dir, second, "day2", "--append")     # generation 2

Small blocks, row groups of 4 and one shuffle bucket per shard, so each generation has about ten shards and a
reader opens a new shard every few rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import run_args, write_jsonl

from seqpack.cli.main import main

SMALL = ("--row-group-size", "4", "--validation-fraction", "0", "--bucket-tokens", "512", "--shard-bytes", "1")


def halves(pairs: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    middle = len(pairs) // 2
    return pairs[:middle], pairs[middle:]


def commit(root: Path, output: Path, tokenizer: Path, records: list[dict[str, str]], name: str, *flags: str) -> Path:
    """Write ``records`` to ``root/name.jsonl`` and run ``seqpack run`` on that file into ``output``."""
    path = write_jsonl(root / f"{name}.jsonl", records)
    assert main(run_args(path, output, tokenizer, *SMALL, *flags)) == 0
    return output


def copy(dataset: Path, to: Path) -> Path:
    """A copy of a committed dataset (paths in the manifest are relative, so a copy is the same dataset)."""
    shutil.copytree(dataset, to)
    return to
