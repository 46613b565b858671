"""Which generations a loader covers: the fingerprint of their data, the key workers compare with the main
process's, and the generations a saved state names (no torch).

A ``PackedDataset`` that follows a growing dataset covers, in every epoch, every generation up to some id (the
generations present when the epoch started); a state records them, and a resumed run covers the same ones.

    ids = generations_for_state(state_generations(state), state, manifest, split="train", url="out/")
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from seqpack.dataset import ShardSet
from seqpack.dataset.manifest_io import split_shards
from seqpack.schemas import Manifest, ShardInfo


def generation_ids(generations: Any) -> list[int]:
    """The ``generations`` argument as sorted distinct ids, or an error saying what it must be."""
    if isinstance(generations, (str, bytes)) or not hasattr(generations, "__iter__"):
        raise TypeError(f"generations must be a list of generation ids (or None for all), not {generations!r}")
    ids = list(generations)
    if not ids or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in ids):
        raise ValueError(
            f"generations must be a non-empty list of generation ids (integers), not {ids!r}; None reads them all"
        )
    return sorted({int(i) for i in ids})


def fingerprint(shards: list[ShardInfo]) -> str:
    """The data's identity by content (each shard's sha256 and rows, in order), not by where it lies."""
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.sha256}:{shard.rows}\n".encode())
    return digest.hexdigest()[:16]


def path_fingerprint(shards: list[ShardInfo]) -> str:
    """What seqpack 0.1 called the fingerprint (paths and checksums): states saved by it still apply."""
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.path}:{shard.sha256}\n".encode())
    return digest.hexdigest()[:16]


def cover_key(shards: ShardSet) -> tuple[int, int]:
    """(newest generation id, a 60-bit digest of the ids and the data): two int64 that workers compare with the
    main process's to know whether they cover the same generations."""
    ids = shards.generations
    digest = hashlib.sha256(f"{ids}:{fingerprint(shards.shards)}".encode()).hexdigest()
    return ids[-1], int(digest[:15], 16)


def generations_for_state(
    wanted: list[int] | None, state: Mapping[str, Any], manifest: Manifest, *, split: str, url: str
) -> list[int]:
    """The generations of ``manifest`` that a following loader covers to resume ``state``.

    ``wanted`` is the state's ``generations`` (None for seqpack 0.x). Generations that are gone are looked for
    by content (the same data committed again under new ids); the result is every generation up to one id, as a
    following loader always covers. Raises ValueError naming the generations otherwise.
    """
    listed = [generation.id for generation in manifest.generations]
    gone = [] if wanted is None else [i for i in wanted if i not in listed]
    if wanted is None or gone:
        wanted = generations_holding(manifest, state, split) or wanted or listed
    gone = [i for i in wanted if i not in listed]
    if gone:
        raise ValueError(
            f"the loader state covers generations {wanted}, but {url} no longer has "
            f"{', '.join(map(str, gone))} (it has {listed}): they were replaced (`seqpack compact`, "
            "`seqpack run --overwrite`), so the rest of the state's epoch cannot be named. Start the next "
            "epoch with ds.set_epoch(epoch + 1), or resume on a copy of the dataset as it was."
        )
    up_to = [i for i in listed if i <= wanted[-1]]
    if wanted != up_to:
        raise ValueError(
            f"the loader state covers generations {wanted}, not every generation up to {wanted[-1]} ({up_to}): it "
            f"was saved by a dataset built with generations={wanted}; build this one so too"
        )
    return wanted


def generations_holding(manifest: Manifest, state: Mapping[str, Any], split: str) -> list[int] | None:
    """The first generations of ``manifest`` whose data is the state's (its ``data`` fingerprint), if any."""
    listed = [generation.id for generation in manifest.generations]
    for count in range(1, len(listed) + 1):
        shards = split_shards(manifest.restricted_to(listed[:count]), split)
        if state.get("data") in (fingerprint(shards), path_fingerprint(shards)):
            return listed[:count]
    return None
