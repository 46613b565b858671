"""No cross-contamination: a packed batch trains a real transformers model exactly as its examples one by one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from shardgen import Example, make_examples, write_dataset

from seqpack import IGNORE_INDEX
from seqpack.loader import (
    AccumulationStep,
    PackedDataLoader,
    PackedDataset,
    collate_4d_mask,
    collate_padded,
    collate_padding_free,
)

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
    return per_token_mean_alone(model, examples).item()


def per_token_mean_alone(model: torch.nn.Module, examples: list[Example]) -> torch.Tensor:
    """Each example run alone, unpacked and unpadded; their losses weighted by trained tokens (differentiable)."""
    total, tokens = torch.zeros(()), 0
    for example in examples:
        labels = torch.as_tensor(example.labels())[None]
        trained = int((labels[0, 1:] != IGNORE_INDEX).sum())  # causal LMs predict token t+1 from t
        if trained:
            loss = model(input_ids=torch.as_tensor(example.ids).long()[None], labels=labels).loss
            total = total + loss * trained
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


def flash_attention_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


ATTENTIONS = [
    "eager",
    "sdpa",
    pytest.param(
        "flash_attention_2",
        marks=pytest.mark.skipif(not flash_attention_available(), reason="needs a CUDA GPU and flash-attn"),
    ),
]
COLLATES = {  # name: (how the dataset packs, the collate)
    "collate_padding_free": ("wrap", collate_padding_free),
    "collate_4d_mask": ("wrap", collate_4d_mask),
    "collate_padded": ("none", collate_padded),
}
NOT_SUPPORTED = {
    ("collate_4d_mask", "flash_attention_2"): "FlashAttention takes no 4D mask: use collate_padding_free with it",
}


def on_device(model: torch.nn.Module, batch: dict, attention: str) -> tuple[torch.nn.Module, dict]:
    """FlashAttention runs on a GPU in half precision; the others on the CPU in float32."""
    if attention != "flash_attention_2":
        return model, batch
    model = model.to("cuda", torch.bfloat16)
    return model, {k: v.to("cuda") if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def alone_on(model: torch.nn.Module, examples: list[Example]) -> float:
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for example in examples:
        labels = torch.as_tensor(example.labels())[None].to(device)
        trained = int((labels[0, 1:] != IGNORE_INDEX).sum())
        if trained:
            ids = torch.as_tensor(example.ids).long()[None].to(device)
            total += model(input_ids=ids, labels=labels).loss.float().item() * trained
            tokens += trained
    return total / tokens


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("collate_name", list(COLLATES))
@torch.no_grad()
def test_no_collate_and_attention_pair_leaks_between_examples(
    tmp_path: Path, examples: list[Example], collate_name: str, attention: str
) -> None:
    """Every collate with every attention implementation: a batch's loss is its examples' loss run alone, so no
    example attends to another (a leak changes the loss of every token after the first boundary)."""
    if (collate_name, attention) in NOT_SUPPORTED:
        pytest.skip(NOT_SUPPORTED[collate_name, attention])
    packing, collate = COLLATES[collate_name]
    batch = loaded_batch(tmp_path, examples, packing, collate)
    if packing == "wrap":
        assert batch["input_ids"].shape[0] < len(examples), "several examples must share a row"
    model, batch = on_device(tiny_llama(attention), batch, attention)
    tolerance = 2e-2 if attention == "flash_attention_2" else 1e-5
    packed, alone = model(**batch).loss.float().item(), alone_on(model, examples)
    assert packed == pytest.approx(alone, abs=tolerance), (
        f"{collate_name} with {attention} attention leaks between examples: batch loss {packed:.6f}, "
        f"examples alone {alone:.6f}"
    )


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@torch.no_grad()
def test_the_leak_check_catches_a_plain_mask_over_packed_rows(
    tmp_path: Path, examples: list[Example], attention: str
) -> None:
    """The check above can fail: packed rows with the usual 2D mask let each example see the ones before it."""
    batch = loaded_batch(tmp_path, examples, "wrap", collate_padded)
    model = tiny_llama(attention)
    assert abs(model(**batch).loss.item() - one_by_one_loss(model, examples)) > 1e-3


def test_gradients_through_the_4d_mask_are_finite_with_padding(tmp_path: Path, examples: list[Example]) -> None:
    model = tiny_llama("eager")
    batch = loaded_batch(tmp_path, examples, "wrap", collate_4d_mask)
    assert (batch["labels"] == IGNORE_INDEX).any()
    model(**batch).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return grads


def examples_in(step: AccumulationStep, by_key: dict[bytes, Example]) -> list[Example]:
    """The examples of a step's padding-free micro-batches, found by their tokens."""
    found = []
    for batch in step.batches:
        bounds = batch["cu_seq_lens_q"].tolist()
        for start, end in zip(bounds, bounds[1:], strict=False):
            found.append(by_key[batch["input_ids"][0, start:end].numpy().astype(np.int32).tobytes()])
    return found


