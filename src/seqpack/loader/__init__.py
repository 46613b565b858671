"""Stream seqpack shards to PyTorch training: rank- and worker-aware, shuffled per epoch, resumable exactly.

    from seqpack.loader import PackedDataset, PackedDataLoader, collate_padding_free
    ds = PackedDataset("out/", split="train", seed=0, batch_size=8)
    dl = PackedDataLoader(ds, num_workers=4, collate_fn=collate_padding_free)
    for step, batch in enumerate(dl):
        loss = model(**batch).loss

Needs torch: ``pip install 'seqpack[loader]'``. See docs/loader.md.

The names that need torch are imported when first used (PEP 562), so the pure-numpy parts (the sample order in
:mod:`seqpack.loader.order`, the state checks in :mod:`seqpack.loader.state`) and ``data_files`` work without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seqpack.dataset import DatasetChangedError, data_files
from seqpack.loader.order import EpochOrder, OrderSpec

if TYPE_CHECKING:
    from seqpack.loader.collate import block_causal_mask, collate_4d_mask, collate_padded, collate_padding_free
    from seqpack.loader.dataloader import AccumulationStep, PackedDataLoader, trained_tokens
    from seqpack.loader.packed import PackedDataset

_NEED_TORCH = {
    "AccumulationStep": "seqpack.loader.dataloader",
    "PackedDataLoader": "seqpack.loader.dataloader",
    "PackedDataset": "seqpack.loader.packed",
    "block_causal_mask": "seqpack.loader.collate",
    "collate_4d_mask": "seqpack.loader.collate",
    "collate_padded": "seqpack.loader.collate",
    "collate_padding_free": "seqpack.loader.collate",
    "trained_tokens": "seqpack.loader.dataloader",
}
"""Each name that needs torch, and the module that defines it."""

__all__ = [
    "AccumulationStep",
    "DatasetChangedError",
    "EpochOrder",
    "OrderSpec",
    "PackedDataLoader",
    "PackedDataset",
    "block_causal_mask",
    "collate_4d_mask",
    "collate_padded",
    "collate_padding_free",
    "data_files",
    "trained_tokens",
]


def __getattr__(name: str) -> Any:
    """Import a name that needs torch on first use, or say how to install torch."""
    module = _NEED_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"seqpack.loader.{name} needs PyTorch, which is not installed: pip install 'seqpack[loader]'"
        ) from exc
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NEED_TORCH})
