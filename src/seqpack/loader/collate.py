"""Turn a list of block samples into model inputs, for the three ways causal LMs are trained on packed data.

- :func:`collate_padding_free`: one 1×T row without padding, plus FlashAttention varlen arguments. The
  fastest; made for ``attn_implementation="flash_attention_2"`` (which reads ``cu_seq_lens_*``), and exact in
  transformers 5 with ``"sdpa"``/``"eager"`` too (they detect packing from the restarting ``position_ids``).
- :func:`collate_4d_mask`: B×L rows with a B×1×L×L block-diagonal causal mask, exact with any attention
  that takes a 4D mask (``"sdpa"``, ``"eager"``).
- :func:`collate_padded`: B×L rows with the usual 2D ``attention_mask``. The 2D mask hides padding only:
  examples packed into one row attend to each other, so use it for ``--packing none`` datasets or when
  that cross-attention is wanted.

Every batch also carries the count that normalizes the loss: ``num_items_in_batch`` (an int), the label
positions the causal LM loss counts once transformers shifts the labels by one, which is what
``ForCausalLMLoss`` divides the summed loss by when given it (the Trainer computes the same count and passes
it, summed over a gradient-accumulation step); and ``trained_tokens_per_example``, the same count per example
(per ``seq_lens`` segment, in order), as an int64 tensor. transformers models take both as keyword arguments
(the second is ignored), so ``model(**batch)`` still works. The count is an int, not a 0-d tensor, because
accelerate (under the Trainer) concatenates a batch's tensors along dim 0, which a 0-d tensor cannot do.

In a mixture (a dataset whose manifest lists ``sources``) samples carry ``source_id``, and every collate passes it
on as ``source_id``: an int64 tensor with one entry per example, aligned with ``trained_tokens_per_example``, for
a per-source loss or weight. Without the column there is no ``source_id`` in the batch.

Samples may be dicts of tensors (from :class:`PackedDataset`), numpy arrays or lists (from ``datasets``).
Every collate is a module-level function, so it pickles into DataLoader workers; bind options with
``functools.partial``. Use ``DataLoader(pin_memory=True)`` for pinned host memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from seqpack import IGNORE_INDEX
from seqpack.schemas.columns import SOURCE_ID

Batch = dict[str, Any]
_TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids")


def _rows(samples: Sequence[Mapping[str, Any]], name: str) -> list[torch.Tensor]:
    _require(samples, name)
    return [torch.as_tensor(sample[name]) for sample in samples]


def _numpy_rows(samples: Sequence[Mapping[str, Any]], name: str) -> list[np.ndarray]:
    """The column as numpy views: numpy's per-call cost is a fraction of torch's on these small rows."""
    _require(samples, name)
    return [_numpy(sample[name]) for sample in samples]


def _require(samples: Sequence[Mapping[str, Any]], name: str) -> None:
    if name not in samples[0]:
        hint = (
            " transformers.Trainer drops it unless TrainingArguments(remove_unused_columns=False)."
            if name == "seq_lens"
            else ""
        )
        raise KeyError(f"samples have no {name!r} column (they have {sorted(samples[0])}).{hint}")


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _real_lengths(seq_lens: Sequence[Any]) -> list[int]:
    """Real tokens per row: the sum of its examples' lengths (they are a prefix of the row)."""
    return [sum(lens.tolist()) for lens in seq_lens]


