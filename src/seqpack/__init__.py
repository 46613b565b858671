"""seqpack: source/target pairs in, packed and masked training shards out."""

__version__ = "0.1.0"

IGNORE_INDEX = -100
"""Label value that the loss ignores (PyTorch's CrossEntropyLoss default, as in Alpaca)."""
