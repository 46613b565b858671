"""Data hygiene: exact dedup keeps the first occurrence, length filters, added special tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from helpers import dataset_file, write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.cli.main import main
from seqpack.transforms.dedup import content_key
from seqpack.transforms.render import RenderedChat, RenderedPair


def run(*args: str) -> int:
    return main(["run", "-q", "--direct_running_mode=in_memory", *args])


def rejected_and_stats(output: Path) -> dict:
    return json.loads(dataset_file(output, "stats.json").read_text())


def test_exact_dedup_keeps_the_first_occurrence(tmp_path: Path, tokenizer_dir: Path) -> None:
    cat, dog = {"source": "cat", "target": "chat"}, {"source": "dog", "target": "x"}
    a = write_jsonl(tmp_path / "a.jsonl", [cat] * 3 + [dog])
    b = write_jsonl(tmp_path / "b.jsonl", [{"source": "cat", "target": "chat"}, {"source": "dog", "target": "y"}])
    output = tmp_path / "out"
    assert run("-i", str(a), "-i", str(b), "-o", str(output), "-t", str(tokenizer_dir), "--dedup", "exact") == 0
    stats = rejected_and_stats(output)
    assert stats["dropped_by_reason"] == {"duplicate": 3}
    assert stats["examples_by_split"] == {"train": 3}
    again = tmp_path / "again"
    assert run("-i", str(b), "-i", str(a), "-o", str(again), "-t", str(tokenizer_dir), "--dedup", "exact") == 0
    first = {p.name: p.read_bytes() for p in dataset_file(output, "train").iterdir()}
    again_shards = {p.name: p.read_bytes() for p in dataset_file(again, "train").iterdir()}
    assert first == again_shards, "input order does not matter"


def test_dedup_key_ignores_origin_only() -> None:
    assert content_key(RenderedPair("a", "b", "f:1")) == content_key(RenderedPair("a", "b", "g:9"))
    assert content_key(RenderedPair("a", "b", "f:1")) != content_key(RenderedPair("a", "c", "f:1"))
    chat, untrained = [{"role": "user", "content": "a"}], [("a", False)]
    assert content_key(RenderedChat(chat, untrained, "f:1")) == content_key(RenderedChat(chat, untrained, "h:2"))
    assert content_key(RenderedChat(chat, untrained, "f:1")) != content_key(RenderedChat(chat, [("a", True)], "f:1"))


def test_length_filters_are_counted(tmp_path: Path, tokenizer_dir: Path) -> None:
    records = [{"source": "The cat", "target": "Le chat mange une pomme rouge dans le jardin."},
               {"source": "The dog eats an apple every morning in the garden", "target": "Le"}]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(tokenizer_dir), "--min-target-tokens", "3",
               "--max-source-tokens", "40") == 0
    stats = rejected_and_stats(output)
    assert stats["dropped_by_reason"] == {"target_too_short": 1}
    assert stats["tokens_in"] == stats["tokens_written"] + stats["tokens_dropped"]


def test_added_special_tokens_round_trip(tmp_path: Path, tokenizer_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"source": "The cat", "target": "Le chat"}])
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(tokenizer_dir), "--template", "[SOS]{source}[SEP]{target}",
               "--add-special-tokens", "[SOS]", "[SEP]") == 0
    manifest = json.loads((output / "manifest.json").read_text())
    base = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    saved = AutoTokenizer.from_pretrained(str(dataset_file(output, "tokenizer")))
    added = manifest["tokenizer"]["added_tokens"]
    assert added == {"[SOS]": len(base), "[SEP]": len(base) + 1}
    assert manifest["tokenizer"]["vocab_size"] == len(base) + 2 == len(saved)
    row = pq.read_table(next(dataset_file(output, "train").iterdir())).to_pylist()[0]
    ids = row["input_ids"][: row["seq_lens"][0]]
    assert added["[SOS]"] in ids and added["[SEP]"] in ids
    assert saved.decode(ids, skip_special_tokens=False).startswith("<s>[SOS]The cat[SEP]")
    sep_at = ids.index(added["[SEP]"])
    assert row["labels"][sep_at] == IGNORE_INDEX and row["labels"][sep_at + 1] != IGNORE_INDEX