def _trained_counts(trained: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many positions of ``trained`` (flat, bool) lie in each ``[start, end)`` segment."""
    before = np.zeros(len(trained) + 1, dtype=np.int64)
    np.cumsum(trained, out=before[1:])
    return before[ends] - before[starts]


def collate_padding_free(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """Concatenate the real tokens of every row into one 1×T sequence, with varlen attention arguments.

    ``labels`` is -100 at every example's first token, so no example learns to predict the next one's
    start (the model shifts the labels of the whole row by one, across example boundaries). The row's first
    label, the only one the shift drops, is such a start, so ``num_items_in_batch`` is simply the labels that
    are not -100. There is no ``attention_mask``: an all-ones mask would make attention see one long sequence.
    ``use_cache=False`` is included because transformers skips its packed-sequence detection (what keeps
    SDPA/eager attention inside each example) whenever a KV cache exists, and models build one by default.

        dl = DataLoader(ds, batch_size=8, collate_fn=collate_padding_free)
        loss = model(**next(iter(dl))).loss
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    seq_lens_rows = _numpy_rows(samples, "seq_lens")
    lengths = _real_lengths(seq_lens_rows)
    seq_lens = np.concatenate(seq_lens_rows)
    tokens, segments = sum(lengths), len(seq_lens)
    counts_at = 3 * tokens  # then trained_tokens_per_example, cu_seq_lens (int32)
    buffer = _batch_buffer(counts_at + segments + (segments + 2) // 2)
    flat = buffer.numpy()
    cu_seq_lens = buffer[counts_at + segments :].view(torch.int32)[: segments + 1]
    cu_seq_lens[0] = 0
    np.cumsum(seq_lens, out=cu_seq_lens.numpy()[1:])
    batch: Batch = {}
    for i, name in enumerate(("input_ids", "labels", "position_ids")):
        rows = _numpy_rows(samples, name)
        out = flat[i * tokens : (i + 1) * tokens]
        np.concatenate([row[:length] for row, length in zip(rows, lengths, strict=True)], out=out)
        batch[name] = buffer[i * tokens : (i + 1) * tokens][None]
    cu = cu_seq_lens.numpy()
    flat[tokens + cu[:-1]] = IGNORE_INDEX  # the labels' example starts
    per_example = flat[counts_at : counts_at + segments]
    per_example[:] = _trained_counts(flat[tokens : 2 * tokens] != IGNORE_INDEX, cu[:-1], cu[1:])
    batch.update(
        num_items_in_batch=int(per_example.sum()),
        trained_tokens_per_example=buffer[counts_at : counts_at + segments],
    )
    _add_source_ids(batch, samples)
    longest = int(seq_lens.max()) if segments else 0
    batch.update(
        cu_seq_lens_q=cu_seq_lens,
        cu_seq_lens_k=cu_seq_lens,
        max_length_q=longest,
        max_length_k=longest,
        use_cache=False,
    )
    return batch


def _add_source_ids(batch: Batch, samples: Sequence[Mapping[str, Any]]) -> None:
    """A mixture's ``source_id`` per example, in ``seq_lens`` order (nothing when the samples have none)."""
    if SOURCE_ID in samples[0]:
        ids = np.concatenate([np.asarray(_numpy(sample[SOURCE_ID]), dtype=np.int64) for sample in samples])
        batch[SOURCE_ID] = torch.from_numpy(ids)


def _batch_buffer(words: int) -> torch.Tensor:
    """One int64 buffer for a whole batch, in shared memory when a DataLoader worker builds it.

    A worker sends each tensor's storage through its own shared-memory segment and file descriptor, which
    costs far more than the copy; views of one buffer travel as one segment.
    """
    buffer = torch.empty(words, dtype=torch.long)
    return buffer.share_memory_() if get_worker_info() is not None else buffer


def collate_padded(
    samples: Sequence[Mapping[str, Any]],
    *,
    pad_id: int = 0,
    pad_to_multiple_of: int | None = None,
    mask: str = "2d",
    mask_dtype: torch.dtype = torch.float32,
) -> Batch:
    """Stack rows into B×L int64 tensors, padding rows shorter than the longest (``--packing none``).

    ``mask="2d"`` gives the usual B×L ``attention_mask`` (1 real, 0 padding); ``mask="4d"`` gives the
    block-diagonal causal mask of :func:`block_causal_mask` instead, which keeps packed examples apart.
    Labels are kept as stored: -100 at example starts, unless the dataset was built with ``--train-on all``.
    ``num_items_in_batch`` counts ``labels[:, 1:]`` (the model shifts each row, so its first label never
    counts); ``trained_tokens_per_example`` needs the ``seq_lens`` column and is left out without it (the
    Trainer removes that column unless ``TrainingArguments(remove_unused_columns=False)``).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    if mask not in ("2d", "4d"):
        raise ValueError(f"mask must be '2d' or '4d', not {mask!r}")
    columns = {name: _rows(samples, name) for name in _TOKEN_COLUMNS}
    seq_lens = _numpy_rows(samples, "seq_lens") if "seq_lens" in samples[0] else None
    width = max(len(row) for row in columns["input_ids"])
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    fills = {"input_ids": pad_id, "labels": IGNORE_INDEX, "attention_mask": 0, "position_ids": 0}
    words = len(_TOKEN_COLUMNS) * len(samples) * width
    segments = sum(len(lens) for lens in seq_lens) if seq_lens is not None else 0
    buffer = _batch_buffer(words + segments)
    tokens = buffer[:words].view(len(_TOKEN_COLUMNS), len(samples), width)
    batch: Batch = {}
    for out, (name, rows) in zip(tokens, columns.items(), strict=True):
        out.fill_(fills[name])
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        batch[name] = out
    trained = batch["labels"].numpy() != IGNORE_INDEX
    trained[:, :1] = False  # the model shifts each row: its first label is never predicted
    batch["num_items_in_batch"] = int(trained.sum())
    if seq_lens is not None:
        ends = np.concatenate([i * width + np.cumsum(lens) for i, lens in enumerate(seq_lens)]).astype(np.int64)
        starts = ends - np.concatenate(seq_lens)
        counts = buffer[words:]
        counts.numpy()[:] = _trained_counts(trained.reshape(-1), starts, ends)
        batch["trained_tokens_per_example"] = counts
    _add_source_ids(batch, samples)
    if mask == "4d":
        batch["attention_mask"] = block_causal_mask(_rows(samples, "seq_lens"), width, dtype=mask_dtype)
    return batch


def collate_4d_mask(
    samples: Sequence[Mapping[str, Any]], *, pad_id: int = 0, dtype: torch.dtype = torch.float32
) -> Batch:
    """``collate_padded`` with a B×1×L×L block-diagonal causal mask: exact for packed rows with SDPA/eager.

    The mask is additive float (0 = attend, the dtype's minimum = masked), which transformers passes
    unchanged to both eager attention (adds it to the scores) and SDPA (a float ``attn_mask``). Use the
    model's dtype (``dtype=torch.bfloat16`` for a bf16 model): SDPA needs the mask and queries to match.
    It costs B·L² elements per batch; prefer :func:`collate_padding_free` for long blocks.
    """
    return collate_padded(samples, pad_id=pad_id, mask="4d", mask_dtype=dtype)


def block_causal_mask(seq_lens: Sequence[torch.Tensor], width: int, *, dtype: torch.dtype) -> torch.Tensor:
    """A B×1×L×L additive mask letting each token see only earlier tokens of its own example.

    Padding tokens see only themselves, so no softmax row is empty (an empty row gives NaN, and NaN
    gradients even where the loss ignores the position).
    """
    segments = torch.empty((len(seq_lens), width), dtype=torch.long)
    for i, lens in enumerate(seq_lens):
        lens = torch.as_tensor(lens, dtype=torch.long)
        real = int(lens.sum())
        segments[i, :real] = torch.repeat_interleave(torch.arange(len(lens)), lens)
        segments[i, real:] = -1 - torch.arange(width - real)
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril_()
    allowed = (same & causal)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
