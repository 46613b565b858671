"""Streaming through DataLoaders: exactly once over ranks × workers × epochs, exact resume, bounded memory."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardgen import examples_in, make_examples, write_dataset
from torch.utils.data import DataLoader

from seqpack.loader import PackedDataLoader, PackedDataset
from seqpack.loader import packed as packed_module
from seqpack.schemas import DatasetFormatError

pytestmark = pytest.mark.filterwarnings("ignore:.*suggested max number of worker")

Row = tuple[bytes, ...]


def row_keys(samples: Sequence[dict]) -> list[Row]:
    """A collate that keeps each row's example identities (picklable: module level)."""
    return [tuple(examples_in(sample)) for sample in samples]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Row]]:
    """About 50 rows in 5 shards of row groups of 4; returns the URL and every row's examples."""
    root = str(tmp_path_factory.mktemp("stream"))
    write_dataset(root, {"train": make_examples(230, seed=11)}, rows_per_shard=11, row_group_size=4)
    shards = PackedDataset(root, shuffle=False).shards
    rows = [tuple(examples_in(r)) for u in range(shards.num_units) for r in shards.read_unit(u).to_pylist()]
    return root, rows


def loader(url: str, *, workers: int = 0, batch_size: int = 4, **options: object) -> PackedDataLoader:
    dataset = PackedDataset(url, batch_size=batch_size, shuffle_buffer=12, lanes=4, **options)  # type: ignore[arg-type]
    return PackedDataLoader(dataset, num_workers=workers, collate_fn=row_keys)


def run(dl: PackedDataLoader, epochs: int, stop_after: int | None = None) -> list[list[Row]]:
    """Train-loop style: ``for epoch ...: for batch in dl``; stop after ``stop_after`` batches in all."""
    batches: list[list[Row]] = []
    for _ in range(dl.dataset.epoch, epochs):  # type: ignore[attr-defined]
        for batch in dl:
            batches.append(batch)
            if stop_after is not None and len(batches) == stop_after:
                return batches
    return batches


@pytest.mark.parametrize("equalize", ["pad", "drop"])
@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_row_once_per_epoch_across_ranks_and_workers(
    data: tuple[str, list[Row]], equalize: str, world_size: int, workers: int
) -> None:
    url, rows = data
    for epoch in range(2):
        per_rank = []
        for rank in range(world_size):
            dl = loader(url, workers=workers, rank=rank, world_size=world_size, equalize=equalize)
            dl.set_epoch(epoch)
            per_rank.append([row for batch in dl for row in batch])
        assert len({len(r) for r in per_rank}) == 1, "ranks must yield the same number of samples"
        seen = Counter(row for rank_rows in per_rank for row in rank_rows)
        expected = Counter(rows)
        remainder = len(rows) % world_size
        if remainder == 0:
            assert seen == expected
        elif equalize == "pad":
            assert set(seen) == set(expected)
            assert sum((seen - expected).values()) == world_size - remainder
        else:
            assert not seen - expected
            assert sum((expected - seen).values()) == remainder


def test_every_example_once_and_batch_counts_equal(data: tuple[str, list[Row]]) -> None:
    url, rows = data
    world_size = 2
    counts, examples = [], Counter()
    for rank in range(world_size):
        dl = loader(url, workers=2, rank=rank, world_size=world_size, batch_size=3)
        batches = list(dl)
        counts.append(len(batches))
        examples.update(key for batch in batches for row in batch for key in row)
    assert counts[0] == counts[1] == len(dl)
    if len(rows) % world_size == 0:
        assert examples == Counter(key for row in rows for key in row)
        assert max(examples.values()) == 1


