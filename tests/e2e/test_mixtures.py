"""Mixtures end to end: three sources (plain pairs, alpaca, chat), each with its own files, template and options,
in one run; every example carries its source id through the shards, the loader and the statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import chat_tokenizer, write_jsonl

from seqpack.cli.main import main
from seqpack.dataset import ShardSet, open_manifest

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PAIRS = [{"source": f"The cat {i}", "target": f"Le chat {i}"} for i in range(12)] + [{"source": "no target"}]
ALPACA = [{"instruction": f"Translate {i}", "input": "Hello world", "output": f"Bonjour {i}"} for i in range(8)]
CHATS = [
    {"messages": [{"role": "user", "content": f"The dog {i}"}, {"role": "assistant", "content": f"Le chien {i}"}]}
    for i in range(6)
] + [{"messages": [{"role": "user", "content": "no answer"}]}]
SOURCES = ("pairs", "alpaca", "chat")


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return chat_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("chatml"), CHATML)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, chatml_dir: Path) -> dict:
    """The job file of a three-source mixture, and its input files."""
    root = tmp_path_factory.mktemp("mixture")
    for name, records in zip(SOURCES, (PAIRS, ALPACA, CHATS), strict=True):
        (root / name).mkdir()
        write_jsonl(root / name / "part-0.jsonl", records)
    return {
        "tokenizer": str(chatml_dir), "output": str(root / "out"), "max_length": 64, "seed": 3,
        "beam": {"direct_running_mode": "in_memory"},
        "sources": [
            {"name": "pairs", "input": f"{root}/pairs/*.jsonl", "weight": 0.5},
            {"name": "alpaca", "input": f"{root}/alpaca/*.jsonl", "template": "alpaca", "weight": 0.3},
            {"name": "chat", "inputs": [f"{root}/chat/*.jsonl"], "template": "chat", "weight": 0.2},
        ],
    }


@pytest.fixture(scope="module")
def dataset(job: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    assert main(["run", "-q", "--config", str(path)]) == 0
    return Path(job["output"])


def test_every_record_of_every_source_appears_once_with_its_source(dataset: Path, chatml_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(chatml_dir))
    manifest = open_manifest(str(dataset))
    assert manifest.source_names == list(SOURCES)
    found: dict[str, list[str]] = {name: [] for name in SOURCES}
    shards = ShardSet.open(str(dataset), split="train")
    rows = [row for unit in range(shards.num_units) for row in shards.read_unit(unit).to_pylist()]
    for row in rows:
        start = 0
        for length, source_id in zip(row["seq_lens"], row["source_id"], strict=True):
            found[SOURCES[source_id]].append(tokenizer.decode(row["input_ids"][start : start + length]))
            start += length
    print(found)
