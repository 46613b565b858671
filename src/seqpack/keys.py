"""The order of the global shuffle and the validation hold-out, both decided by hashing an example's content.

Every example gets a 16-byte seeded BLAKE2b key: sorting by key is the shuffle, independent of runner, worker
count and input order. The validation split is chosen by a hash of the text (not the seed), so it is stable
across seeds and duplicates stay together. Pure: no Beam.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

SPLIT_SALT = b"seqpack-validation-split"


def choose_split(text: str, validation_fraction: float) -> str:
    """Hold out an example by a hash of its text: stable across seeds and runs, and duplicates stay together."""
    if validation_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=SPLIT_SALT).digest()
    return "validation" if int.from_bytes(digest, "big") / 2**64 < validation_fraction else "train"


_NO_PREFIX_MASK = b"\xff\xff\xff\xff"


def _salt(seed: int) -> bytes:
    return seed.to_bytes(16, "big", signed=True)


def example_key(ids: np.ndarray | memoryview, mask: int | bytes, piece: int, seed: int) -> bytes:
    """A seeded content hash: the order of the global shuffle, independent of runner and worker count.

    ``ids`` are int32 token ids (an array, or their bytes); ``mask`` the masked-prefix length, or for
    conversations the packed bits of the loss mask; ``piece`` the index of the piece of a split example. The seed
    is BLAKE2b's salt and the piece and mask its personalization, so a short example is hashed in one call.
    """
    data = ids.tobytes() if isinstance(ids, np.ndarray) else ids
    person = piece.to_bytes(4, "big") + (_NO_PREFIX_MASK if isinstance(mask, bytes) else mask.to_bytes(4, "big"))
    digest = hashlib.blake2b(data, digest_size=16, salt=_salt(seed), person=person)
    if isinstance(mask, bytes):
        digest.update(mask)
    return digest.digest()


def example_keys(ids: np.ndarray, offsets: np.ndarray, n_masked: np.ndarray, seed: int) -> bytes:
    """``example_key`` of many whole (piece 0) pair examples laid out flat, concatenated. Each key continues a
    copy of a hash already set up with the seed and the example's masked length (few distinct ones): copying a
    state costs less than setting one up, 0.65 µs a key instead of 1.05 on short examples."""
    data = memoryview(np.ascontiguousarray(ids, dtype=np.int32)).cast("B")
    bounds = (offsets * 4).tolist()
    salt, first = _salt(seed), bytes(4)
    started: dict[int, Any] = {}
    keys = []
    for lo, hi, masked in zip(bounds, bounds[1:], n_masked.tolist(), strict=False):
        start = started.get(masked)
        if start is None:
            start = started[masked] = hashlib.blake2b(digest_size=16, salt=salt,
                                                      person=first + masked.to_bytes(4, "big"))
        digest = start.copy()
        digest.update(data[lo:hi])
        keys.append(digest.digest())
    return b"".join(keys)