def test_epochs_differ_and_shuffle_false_reads_in_file_order(data: tuple[str, list[Row]]) -> None:
    url, rows = data
    two_epochs = run(loader(url), epochs=2)
    half = len(two_epochs) // 2
    first = [r for b in two_epochs[:half] for r in b]
    second = [r for b in two_epochs[half:] for r in b]
    assert first != second and sorted(first) == sorted(second) == sorted(rows)
    in_order = [r for b in loader(url, shuffle=False) for r in b]
    assert in_order == rows


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batches_do_not_depend_on_num_workers(data: tuple[str, list[Row]], workers: int) -> None:
    url, _ = data
    assert run(loader(url, workers=workers), epochs=2) == run(loader(url, workers=0), epochs=2)


@pytest.mark.parametrize(
    ("stop_after", "before", "after"),
    [(1, 0, 2), (5, 2, 0), (13, 2, 3), (14, 0, 1), (15, 3, 2), (22, 1, 0)],
)
def test_resume_in_a_fresh_loader_continues_the_same_stream(
    data: tuple[str, list[Row]], stop_after: int, before: int, after: int
) -> None:
    url, _ = data
    reference = run(loader(url), epochs=2)
    first = loader(url, workers=before)
    head = run(first, epochs=2, stop_after=stop_after)
    state = json.loads(json.dumps(first.state_dict()))
    second = loader(url, workers=after)
    second.load_state_dict(state)
    tail = run(second, epochs=2)
    assert head + tail == reference


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stops=st.lists(st.integers(1, 12), min_size=1, max_size=4), batch_size=st.integers(1, 5))
def test_resume_at_any_steps_any_number_of_times(
    data: tuple[str, list[Row]], stops: list[int], batch_size: int
) -> None:
    url, _ = data
    reference = run(loader(url, batch_size=batch_size), epochs=2)
    stream: list[list[Row]] = []
    state = None
    for stop in [*stops, None]:
        dl = loader(url, batch_size=batch_size)
        if state is not None:
            dl.load_state_dict(state)
        stream += run(dl, epochs=2, stop_after=stop)
        state = dl.state_dict()
    assert stream == reference


def slow_second_worker(worker_id: int) -> None:
    if worker_id == 1:
        time.sleep(0.5)


def test_a_late_worker_starts_where_the_pass_started_not_where_the_loop_is(data: tuple[str, list[Row]]) -> None:
    """Worker 1 starts after the loop has received worker 0's first batches; it must not skip ahead."""
    url, _ = data
    reference = run(loader(url), epochs=1)
    dataset = PackedDataset(url, batch_size=4, shuffle_buffer=12, lanes=4)
    dl = PackedDataLoader(dataset, num_workers=2, collate_fn=row_keys, worker_init_fn=slow_second_worker)
    assert run(dl, epochs=1) == reference


def test_dataset_state_without_a_loader_in_one_process(data: tuple[str, list[Row]]) -> None:
    url, _ = data
    reference = [examples_in(s) for s in PackedDataset(url, seed=4)]
    dataset = PackedDataset(url, seed=4)
    iterator = iter(dataset)
    head = [examples_in(next(iterator)) for _ in range(7)]
    fresh = PackedDataset(url, seed=4)
    fresh.load_state_dict(dataset.state_dict())
    assert head + [examples_in(s) for s in fresh] == reference


def test_persistent_workers_follow_the_epoch_set_in_the_main_process(data: tuple[str, list[Row]]) -> None:
    url, _ = data
    reference = run(loader(url), epochs=2)
    dataset = PackedDataset(url, batch_size=4, shuffle_buffer=12, lanes=4)
    dl = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=row_keys)
    batches = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        batches += list(dl)
    assert batches == reference
    packed = PackedDataLoader(
        PackedDataset(url, batch_size=4, shuffle_buffer=12, lanes=4),
        num_workers=2,
        persistent_workers=True,
        collate_fn=row_keys,
    )
    assert list(packed) + list(packed) == reference  # moves to the next epoch by itself


