"""The loader over a dataset that grows (``seqpack run --append``): an epoch covers the generations present when
it starts, new ones join at the next epoch, and a resumed run finishes its epoch over the ones it started with."""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from growing import commit, copy, halves
from shardgen import examples_in, make_examples, write_dataset

from seqpack.dataset import DatasetChangedError
from seqpack.loader import PackedDataLoader, PackedDataset
from seqpack.schemas import MANIFEST_NAME

pytestmark = pytest.mark.filterwarnings("ignore:.*suggested max number of worker")

Row = tuple[bytes, ...]
SETTINGS: dict[str, Any] = {"seed": 5, "batch_size": 2, "shuffle_buffer": 8}
HEAD = 7
"""Samples read before the append (and where the saved state stands)."""
HEAD_BATCHES = 3


def row_keys(samples: Sequence[dict]) -> list[Row]:
    """A collate that keeps each row's example identities (picklable: module level)."""
    return [tuple(examples_in(sample)) for sample in samples]


def rows(samples: Iterable[dict]) -> list[Row]:
    return [tuple(examples_in(sample)) for sample in samples]


def flat(batches: Iterable[list[Row]]) -> list[Row]:
    return [row for batch in batches for row in batch]


def loader(url: str, **kwargs: Any) -> PackedDataLoader:
    """A PackedDataLoader with two persistent workers."""
    dataset = PackedDataset(url, **SETTINGS, **kwargs)
    return PackedDataLoader(dataset, num_workers=2, persistent_workers=True, prefetch_factor=1, collate_fn=row_keys)


def epoch_rows(url: str, epoch: int, **kwargs: Any) -> list[Row]:
    """What an uninterrupted loader yields in ``epoch`` of the dataset as it is now."""
    dataset = PackedDataset(url, **SETTINGS, **kwargs)
    dataset.set_epoch(epoch)
    return rows(dataset)


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]) -> Any:
    """``one``: a first run; ``two``: a copy of it, then an append. A dataset iterated in the main process and a
    PackedDataLoader with persistent workers were both part way through epoch 0 of ``two`` when it grew; what
    they yielded before and after, and their states before, are kept."""
    root = tmp_path_factory.mktemp("grown")
    first, second = halves(pairs)
    one = commit(root, root / "one", tokenizer_dir, first, "first")
    two = copy(one, root / "two")
    plain = PackedDataset(str(two), **SETTINGS)
    samples = iter(plain)
    head = rows(next(samples) for _ in range(HEAD))
    state = plain.state_dict()
    dl = loader(str(two))
    batches = iter(dl)
    head_batches = [next(batches) for _ in range(HEAD_BATCHES)]
    dl_state, dl_len = dl.state_dict(), len(dl)

    commit(root, two, tokenizer_dir, second, "second", "--append")

    rest = rows(samples)
    plain_epoch_1, plain_len_1 = rows(plain), len(plain)
    rest_batches = list(batches)
    dl_epoch_1, dl_len_1 = list(dl), len(dl)
    del batches, dl
    gc.collect()
    return SimpleNamespace(
        one=str(one), two=str(two), head=head, rest=rest, state=state, plain_epoch_1=plain_epoch_1,
        plain_len_1=plain_len_1, head_batches=head_batches, rest_batches=rest_batches, dl_state=dl_state,
        dl_len=dl_len, dl_epoch_1=dl_epoch_1, dl_len_1=dl_len_1,
        epoch_0=epoch_rows(str(one), 0), epoch_1=epoch_rows(str(two), 1),
    )


def test_the_reference_epochs_differ_in_size(grown: Any) -> None:
    assert len(grown.epoch_1) > len(grown.epoch_0) > HEAD + HEAD_BATCHES * SETTINGS["batch_size"]
    assert grown.state["generations"] == [1] and grown.state["samples_seen"] == HEAD


