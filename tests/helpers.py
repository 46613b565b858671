"""Small helpers shared by tests (importable as ``helpers`` since pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


def dataset_file(dataset: Path, name: str) -> Path:
    """Where the committed revision of ``dataset`` keeps ``name`` (``stats.json``, ``rejected/rejected.jsonl``)."""
    manifest = json.loads((Path(dataset) / "manifest.json").read_text())
    return Path(dataset) / manifest.get("directory", "") / name


def flat(lists: Iterable[list[T]]) -> list[T]:
    """The items of a reader's lists (``iter_file_lists``, ``iter_input_lists``), in order: readers hand records
    on a list at a time, and most tests compare items, not how they were grouped."""
    return [item for items in lists for item in items]


def pack(pieces: list, *, strategy: str, max_length: int, pad_id: int, mask_boundaries: bool = True):  # noqa: ANN201
    """``packing.pack_columns`` for a list of ``masking.Piece`` (what tests write by hand)."""
    from seqpack.example_columns import columns_of_pieces
    from seqpack.packing import pack_columns

    return pack_columns(columns_of_pieces(pieces), strategy=strategy, max_length=max_length, pad_id=pad_id,
                        mask_boundaries=mask_boundaries)


IN_PROCESS = "--direct_running_mode=in_memory"
"""Beam's local runner in this process: fast for small inputs, and faults and monkeypatches reach it."""


def run_args(input_file: Path, output: Path, tokenizer: Path, *extra: str) -> list[str]:
    """``seqpack run`` arguments for a small test run (small blocks and buckets, in this process)."""
    return ["run", "-q", "-i", str(input_file), "-o", str(output), "-t", str(tokenizer), "--max-length", "128",
            "--bucket-tokens", "2048", IN_PROCESS, *extra]


def spill_examples(spill_dir: Path, examples: list, files: int, split: str = "train") -> list:
    """Spread keyed ``(key, ids)`` examples over ``files`` spill files of ``split``, as tokenize workers would;
    their ``SpillFile`` descriptions."""
    from seqpack.example_columns import ExampleBuffer
    from seqpack.transforms.shuffle import SpillFile, spill_path, write_spill

    spills = []
    for f in range(files):
        buffer = ExampleBuffer()
        for key, ids in examples[f::files]:
            buffer.add(key, ids, 1)
        columns = buffer.build()
        path = spill_path(str(spill_dir), split)
        write_spill(path, columns)
        spills.append(SpillFile(split, path, len(columns), columns.tokens))
    return spills


def chat_tokenizer(base: Path, out: Path, template: str) -> Path:
    """The tokenizer at ``base`` with ChatML's special tokens and ``template`` as its chat template, saved to
    ``out`` (a directory a run can load)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out))
    return out
