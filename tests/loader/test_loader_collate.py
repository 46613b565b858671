"""Collates: padding-free rows keep every real token once with the right boundaries; masks match their rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shardgen import Example, blocks_table, make_examples, pack, write_dataset

from seqpack import IGNORE_INDEX
from seqpack.loader import (
    PackedDataLoader,
    PackedDataset,
    block_causal_mask,
    collate_4d_mask,
    collate_padded,
    collate_padding_free,
)


def samples_of(examples: list[Example], max_length: int, packing: str = "wrap") -> list[dict[str, torch.Tensor]]:
    table = blocks_table(pack(examples, max_length, packing), max_length, padded=packing != "none")
    return [{name: torch.as_tensor(value) for name, value in row.items()} for row in table.to_pylist()]


batches = st.builds(
    lambda count, seed, max_length: samples_of(make_examples(count, seed=seed, max_len=max_length), max_length),
    st.integers(1, 12),
    st.integers(0, 10_000),
    st.integers(24, 48),
)


@settings(max_examples=100, deadline=None)
@given(batches)
def test_padding_free_keeps_every_real_token_once_with_example_boundaries(samples: list[dict]) -> None:
    batch = collate_padding_free(samples)
    real = [s["attention_mask"].bool() for s in samples]
    expected_ids = torch.cat([s["input_ids"][m] for s, m in zip(samples, real, strict=True)])
    seq_lens = torch.cat([s["seq_lens"] for s in samples])
    cu = batch["cu_seq_lens_q"]
    assert set(batch) == {
        "input_ids",
        "labels",
        "position_ids",
        "cu_seq_lens_q",
        "cu_seq_lens_k",
        "max_length_q",
        "max_length_k",
        "use_cache",
        "num_items_in_batch",
        "trained_tokens_per_example",
    }
    assert batch["input_ids"].shape == (1, len(expected_ids)) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["input_ids"][0], expected_ids.long())
    assert cu.dtype == torch.int32 and torch.equal(cu, batch["cu_seq_lens_k"])
    assert cu[0] == 0 and torch.equal(cu[1:], torch.cumsum(seq_lens, 0).int())
    assert batch["max_length_q"] == batch["max_length_k"] == int(seq_lens.max())
    starts = cu[:-1].long()
    assert (batch["labels"][0, starts] == IGNORE_INDEX).all()
    expected_positions = torch.cat([torch.arange(int(n)) for n in seq_lens])
    assert torch.equal(batch["position_ids"][0], expected_positions)
    others = torch.ones(len(expected_ids), dtype=torch.bool)
    others[starts] = False
    stored = torch.cat([s["labels"][m] for s, m in zip(samples, real, strict=True)]).long()
    assert torch.equal(batch["labels"][0][others], stored[others])


def test_padding_free_sets_labels_at_example_starts_even_if_the_data_did_not() -> None:
    samples = samples_of(make_examples(6, seed=1), 32)
    for sample in samples:
        sample["labels"] = sample["input_ids"].clone()
    batch = collate_padding_free(samples)
    assert (batch["labels"][0, batch["cu_seq_lens_q"][:-1].long()] == IGNORE_INDEX).all()


def test_padded_pads_ragged_rows_and_rounds_up() -> None:
    samples = samples_of(make_examples(5, seed=2, max_len=20), 32, packing="none")
    batch = collate_padded(samples, pad_id=7, pad_to_multiple_of=8)
    longest = max(len(s["input_ids"]) for s in samples)
    width = -(-longest // 8) * 8
    tokens = ("input_ids", "labels", "attention_mask", "position_ids")
    assert {k: tuple(batch[k].shape) for k in tokens} == {k: (5, width) for k in tokens}
    for i, sample in enumerate(samples):
        n = len(sample["input_ids"])
        assert torch.equal(batch["input_ids"][i, :n], sample["input_ids"].long())
        assert (batch["input_ids"][i, n:] == 7).all() and (batch["labels"][i, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][i].sum() == n


def test_padded_accepts_numpy_and_lists_as_from_datasets() -> None:
    samples = samples_of(make_examples(4, seed=3), 32)
    as_numpy = [{k: v.numpy() for k, v in s.items()} for s in samples]
    as_lists = [{k: v.tolist() for k, v in s.items()} for s in samples]
    for other in (as_numpy, as_lists):
        for collate in (collate_padded, collate_padding_free):
            got, want = collate(other), collate(samples)
            assert all(torch.equal(got[k], want[k]) if torch.is_tensor(want[k]) else got[k] == want[k] for k in want)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4), min_size=1, max_size=3), st.integers(0, 4))
def test_block_causal_mask_follows_its_rule(rows: list[list[int]], extra: int) -> None:
    width = max(sum(r) for r in rows) + extra
    mask = block_causal_mask([torch.tensor(r) for r in rows], width, dtype=torch.float32)
    assert mask.shape == (len(rows), 1, width, width)
    for b, lens in enumerate(rows):
        example = [i for i, n in enumerate(lens) for _ in range(n)]
        for q in range(width):
            for k in range(width):
                real = q < len(example) and k < len(example)
                allowed = (k <= q and example[k] == example[q]) if real else q == k  # padding: itself only
                assert (mask[b, 0, q, k] == 0) == allowed


def test_4d_collate_uses_the_requested_dtype() -> None:
    samples = samples_of(make_examples(5, seed=4), 32)
    batch = collate_4d_mask(samples, dtype=torch.bfloat16)
    assert batch["attention_mask"].dtype == torch.bfloat16
    assert batch["attention_mask"].min() == torch.finfo(torch.bfloat16).min
    assert batch["input_ids"].shape == (len(samples), 32)


def test_empty_batches_and_unknown_masks_are_refused() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate_padding_free([])
    with pytest.raises(ValueError, match="mask must be"):
        collate_padded(samples_of(make_examples(2, seed=5), 32), mask="3d")


def test_real_tokens_are_the_row_prefix_in_generated_data() -> None:
    """The collates rely on it; the format promises it."""
    for sample in samples_of(make_examples(30, seed=6), 40):
        real = int(sample["seq_lens"].sum())
        assert np.all(sample["attention_mask"][:real].numpy() == 1) and not sample["attention_mask"][real:].any()


@pytest.mark.parametrize("collate", [collate_padding_free, collate_4d_mask, collate_padded])
def test_batches_built_in_workers_equal_batches_built_in_process(tmp_path: Path, collate) -> None:  # type: ignore[no-untyped-def]
    """Workers build batches in shared memory (one segment per batch); the values must not change."""
    write_dataset(str(tmp_path), {"train": make_examples(60, seed=8)}, max_length=32, rows_per_shard=6)

    def batches(workers: int) -> list[dict]:
        dataset = PackedDataset(str(tmp_path), batch_size=3)
        return list(PackedDataLoader(dataset, num_workers=workers, collate_fn=collate))

    in_process, from_workers = batches(0), batches(2)
    assert len(in_process) == len(from_workers) > 2
    for mine, theirs in zip(in_process, from_workers, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]) if torch.is_tensor(value) else value == theirs[key]
