"""Stream seqpack shards to PyTorch training: rank- and worker-aware, shuffled per epoch, resumable exactly.

    from seqpack.loader import PackedDataset, PackedDataLoader, collate_padding_free
    ds = PackedDataset("out/", split="train", seed=0, batch_size=8)
    dl = PackedDataLoader(ds, num_workers=4, collate_fn=collate_padding_free)
    for step, batch in enumerate(dl):
        loss = model(**batch).loss

Needs torch: ``pip install 'seqpack[loader]'``. See docs/loader.md.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("seqpack.loader needs PyTorch: pip install 'seqpack[loader]'") from exc

from seqpack.dataset import DatasetChangedError, data_files
from seqpack.loader.collate import (
    block_causal_mask,
    collate_4d_mask,
    collate_padded,
    collate_padding_free,
)
from seqpack.loader.dataloader import PackedDataLoader
from seqpack.loader.order import EpochOrder, OrderSpec
from seqpack.loader.packed import PackedDataset

__all__ = [
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
]
