"""No cross-contamination: a packed batch trains a real transformers model exactly as its examples one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from shardgen import Example, make_examples, write_dataset

from seqpack import IGNORE_INDEX
from seqpack.loader import PackedDataLoader, PackedDataset, collate_4d_mask, collate_padded, collate_padding_free

transformers = pytest.importorskip("transformers")

VOCAB = 96
MAX_LENGTH = 48


def tiny_llama(attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        attn_implementation=attention,
    )
    return transformers.LlamaForCausalLM(config).train()  # train mode: models build a KV cache by default


def one_by_one_loss(model: torch.nn.Module, examples: list[Example]) -> float:
    """The mean over trained tokens of the examples run alone, the quantity a packed batch's loss is."""
    total, tokens = 0.0, 0
    for example in examples:
        labels = torch.as_tensor(example.labels())[None]
        trained = int((labels[0, 1:] != IGNORE_INDEX).sum())  # causal LMs predict token t+1 from t
        if trained:
            loss = model(input_ids=torch.as_tensor(example.ids).long()[None], labels=labels).loss
            total += loss.item() * trained
            tokens += trained
    return total / tokens


def loaded_batch(root: Path, examples: list[Example], packing: str, collate) -> dict:  # type: ignore[no-untyped-def]
    """Write ``examples`` as a dataset and read them back as one batch through the loader."""
    write_dataset(str(root), {"train": examples}, max_length=MAX_LENGTH, packing=packing, vocab_size=VOCAB)
    dataset = PackedDataset(str(root), batch_size=64, seed=3)
    batches = list(PackedDataLoader(dataset, collate_fn=collate))
    assert len(batches) == 1
    return batches[0]


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return make_examples(14, seed=7, min_len=2, max_len=30, vocab_size=VOCAB)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@torch.no_grad()
def test_packed_padding_free_batch_loss_equals_examples_alone(
    tmp_path: Path, examples: list[Example], attention: str
) -> None:
    model = tiny_llama(attention)
    batch = loaded_batch(tmp_path, examples, "wrap", collate_padding_free)
    assert len(batch["cu_seq_lens_q"]) - 1 == len(examples)
    assert model(**batch).loss.item() == pytest.approx(one_by_one_loss(model, examples), abs=1e-5)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@torch.no_grad()
def test_packed_4d_mask_batch_loss_equals_examples_alone(
    tmp_path: Path, examples: list[Example], attention: str
) -> None:
    model = tiny_llama(attention)
    batch = loaded_batch(tmp_path, examples, "wrap", collate_4d_mask)
    assert batch["input_ids"].shape[0] < len(examples), "several examples must share a row"
    assert model(**batch).loss.item() == pytest.approx(one_by_one_loss(model, examples), abs=1e-5)


@torch.no_grad()
def test_padded_batch_of_unpacked_rows_loss_equals_examples_alone(tmp_path: Path, examples: list[Example]) -> None:
    model = tiny_llama("sdpa")
    batch = loaded_batch(tmp_path, examples, "none", collate_padded)
    assert batch["attention_mask"].ndim == 2 and (batch["attention_mask"] == 0).any()
    assert model(**batch).loss.item() == pytest.approx(one_by_one_loss(model, examples), abs=1e-5)


def test_gradients_through_the_4d_mask_are_finite_with_padding(tmp_path: Path, examples: list[Example]) -> None:
    model = tiny_llama("eager")
    batch = loaded_batch(tmp_path, examples, "wrap", collate_4d_mask)
    assert (batch["labels"] == IGNORE_INDEX).any()
    model(**batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