def test_resume_refuses_other_settings(data: tuple[str, list[Row]]) -> None:
    url, _ = data
    state = loader(url, batch_size=4).state_dict()
    with pytest.raises(ValueError, match=r"batch_size=4 \(this dataset: 2\)"):
        loader(url, batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=0 .this dataset: 1."):
        loader(url, seed=1).load_state_dict(state)


def test_loader_and_dataset_batch_sizes_must_agree(data: tuple[str, list[Row]]) -> None:
    url, _ = data
    with pytest.raises(ValueError, match="batch_size=4 but the DataLoader uses 8"):
        PackedDataLoader(PackedDataset(url, batch_size=4), batch_size=8)
    with pytest.raises(ValueError, match="in_order=False"):
        PackedDataLoader(PackedDataset(url), batch_size=2, in_order=False)


def test_set_epoch_keeps_the_position_within_the_current_epoch(data: tuple[str, list[Row]]) -> None:
    url, _ = data
    dataset = PackedDataset(url)
    dataset.load_state_dict({**dataset.state_dict(), "epoch": 3, "samples_seen": 5})
    dataset.set_epoch(3)
    assert (dataset.state_dict()["epoch"], dataset.state_dict()["samples_seen"]) == (3, 5)
    dataset.set_epoch(4)
    assert (dataset.state_dict()["epoch"], dataset.state_dict()["samples_seen"]) == (4, 0)


def test_memory_holds_only_the_live_windows_row_groups(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(2000, seed=1)}, rows_per_shard=40, row_group_size=8)
    dataset = PackedDataset(str(tmp_path), batch_size=4, shuffle_buffer=16, lanes=2)
    readers = []
    original = packed_module._WindowReader

    class Watched(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            self.peak = 0
            readers.append(self)

        def _load(self, lane: int, window: int):  # type: ignore[no-untyped-def]
            loaded = super()._load(lane, window)
            self.peak = max(self.peak, len(self.units))
            return loaded

    packed_module._WindowReader = Watched
    try:
        consumed = sum(1 for _ in dataset)
    finally:
        packed_module._WindowReader = original
    assert consumed == len(dataset) > 100
    # 2 lanes × a window of 8 rows: each window spans at most 2 row groups of 8 rows.
    assert readers[0].peak <= 4 < dataset.shards.num_units


def test_ranks_come_from_torch_distributed_when_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 5)
    assert packed_module._resolve_ranks(None, None) == (2, 5)
    assert packed_module._resolve_ranks(0, 1) == (0, 1)
    with pytest.raises(ValueError, match="both rank and world_size"):
        packed_module._resolve_ranks(1, None)


def test_arrow_shards_on_a_memory_filesystem_stream_every_row() -> None:
    examples = make_examples(120, seed=9)
    write_dataset("memory://seqpack-stream-test", {"train": examples}, file_format="arrow", row_group_size=3)
    dataset = PackedDataset("memory://seqpack-stream-test", batch_size=2, shuffle_buffer=5)
    keys = [key for sample in dataset for key in examples_in(sample)]
    assert sorted(keys) == sorted(e.key() for e in examples)


def test_verify_on_open_names_a_corrupt_shard(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(40, seed=2)}, rows_per_shard=4)
    shard = tmp_path / "train" / "part-00001-of-00003.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    assert len(PackedDataset(str(tmp_path))) > 0  # sizes and footers still look right without verify
    with pytest.raises(DatasetFormatError, match="part-00001-of-00003.parquet: sha256"):
        PackedDataset(str(tmp_path), verify=True)


def test_dataset_tells_the_trainer_its_vocabulary_and_layout(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(20, seed=3)}, vocab_size=1000, added_tokens={"<tool>": 1003})
    dataset = PackedDataset(str(tmp_path))
    assert dataset.vocab_size == 1004  # room for the added token's id
    assert dataset.added_tokens == {"<tool>": 1003}
    assert dataset.manifest.max_length == dataset.max_length == 64
    assert dataset.tokenizer.pad_id == 0
