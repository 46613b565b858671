"""A dataset committed again (``seqpack run --overwrite``) under an open loader: an error, never a mix of two."""

from __future__ import annotations

import gc
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from fsspec.implementations.local import LocalFileSystem
from shardgen import Example, examples_in, make_examples, write_dataset

from seqpack.dataset import DatasetChangedError, ShardSet
from seqpack.loader import PackedDataLoader, PackedDataset
from seqpack.schemas import MANIFEST_NAME, DatasetFormatError, revision_dir

pytestmark = pytest.mark.filterwarnings("ignore:.*suggested max number of worker")

Commit = Callable[[str], None]


def old_examples() -> list[Example]:
    return make_examples(120, seed=1)


def new_examples() -> list[Example]:
    """Another dataset: its examples start at 1001, so no key is shared with ``old_examples``."""
    return [Example(ids=e.ids + 1000, source_len=e.source_len) for e in make_examples(120, seed=2)]


def write_old(url: str) -> None:
    """Twenty shards of one row group each, so a loader opens a new shard every few samples."""
    write_dataset(url, {"train": old_examples()}, rows_per_shard=2, row_group_size=2, revision=1)


def commit_new_revision(url: str) -> None:
    """What a commit does: the new revision beside the old, the manifest replaced atomically, old files deleted."""
    fs, root = fsspec.core.url_to_fs(url)
    _, staged = fsspec.core.url_to_fs(f"{url}.staged")
    write_dataset(f"{url}.staged", {"train": new_examples()}, rows_per_shard=2, row_group_size=2, revision=2)
    fs.mv(f"{staged}/{revision_dir(2)}", f"{root}/{revision_dir(2)}", recursive=True)
    if isinstance(fs, LocalFileSystem):
        os.replace(f"{staged}/{MANIFEST_NAME}", f"{root}/{MANIFEST_NAME}")
    else:  # the object-store way: one whole-object write
        fs.pipe(f"{root}/{MANIFEST_NAME}", fs.cat(f"{staged}/{MANIFEST_NAME}"))
    fs.rm(staged, recursive=True)
    fs.rm(f"{root}/{revision_dir(1)}", recursive=True)


def rewrite_manifest_only(url: str) -> None:
    """The plain case: same shards, another manifest.json (here another pad id, as with ``--pad-id``)."""
    fs, root = fsspec.core.url_to_fs(url)
    raw = json.loads(fs.cat(f"{root}/{MANIFEST_NAME}"))
    raw["tokenizer"]["pad_id"] = 7
    fs.pipe(f"{root}/{MANIFEST_NAME}", json.dumps(raw).encode())


def old_keys() -> set[bytes]:
    return {e.key() for e in old_examples()}


def first(batch: list[dict]) -> dict:
    """A collate for batches of one (module level, so that it pickles into workers)."""
    return batch[0]


def keys_until_error(samples: Iterator[dict], commit: Commit, url: str, *, after: int = 5) -> list[bytes]:
    """Read ``after`` samples, commit, read on until the loader raises; return every example key it yielded."""
    keys: list[bytes] = []
    with pytest.raises(DatasetChangedError, match=r"replaced by a newer commit while it was being read") as caught:
        for count, sample in enumerate(samples):
            if count == after:
                commit(url)
            keys += examples_in(sample)
    assert "restart the loader" in str(caught.value)
    return keys


