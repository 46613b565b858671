"""examples/train_hf.py trains on loader batches, and a stopped run resumes to the very same losses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from shardgen import make_examples, write_dataset

pytest.importorskip("transformers")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_hf.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_hf", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("example"))
    examples = make_examples(120, seed=1, vocab_size=300, max_len=40)
    write_dataset(root, {"train": examples}, max_length=64, vocab_size=300, rows_per_shard=8, added_tokens={"<x>": 300})
    return root


def test_stopped_and_resumed_training_matches_an_uninterrupted_run(data: str, tmp_path: Path) -> None:
    example = load_example()
    straight = example.main([data, "--steps", "7", "--batch-size", "3"])
    checkpoint = str(tmp_path / "ckpt.pt")
    head = example.main([data, "--steps", "4", "--batch-size", "3", "--checkpoint", checkpoint, "--save-every", "2"])
    tail = example.main([data, "--steps", "7", "--batch-size", "3", "--checkpoint", checkpoint, "--workers", "2"])
    assert len(straight) == 7 and all(loss > 0 for loss in straight)
    assert head + tail == pytest.approx(straight, abs=1e-6)


def test_hugging_face_trainer_takes_the_dataset_and_collate(data: str, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    example = load_example()
    losses = example.main([data, "--steps", "3", "--batch-size", "3", "--trainer", "--output", str(tmp_path)])
    plain = example.main([data, "--steps", "3", "--batch-size", "3"])
    assert losses == pytest.approx(plain, abs=1e-3)
