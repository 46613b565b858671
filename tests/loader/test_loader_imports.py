"""The loader's pure-numpy parts work without torch, and its torch parts say how to install it when it is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

import seqpack.loader

WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError, as when it is not installed
import seqpack.dataset
import seqpack.loader.order
from seqpack.loader import EpochOrder, OrderSpec, data_files
EpochOrder([4, 4], OrderSpec(batch_size=2), epoch=0).stream_rows([0, 1])
try:
    from seqpack.loader import PackedDataset
except ImportError as error:
    print(error)
else:
    raise SystemExit("PackedDataset imported without torch")
"""


def test_the_order_and_the_dataset_need_no_torch_and_the_dataset_class_names_the_extra() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "seqpack.loader.PackedDataset needs PyTorch, which is not installed: pip install 'seqpack[loader]'"
    )


def test_the_public_names_are_there_with_torch() -> None:
    from seqpack.loader import PackedDataLoader, PackedDataset, collate_padding_free
    from seqpack.loader.collate import collate_padding_free as defined
    from seqpack.loader.dataloader import PackedDataLoader as loader_class
    from seqpack.loader.packed import PackedDataset as dataset_class

    assert (PackedDataset, PackedDataLoader, collate_padding_free) == (dataset_class, loader_class, defined)
    assert set(seqpack.loader.__all__) <= set(dir(seqpack.loader))
    for name in seqpack.loader.__all__:
        assert getattr(seqpack.loader, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'packed_dataset'"):
        seqpack.loader.packed_dataset  # noqa: B018
