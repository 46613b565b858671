"""Dedup key files (``vNNNNNN/dedup/keys-PPPPP.bin``): the content keys of a generation's records, so that a
later ``--append --dedup exact`` drops a pair an earlier generation already holds without reading its texts.

A key is the 16-byte blake2b digest of a rendered record without its origin (``transforms.dedup.content_key``).
Key ``k`` belongs to partition ``partition_of(k)`` (its first four bytes, big-endian, modulo
``layout.DEDUP_PARTITIONS``); a partition's file is its keys, each once, sorted bytewise and concatenated: no
header, 16 bytes per key. Same keys, same bytes, whoever writes them.

    data = encode_keys(keys)                       # one partition's file
    list(decode_keys(data, where="keys-00003.bin"))
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from seqpack.schemas.layout import DEDUP_PARTITIONS
from seqpack.schemas.manifest import DatasetFormatError

KEY_BYTES = 16

_AS_SORTABLE = np.dtype([("high", ">u8"), ("low", ">u8")])
"""A key as two big-endian integers: their order is the keys' bytewise order, and numpy sorts them without a
Python object per key (a partition may hold millions)."""


def partition_of(key: bytes) -> int:
    """The partition of a key: a fixed function of the key alone, the same for every writer and reader."""
    return int.from_bytes(key[:4], "big") % DEDUP_PARTITIONS


def encode_keys(keys: Iterable[bytes]) -> bytes:
    """A key file's bytes: ``keys`` (of one partition) sorted, each once."""
    buffer = bytearray()
    for key in keys:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a dedup key is {KEY_BYTES} bytes, not {len(key)}")
        buffer += key
    return np.unique(np.frombuffer(bytes(buffer), dtype=_AS_SORTABLE)).tobytes()


def check_size(size: int, *, where: str) -> None:
    """A key file holds whole keys; one that does not is damaged (an error naming it and how to fix it)."""
    if size % KEY_BYTES:
        raise DatasetFormatError(
            f"{where} is damaged: {size:,} bytes is not a whole number of {KEY_BYTES}-byte keys; restore it "
            "from a copy of the dataset, or rebuild the dataset (seqpack run --rebuild)"
        )


def decode_keys(data: bytes, *, where: str) -> Iterator[bytes]:
    """The keys of a key file (or of a part of one that starts at a key); a damaged file is an error naming it."""
    check_size(len(data), where=where)
    for start in range(0, len(data), KEY_BYTES):
        yield data[start : start + KEY_BYTES]
