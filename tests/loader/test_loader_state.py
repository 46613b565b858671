"""A saved loader state is data from a file: every malformed field is refused, naming it, and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shardgen import make_examples, write_dataset

from seqpack.loader import PackedDataset
from seqpack.loader.state import MAX_EPOCH


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PackedDataset:
    root = tmp_path_factory.mktemp("state")
    write_dataset(str(root), {"train": make_examples(200, seed=4)}, rows_per_shard=10)
    return PackedDataset(str(root), seed=1)


def without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != key}


PAST_THE_END = "one more than num_samples"
BAD_VALUES: list[tuple[str, Any, type[Exception], str]] = [
    ("samples_seen", -5, ValueError, r"'samples_seen' is -5; it must be in \[0, {n}\]"),
    ("samples_seen", PAST_THE_END, ValueError, r"'samples_seen' is {n+1}; it must be in \[0, {n}\]"),
    ("samples_seen", 2**70, ValueError, r"'samples_seen' is 1180591620717411303424; it must be in \[0, {n}\]"),
    ("samples_seen", None, TypeError, "'samples_seen' must be an integer, not None"),
    ("samples_seen", 3.0, TypeError, "'samples_seen' must be an integer, not 3.0"),
    ("samples_seen", True, TypeError, "'samples_seen' must be an integer, not True"),
    ("samples_seen", "3", TypeError, "'samples_seen' must be an integer, not '3'"),
    ("epoch", -1, ValueError, r"'epoch' is -1; it must be in \[0, 2,147,483,647\]"),
    ("epoch", 2**70, ValueError, r"'epoch' is 1180591620717411303424; it must be in \[0, 2,147,483,647\]"),
    ("epoch", None, TypeError, "'epoch' must be an integer, not None"),
    ("epoch", False, TypeError, "'epoch' must be an integer, not False"),
    ("num_samples", "12", TypeError, "'num_samples' must be an integer"),
    ("num_samples", -1, ValueError, r"num_samples=-1 \(this dataset: {n}\)"),
    ("seed", 1.5, TypeError, "'seed' must be an integer, not 1.5"),
    ("seed", 2, ValueError, r"seed=2 \(this dataset: 1\)"),
    ("batch_size", True, TypeError, "'batch_size' must be an integer, not True"),
    ("lanes", None, TypeError, "'lanes' must be an integer"),
    ("shuffle_buffer", "2048", TypeError, "'shuffle_buffer' must be an integer"),
    ("rank", 0.0, TypeError, "'rank' must be an integer"),
    ("world_size", [1], TypeError, "'world_size' must be an integer"),
    ("shuffle", 1, TypeError, "'shuffle' must be True or False, not 1"),
    ("split", None, TypeError, "'split' must be a string, not None"),
    ("split", "validation", ValueError, r"split='validation' \(this dataset: 'train'\)"),
    ("data", 12345, TypeError, "'data' must be a string, not 12345"),
    ("data", "0" * 16, ValueError, r"data='0000000000000000' \(this dataset: "),
    ("equalize", None, TypeError, "'equalize' must be a string, not None"),
    ("generations", [], TypeError, "'generations' must be a non-empty list of generation ids, not"),
    ("generations", "0", TypeError, "'generations' must be a non-empty list of generation ids, not '0'"),
    ("generations", [0.0], TypeError, "'generations' item must be an integer, not 0.0"),
    ("generations", [0, 0], ValueError, r"'generations' is \[0, 0\]; it must list distinct generation ids"),
    ("generations", [-1], ValueError, r"'generations' is \[-1\]; it must list distinct generation ids"),
]


@pytest.mark.parametrize(("field", "value", "error", "message"), BAD_VALUES)
def test_a_bad_field_is_refused_by_name_and_changes_nothing(
    dataset: PackedDataset, field: str, value: Any, error: type[Exception], message: str
) -> None:
    n = dataset.num_samples
    if value is PAST_THE_END:
        value = n + 1
    message = message.replace("{n+1}", str(n + 1)).replace("{n}", f"{n:,}")
    good = {**dataset.state_dict(), "epoch": 2, "samples_seen": 7}
    dataset.load_state_dict(good)
    with pytest.raises(error, match=message):
        dataset.load_state_dict({**good, field: value})
    assert dataset.state_dict() == good


@pytest.mark.parametrize("state", [None, [], "state", 3, ("epoch", 1)])
def test_a_state_that_is_not_a_dict_is_refused(dataset: PackedDataset, state: Any) -> None:
    with pytest.raises(TypeError, match="must be the dict that state_dict.. returned, not"):
        dataset.load_state_dict(state)


@pytest.mark.parametrize("field", ["epoch", "samples_seen", "data", "seed", "shuffle"])
def test_a_missing_field_is_named(dataset: PackedDataset, field: str) -> None:
    with pytest.raises(ValueError, match=f"the loader state has no '{field}'"):
        dataset.load_state_dict(without(dataset.state_dict(), field))


def test_every_field_of_state_dict_is_checked(dataset: PackedDataset) -> None:
    checked = {field for field, *_ in BAD_VALUES}
    assert checked == set(dataset.state_dict())


def test_good_states_still_apply_numpy_integers_and_extra_keys_included(dataset: PackedDataset) -> None:
    n = dataset.num_samples
    base = dataset.state_dict()
    for epoch, seen in [(0, 0), (3, n - 1), (MAX_EPOCH - 1, 0)]:
        dataset.load_state_dict({**base, "epoch": np.int64(epoch), "samples_seen": np.int32(seen), "note": "x"})
        assert (dataset.state_dict()["epoch"], dataset.state_dict()["samples_seen"]) == (epoch, seen)
    dataset.load_state_dict({**base, "epoch": 4, "samples_seen": n})  # a finished epoch is the next one's start
    assert (dataset.state_dict()["epoch"], dataset.state_dict()["samples_seen"]) == (5, 0)


def test_an_epoch_resumed_at_its_last_sample_yields_no_more_than_the_epoch(tmp_path: Path) -> None:
    """The attack: samples_seen=-5 made an epoch yield 5 samples more than it has."""
    write_dataset(str(tmp_path), {"train": make_examples(100, seed=2)}, rows_per_shard=10)
    dataset = PackedDataset(str(tmp_path))
    with pytest.raises(ValueError, match="samples_seen"):
        dataset.load_state_dict({**dataset.state_dict(), "samples_seen": -5})
    assert sum(1 for _ in dataset) == len(dataset)


@pytest.mark.parametrize(
    ("epoch", "error"), [(-1, ValueError), (2**70, ValueError), (None, TypeError), (1.0, TypeError)]
)
def test_set_epoch_refuses_what_load_state_dict_refuses(dataset: PackedDataset, epoch: Any, error: type) -> None:
    with pytest.raises(error, match="set_epoch's epoch"):
        dataset.set_epoch(epoch)