def test_a_loader_reading_when_the_dataset_grew_finishes_its_epoch_then_covers_both(grown: Any) -> None:
    assert grown.head + grown.rest == grown.epoch_0
    assert grown.plain_epoch_1 == grown.epoch_1
    assert grown.plain_len_1 == len(grown.epoch_1)


def test_persistent_workers_finish_the_epoch_then_cover_both(grown: Any) -> None:
    assert flat(grown.head_batches + grown.rest_batches) == grown.epoch_0
    assert flat(grown.dl_epoch_1) == grown.epoch_1
    assert grown.dl_len_1 > grown.dl_len == -(-len(grown.epoch_0) // SETTINGS["batch_size"])


def test_a_state_saved_before_the_append_resumes_its_epoch_then_grows(grown: Any) -> None:
    dataset = PackedDataset(grown.two, **SETTINGS)
    assert dataset.generations == [1, 2]
    dataset.load_state_dict(grown.state)
    assert (dataset.generations, len(dataset)) == ([1], len(grown.epoch_0))
    assert dataset.state_dict() == grown.state
    assert rows(dataset) == grown.epoch_0[HEAD:]
    assert rows(dataset) == grown.epoch_1
    assert (dataset.generations, len(dataset)) == ([1, 2], len(grown.epoch_1))
    assert dataset.state_dict()["generations"] == [1, 2]


def test_a_state_saved_before_the_append_resumes_with_persistent_workers(grown: Any) -> None:
    dl = loader(grown.two)
    dl.load_state_dict(grown.dl_state)
    assert flat(dl) == grown.epoch_0[HEAD_BATCHES * SETTINGS["batch_size"] :]
    assert flat(dl) == grown.epoch_1
    assert len(dl) == -(-len(grown.epoch_1) // SETTINGS["batch_size"])
    dl.load_state_dict(grown.dl_state)  # back to generation 1 alone: the workers follow again
    assert flat(dl) == grown.epoch_0[HEAD_BATCHES * SETTINGS["batch_size"] :]


def test_a_state_at_an_epoch_start_covers_what_is_there_then(grown: Any) -> None:
    """Saved after epoch 0 of generation 1: epoch 1, not yet begun, covers both generations."""
    dataset = PackedDataset(grown.two, **SETTINGS)
    dataset.load_state_dict({**grown.state, "samples_seen": len(grown.epoch_0)})
    assert rows(dataset) == grown.epoch_1


def test_the_length_of_the_dataloader_follows_the_epoch(grown: Any, recwarn: pytest.WarningsRecorder) -> None:
    """torch warns when an iterable yields more batches than ``len(dataloader)`` said; an epoch that covers a new
    generation is longer, and says so."""
    settings = {**SETTINGS, "batch_size": 1}
    start = PackedDataset(grown.two, **settings, generations=[1]).state_dict()  # epoch 0 of generation 1, not begun
    dl = PackedDataLoader(PackedDataset(grown.two, **settings), collate_fn=row_keys)
    dl.load_state_dict(start)
    assert len(dl) == len(grown.epoch_0)
    assert len(flat(dl)) == len(grown.epoch_1) == len(dl)
    assert not [w for w in recwarn if "Length of IterableDataset" in str(w.message)]


def test_a_state_of_seqpack_0_finds_its_generation_by_its_data(grown: Any) -> None:
    old = {key: value for key, value in grown.state.items() if key != "generations"}
    dataset = PackedDataset(grown.two, **SETTINGS)
    dataset.load_state_dict(old)
    assert dataset.generations == [1]
    assert rows(dataset) == grown.epoch_0[HEAD:]


def test_chosen_generations_never_change(grown: Any) -> None:
    dataset = PackedDataset(grown.two, **SETTINGS, generations=[1])
    assert rows(dataset) == grown.epoch_0
    assert rows(dataset) == epoch_rows(grown.one, 1)
    assert dataset.state_dict()["generations"] == [1]
    second = PackedDataset(grown.two, **SETTINGS, generations=[2])
    assert sorted(rows(second) + grown.epoch_0) == sorted(grown.epoch_1)
    with pytest.raises(ValueError, match=r"covers generations \[1\], but this dataset reads generations \[2\]: "
                       r"build it with generations=\[1\]"):
        second.load_state_dict(grown.state)
    with pytest.raises(ValueError, match=r"covers generations \[2\], not every generation up to 2 \(\[1, 2\]\)"):
        PackedDataset(grown.two, **SETTINGS).load_state_dict(second.state_dict())


@pytest.mark.parametrize("generations", [[], ["1"], [True], "1", 1])
def test_generations_must_be_ids(grown: Any, generations: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="generations must be a"):
        PackedDataset(grown.two, generations=generations)


def test_an_unknown_generation_is_named(grown: Any) -> None:
    with pytest.raises(ValueError, match="no generation 9; it has 1, 2"):
        PackedDataset(grown.two, generations=[1, 9])


# --------------------------------------------------------------------- without Beam: generations replaced


def test_a_state_whose_generations_were_replaced_is_refused(tmp_path: Path) -> None:
    url = str(tmp_path)
    write_dataset(url, {"train": make_examples(80, seed=1)}, rows_per_shard=4, revision=1)
    state = {**PackedDataset(url).state_dict(), "samples_seen": 3}
    write_dataset(url, {"train": make_examples(80, seed=2)}, rows_per_shard=4, revision=2)  # an --overwrite
    dataset = PackedDataset(url)
    with pytest.raises(ValueError, match=r"covers generations \[1\], but .* no longer has 1 \(it has \[2\]\)"):
        dataset.load_state_dict(state)
    assert dataset.state_dict()["samples_seen"] == 0


def test_a_following_loader_stops_at_the_next_epoch_when_its_generation_was_replaced(tmp_path: Path) -> None:
    url = str(tmp_path)
    write_dataset(url, {"train": make_examples(80, seed=1)}, rows_per_shard=4, revision=1)
    dataset = PackedDataset(url)
    assert len(rows(dataset)) == len(dataset)
    write_dataset(url, {"train": make_examples(80, seed=2)}, rows_per_shard=4, revision=2)
    with pytest.raises(DatasetChangedError, match="generation 1 is gone"):
        next(iter(dataset))


# ------------------------------------------------------------------------------------------ the documentation


def test_the_datasets_that_grow_example_runs(grown: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/loader.md's example, as written, on a dataset of two generations at ``out/``."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "loader.md").read_text(encoding="utf-8")
    section = doc.split("### Datasets that grow", 1)[1].split("\n### ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code, "the Datasets that grow section has no ```python block"
    (tmp_path / "out").symlink_to(grown.two)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "docs/loader.md (Datasets that grow)", "exec"), namespace)  # noqa: S102 - our doc
    ds, first = namespace["ds"], namespace["first"]
    assert (ds.generations, first.generations) == ([1, 2], [1])
    assert namespace["state"]["generations"] == [1, 2]
    assert len(ds) == len(epoch_rows(grown.two, 0)) > len(first) == len(grown.epoch_0)
    manifest = ds.manifest.generation(2)
    assert namespace["added"] == [f"out/{shard.path}" for shard in manifest.splits["train"].shards]


def test_a_version_1_dataset_reads_and_resumes_as_one_generation(tmp_path: Path) -> None:
    url = str(tmp_path)
    write_dataset(url, {"train": make_examples(80, seed=1)}, rows_per_shard=4, revision=3)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    manifest["format_version"] = 1
    del manifest["generations"]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    dataset = PackedDataset(url, seed=2)
    whole = rows(dataset)
    state = {**dataset.state_dict(), "epoch": 0, "samples_seen": 5}
    assert state["generations"] == [3]
    del state["generations"]
    resumed = PackedDataset(url, seed=2)
    resumed.load_state_dict(state)
    assert rows(resumed) == whole[5:]
