"""Loss normalization: every collate counts exactly the labels the shifted causal LM loss trains, per batch and
per example, and ``accumulation_steps`` groups batches with their total without disturbing resume."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shardgen import blocks_table, make_examples, pack, write_dataset

from seqpack import IGNORE_INDEX
from seqpack.loader import (
    PackedDataLoader,
    PackedDataset,
    collate_4d_mask,
    collate_padded,
    collate_padding_free,
    trained_tokens,
)

loss_utils = pytest.importorskip("transformers.loss.loss_utils")

VOCAB = 50


def samples_of(count: int, seed: int, max_length: int, packing: str, train_on_all: bool) -> list[dict]:
    examples = make_examples(count, seed=seed, max_len=max_length, vocab_size=VOCAB)
    table = blocks_table(pack(examples, max_length, packing), max_length, padded=packing != "none")
    samples = [{name: torch.as_tensor(value) for name, value in row.items()} for row in table.to_pylist()]
    for sample in samples:  # --train-on all: every real token has a label, example starts included
        if train_on_all:
            sample["labels"] = torch.where(sample["attention_mask"].bool(), sample["input_ids"], IGNORE_INDEX)
    return samples


def expected_counts(samples: list[dict], padding_free: bool) -> list[int]:
    """Per example, its labels the model trains on, by the rule: padding-free masks every example's first
    label; a padded row loses only its own first label to the shift."""
    counts = []
    for sample in samples:
        labels, start = sample["labels"].tolist(), 0
        for length in sample["seq_lens"].tolist():
            first = start + 1 if padding_free else max(start, 1)
            counts.append(sum(label != IGNORE_INDEX for label in labels[first : start + length]))
            start += length
    return counts


samples_strategy = st.builds(
    samples_of,
    st.integers(1, 10),
    st.integers(0, 10_000),
    st.integers(16, 40),
    st.sampled_from(["wrap", "none"]),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(samples_strategy)
def test_every_collate_counts_the_labels_the_shifted_loss_trains(samples: list[dict]) -> None:
    for collate, padding_free in ((collate_padding_free, True), (collate_padded, False), (collate_4d_mask, False)):
        batch = collate(samples)
        per_example = batch["trained_tokens_per_example"]
        assert per_example.dtype == torch.long and per_example.tolist() == expected_counts(samples, padding_free)
        assert type(batch["num_items_in_batch"]) is int and batch["num_items_in_batch"] == int(per_example.sum())
        assert batch["num_items_in_batch"] == (batch["labels"][..., 1:] != IGNORE_INDEX).sum()  # the Trainer's count


@pytest.mark.parametrize("train_on_all", [False, True])
@pytest.mark.parametrize("collate", [collate_padding_free, collate_padded, collate_4d_mask])
def test_transformers_loss_divides_by_the_same_count(collate, train_on_all: bool) -> None:  # type: ignore[no-untyped-def]
    """ForCausalLMLoss given num_items_in_batch (sum / count) equals its own mean only if the counts agree."""
    batch = collate(samples_of(9, 3, 32, "wrap", train_on_all))
    logits = torch.randn((*batch["labels"].shape, VOCAB), generator=torch.Generator().manual_seed(0))
    count = batch["num_items_in_batch"]
    mean = loss_utils.ForCausalLMLoss(logits, batch["labels"], VOCAB).item()
    given = loss_utils.ForCausalLMLoss(logits, batch["labels"], VOCAB, num_items_in_batch=count).item()
    off_by_one = loss_utils.ForCausalLMLoss(logits, batch["labels"], VOCAB, num_items_in_batch=count + 1).item()
    assert given == pytest.approx(mean, rel=1e-6)
    assert off_by_one != pytest.approx(mean, rel=1e-6)


def test_padded_rows_without_seq_lens_still_count_the_batch() -> None:
    """The Trainer drops seq_lens unless remove_unused_columns=False: the batch total does not need it."""
    samples = samples_of(6, 4, 32, "wrap", False)
    batch = collate_padded([{k: v for k, v in s.items() if k != "seq_lens"} for s in samples])
    assert "trained_tokens_per_example" not in batch
    assert batch["num_items_in_batch"] == collate_padded(samples)["num_items_in_batch"]


def test_trained_tokens_falls_back_to_the_shifted_labels_and_says_what_is_missing() -> None:
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, IGNORE_INDEX], [7, 8, IGNORE_INDEX, IGNORE_INDEX]])
    assert trained_tokens({"labels": labels}) == 3
    assert trained_tokens({"labels": labels, "num_items_in_batch": torch.tensor(9)}) == 9  # a tensor too
    assert trained_tokens({"labels": labels, "num_items_in_batch": 8}) == 8
    with pytest.raises(KeyError, match="neither 'num_items_in_batch' nor 'labels'"):
        trained_tokens({"input_ids": labels})


# ------------------------------------------------------------------------------------------ accumulation steps


@pytest.fixture(scope="module")
def dataset_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("loss"))
    write_dataset(url, {"train": make_examples(60, seed=8)}, max_length=32, rows_per_shard=6)
    return url


def loader(url: str) -> PackedDataLoader:
    return PackedDataLoader(PackedDataset(url, batch_size=3, seed=1), collate_fn=collate_padding_free)


def test_accumulation_steps_group_one_pass_with_each_groups_total(dataset_url: str) -> None:
    batches = list(loader(dataset_url))
    steps = list(loader(dataset_url).accumulation_steps(4))
    assert len(batches) % 4, "the last group must be a short one for this test"
    assert [len(step.batches) for step in steps] == [4] * (len(batches) // 4) + [len(batches) % 4]
    grouped = [batch for step in steps for batch in step.batches]
    assert [b["input_ids"].tolist() for b in grouped] == [b["input_ids"].tolist() for b in batches]
    for step in steps:
        assert step.num_items_in_batch == sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in step.batches)
    with pytest.raises(ValueError, match="n >= 1"):
        next(loader(dataset_url).accumulation_steps(0))


def test_a_state_saved_between_accumulation_steps_resumes_at_the_next_step(dataset_url: str) -> None:
    first = loader(dataset_url)
    steps = first.accumulation_steps(2)
    next(steps)
    state = first.state_dict()
    following = next(steps)
    assert state["samples_seen"] == 2 * 3
    resumed = loader(dataset_url)
    resumed.load_state_dict(state)
    again = next(resumed.accumulation_steps(2))
    assert [b["input_ids"].tolist() for b in again.batches] == [b["input_ids"].tolist() for b in following.batches]
    assert again.num_items_in_batch == following.num_items_in_batch