def test_accumulated_packed_micro_batches_train_the_per_token_mean_of_their_examples(tmp_path: Path) -> None:
    """Gradient accumulation over padding-free packed micro-batches, each loss divided by the step's trained
    tokens, gives the loss and gradients of the per-token mean over the same examples run alone; the mean of
    per-micro-batch means (what ``model(**batch).loss`` summed and averaged would train) does not."""
    examples = make_examples(24, seed=11, min_len=2, max_len=30, vocab_size=VOCAB)
    by_key = {example.key(): example for example in examples}
    write_dataset(str(tmp_path), {"train": examples}, max_length=MAX_LENGTH, packing="wrap", vocab_size=VOCAB)
    dl = PackedDataLoader(PackedDataset(str(tmp_path), batch_size=2, seed=3), collate_fn=collate_padding_free)
    model = tiny_llama("sdpa")
    steps = list(dl.accumulation_steps(3))
    assert sum(len(step.batches) > 1 for step in steps) >= 2
    for step in steps:
        accumulated = torch.zeros(())
        for batch in step.batches:
            loss = model(**{**batch, "num_items_in_batch": step.num_items_in_batch}).loss
            loss.backward()  # one backward per micro-batch, as gradient accumulation does
            accumulated += loss.detach()
        packed_grads = gradients(model)
        expected = per_token_mean_alone(model, examples_in(step, by_key))
        expected.backward()
        assert accumulated.item() == pytest.approx(expected.item(), abs=1e-5)
        for got, want in zip(packed_grads, gradients(model), strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
        if len(step.batches) > 1:
            with torch.no_grad():
                naive = sum(model(**batch).loss for batch in step.batches) / len(step.batches)
            assert abs(naive.item() - expected.item()) > 1e-3, "micro-batches of equal weight: the test cannot fail"


def test_the_loss_normalization_example_prints_the_per_token_mean_of_each_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/loader.md's example, as written, with a small Llama; its optimizer has lr=0 so that the model stays
    the same and every printed step loss can be checked against the step's examples run alone."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "loader.md").read_text(encoding="utf-8")
    section = doc.split("### Loss normalization with gradient accumulation", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code, "the Loss normalization section has no ```python block"
    examples = make_examples(160, seed=5, min_len=2, max_len=30, vocab_size=VOCAB)
    write_dataset(str(tmp_path / "out"), {"train": examples}, max_length=MAX_LENGTH, vocab_size=VOCAB)
    monkeypatch.chdir(tmp_path)
    model = tiny_llama("sdpa")
    namespace = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.0)}
    exec(compile(code.group(1), "docs/loader.md (Loss normalization)", "exec"), namespace)  # noqa: S102 - our doc
    printed = capsys.readouterr().out.splitlines()
    dl = PackedDataLoader(PackedDataset("out/", seed=0, batch_size=8), collate_fn=collate_padding_free)
    steps = list(dl.accumulation_steps(4))
    assert len(printed) == len(steps) >= 2
    by_key = {example.key(): example for example in examples}
    for i, (line, step) in enumerate(zip(printed, steps, strict=True)):
        words = re.fullmatch(r"step (\d+): loss (\S+) over (\d+) trained tokens", line)
        assert words, line
        assert (int(words[1]), int(words[3])) == (i, step.num_items_in_batch)
        with torch.no_grad():
            expected = per_token_mean_alone(model, examples_in(step, by_key)).item()
        assert float(words[2]) == pytest.approx(expected, abs=1e-4)