@pytest.mark.parametrize("commit", [commit_new_revision, rewrite_manifest_only], ids=["revision", "manifest"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_loader_stops_when_the_dataset_is_committed_again(tmp_path: Path, commit: Commit, shuffle: bool) -> None:
    url = str(tmp_path / "out")
    write_old(url)
    dataset = PackedDataset(url, shuffle=shuffle, shuffle_buffer=2, lanes=1)
    keys = keys_until_error(iter(dataset), commit, url)
    assert set(keys) <= old_keys(), "the loader yielded samples of the new dataset"
    assert len(keys) < len(old_keys())


@pytest.mark.parametrize("commit", [commit_new_revision, rewrite_manifest_only], ids=["revision", "manifest"])
def test_dataloader_workers_stop_too(tmp_path: Path, commit: Commit, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a worker raises, torch waits this long per worker for it to exit (5 s by default) when the iterator
    # is collected; shortened, and collected here, so that the wait is neither long nor another test's.
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2)
    url = str(tmp_path / "out")
    write_old(url)
    dataset = PackedDataset(url, shuffle=False, shuffle_buffer=2, batch_size=1)
    loader = PackedDataLoader(dataset, num_workers=2, collate_fn=first, prefetch_factor=1)
    batches = iter(loader)
    keys = keys_until_error(batches, commit, url)
    assert set(keys) <= old_keys()
    del batches
    gc.collect()


def test_a_remote_store_is_watched_the_same_way() -> None:
    url = "memory://seqpack-changed-test/out"
    write_old(url)
    try:
        keys = keys_until_error(iter(PackedDataset(url, shuffle=False, shuffle_buffer=2)), commit_new_revision, url)
        assert set(keys) <= old_keys()
    finally:
        fsspec.filesystem("memory").rm("/seqpack-changed-test", recursive=True)


def test_the_next_pass_of_a_finished_loader_is_refused(tmp_path: Path) -> None:
    """Every shard's handle may still be cached and open; a new epoch must not go on reading the old files."""
    url = str(tmp_path / "out")
    write_dataset(url, {"train": old_examples()}, rows_per_shard=20, revision=1)  # 3 shards: all stay open
    dataset = PackedDataset(url)
    assert sum(1 for _ in dataset) == len(dataset)
    commit_new_revision(url)
    with pytest.raises(DatasetChangedError, match=r"manifest.json (changed|is gone)"):
        next(iter(dataset))


def test_a_deleted_manifest_is_a_change(tmp_path: Path) -> None:
    url = str(tmp_path / "out")
    write_old(url)
    shards = ShardSet.open(url)
    shards.read_unit(0)
    (tmp_path / "out" / MANIFEST_NAME).unlink()
    with pytest.raises(DatasetChangedError, match=r"manifest.json is gone"):
        shards.read_unit(5)


def test_a_shard_deleted_under_an_unchanged_manifest_is_named(tmp_path: Path) -> None:
    url = str(tmp_path / "out")
    write_old(url)
    shards = ShardSet.open(url)
    path = shards.shards[3].path
    (tmp_path / "out" / path).unlink()
    with pytest.raises(DatasetChangedError, match=rf"{path} was deleted while the manifest still lists it"):
        shards.read_unit(3)


def test_a_commit_while_opening_is_reported_as_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shards vanish between reading the manifest and checking them: not "re-copy the dataset"."""
    url = str(tmp_path / "out")
    write_old(url)
    from seqpack.dataset import shards as shards_module

    original = shards_module.check_and_open
    once = threading.Lock()  # shards are checked in threads: the first one commits

    def commit_first(*args: object) -> object:
        with once:
            if (tmp_path / "out" / revision_dir(1)).exists():
                commit_new_revision(url)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(shards_module, "check_and_open", commit_first)
    with pytest.raises(DatasetChangedError, match="while it was being opened"):
        ShardSet.open(url)


def test_unchanged_datasets_read_to_the_end_and_the_error_is_a_format_error(tmp_path: Path) -> None:
    url = str(tmp_path / "out")
    write_old(url)
    keys = [key for sample in PackedDataset(url, shuffle_buffer=2) for key in examples_in(sample)]
    assert sorted(keys) == sorted(old_keys())
    assert issubclass(DatasetChangedError, DatasetFormatError)


def test_the_same_data_in_a_new_revision_directory_resumes(tmp_path: Path) -> None:
    """The resume fingerprint is the data's (sha256 and rows per shard), not the paths'."""
    first, second = tmp_path / "a", tmp_path / "b"
    write_dataset(str(first), {"train": old_examples()}, rows_per_shard=4, revision=1)
    write_dataset(str(second), {"train": old_examples()}, rows_per_shard=4, revision=2)
    reference = [examples_in(s) for s in PackedDataset(str(first), seed=3)]
    dataset = PackedDataset(str(first), seed=3)
    iterator = iter(dataset)
    head = [examples_in(next(iterator)) for _ in range(4)]
    moved = PackedDataset(str(second), seed=3)
    assert moved.fingerprint() == dataset.fingerprint()
    moved.load_state_dict(dataset.state_dict())
    assert head + [examples_in(s) for s in moved] == reference
    other = tmp_path / "c"
    write_dataset(str(other), {"train": new_examples()}, rows_per_shard=4, revision=1)
    with pytest.raises(ValueError, match="data="):
        PackedDataset(str(other), seed=3).load_state_dict(dataset.state_dict())


def test_states_saved_with_the_old_path_fingerprint_still_apply(tmp_path: Path) -> None:
    import hashlib

    write_dataset(str(tmp_path), {"train": old_examples()}, rows_per_shard=4)
    dataset = PackedDataset(str(tmp_path))
    digest = hashlib.sha256()
    for shard in dataset.shards.shards:
        digest.update(f"{shard.path}:{shard.sha256}\n".encode())
    state = {**dataset.state_dict(), "data": digest.hexdigest()[:16], "samples_seen": 3}
    del state["generations"]  # seqpack 0.x states have none
    dataset.load_state_dict(state)
    assert dataset.state_dict()["samples_seen"] == 3
