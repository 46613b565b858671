"""Check a saved loader state before resuming from it: a checkpoint is data, and a bad one must not half-apply.

``PackedDataset.state_dict()`` is plain JSON-able data that users keep in checkpoints, edit and merge. A wrong
value must fail here, naming the field and what it may be, not later as an overflow, a crash in a worker or an
epoch with more samples than the data has.

    epoch, seen = check_state(state, dataset.state_dict())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_EPOCH = 2**31 - 1
"""Far beyond any training run; keeps ``epoch + 1`` inside the int64 the workers share."""

ORDER_KEYS = ("seed", "shuffle", "batch_size", "lanes", "shuffle_buffer", "rank", "world_size", "equalize")
"""The settings besides the data that decide the order (``OrderSpec``'s fields): a state applies only with them."""
MATCHING = (*ORDER_KEYS, "split", "data", "num_samples")
"""Fields that must equal the dataset's own for a state to apply."""
_INTS = ("epoch", "samples_seen", "num_samples", "seed", "batch_size", "lanes", "shuffle_buffer", "rank", "world_size")
_TYPES = {**dict.fromkeys(_INTS, "int"), "shuffle": "bool", **dict.fromkeys(("split", "data", "equalize"), "str")}
"""Every field of a state and its type."""


def check_state(state: Any, current: Mapping[str, Any], *, legacy_data: str | None = None) -> tuple[int, int]:
    """The ``(epoch, samples_seen)`` to resume from, once ``state`` is well formed and made for this data.

    ``current`` is the dataset's own ``state_dict()``; ``legacy_data`` is a fingerprint that older seqpack
    versions gave the same data. Raises TypeError or ValueError naming the field and what it may be.
    """
    _require_mapping(state)
    missing = [name for name in _TYPES if name not in state]
    if missing:
        raise ValueError(
            f"the loader state has no {', '.join(repr(m) for m in missing)}: it was not made by "
            f"PackedDataset.state_dict() (which gives {', '.join(_TYPES)})"
        )
    for name, kind in _TYPES.items():
        _require_type(state[name], f"loader state field {name!r}", kind)
    different = [
        f"{key}={state[key]!r} (this dataset: {current[key]!r})"
        for key in MATCHING
        if state[key] != current[key] and not (key == "data" and legacy_data is not None and state[key] == legacy_data)
    ]
    if different:
        raise ValueError(
            "cannot resume exactly: the state was saved with " + ", ".join(different) + ". Build the "
            "dataset (and DataLoader batch size) with the settings of the run that saved it."
        )
    epoch, seen = int(state["epoch"]), int(state["samples_seen"])
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"loader state field 'epoch' is {epoch}; it must be in [0, {MAX_EPOCH:,}]")
    if not 0 <= seen <= current["num_samples"]:
        raise ValueError(
            f"loader state field 'samples_seen' is {seen}; it must be in [0, {current['num_samples']:,}], the "
            "samples in one epoch of this rank"
        )
    return epoch, seen


def state_generations(state: Any) -> list[int] | None:
    """The ids of the generations a state covers, oldest first; None for a state of seqpack 0.x, which has no
    ``generations`` field (its dataset had one generation)."""
    _require_mapping(state)
    if "generations" not in state:
        return None
    value = state["generations"]
    what = "loader state field 'generations'"
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{what} must be a non-empty list of generation ids, not {value!r}")
    for item in value:
        _require_type(item, f"{what} item", "int")
    ids = [int(item) for item in value]
    if any(i < 0 for i in ids) or ids != sorted(set(ids)):
        raise ValueError(f"{what} is {ids}; it must list distinct generation ids (0 or more) in growing order")
    return ids


def check_epoch(epoch: Any) -> int:
    """An epoch number given to ``set_epoch``: an integer in [0, MAX_EPOCH]."""
    _require_type(epoch, "set_epoch's epoch", "int")
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"set_epoch's epoch is {epoch}; it must be in [0, {MAX_EPOCH:,}]")
    return int(epoch)


def _require_mapping(state: Any) -> None:
    if not isinstance(state, Mapping):
        raise TypeError(
            f"a loader state must be the dict that state_dict() returned, not {type(state).__name__}: pass "
            "checkpoint['data'] (or whatever key it was saved under), not the whole checkpoint or None"
        )


def _require_type(value: Any, name: str, kind: str) -> None:
    """Integers are Python or numpy ones, but not bools (``True == 1``) nor floats (``5.0`` means a broken file)."""
    is_bool = isinstance(value, (bool, np.bool_))
    if kind == "int" and (is_bool or not isinstance(value, (int, np.integer))):
        raise TypeError(f"{name} must be an integer, not {value!r} ({type(value).__name__})")
    if kind == "bool" and not is_bool:
        raise TypeError(f"{name} must be True or False, not {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
