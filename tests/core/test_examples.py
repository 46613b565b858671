"""Examples as columns and spill files: every example comes back exactly once, with its ids and its mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.example_columns import ExampleBuffer, ExampleColumns, columns_of_pieces, gather_index
from seqpack.masking import Piece
from seqpack.transforms import shuffle as spill
from seqpack.transforms.shuffle import SpillFile, bucket_bounds, read_bucket, read_spill_range, write_spill

example_lists = st.lists(
    st.tuples(st.binary(min_size=16, max_size=16), st.lists(st.integers(0, 2**31 - 1), max_size=12)),
    max_size=60,
)


def _as_dict(columns: ExampleColumns) -> dict[bytes, tuple[list[int], int]]:
    pairs = zip(columns.key_hi.tolist(), columns.key_lo.tolist(), strict=True)
    keys = [hi.to_bytes(8, "big") + lo.to_bytes(8, "big") for hi, lo in pairs]
    return {key: (columns.example_ids(i).tolist(), int(columns.n_masked[i])) for i, key in enumerate(keys)}


def _buffer(examples: list[tuple[bytes, list[int]]]) -> ExampleBuffer:
    buffer = ExampleBuffer()
    for key, ids in examples:
        buffer.add(key, np.array(ids, np.int32), len(ids) // 2)
    return buffer


@given(example_lists)
def test_buffer_builds_every_example_sorted_by_key(examples: list[tuple[bytes, list[int]]]) -> None:
    unique = list(dict(examples).items())
    buffer = _buffer(unique)
    assert buffer.examples == len(unique) and buffer.tokens == sum(len(ids) for _, ids in unique)
    columns = buffer.build()
    assert buffer.examples == 0 and buffer.tokens == 0
    assert _as_dict(columns) == {key: (ids, len(ids) // 2) for key, ids in unique}
    pairs = list(zip(columns.key_hi.tolist(), columns.key_lo.tolist(), strict=True))
    assert pairs == sorted(pairs)
    assert columns.tokens == sum(len(ids) for _, ids in unique)


@given(example_lists, st.integers(1, 5))
@settings(max_examples=50, deadline=None)
def test_spill_files_give_back_each_key_range_exactly(
    tmp_path_factory: pytest.TempPathFactory, examples: list[tuple[bytes, list[int]]], buckets: int
) -> None:
    """Whatever the batch size of the files, the buckets' key ranges partition the examples."""
    unique = list(dict(examples).items())
    directory = tmp_path_factory.mktemp("spill")
    old_rows = spill.SPILL_BATCH_ROWS
    spill.SPILL_BATCH_ROWS = 7  # several record batches per file
    try:
        files = []
        for part in range(3):
            columns = _buffer(unique[part::3]).build()
            path = str(directory / f"{part}.arrow")
            write_spill(path, columns)
            files.append(SpillFile("train", path, len(columns), columns.tokens))
    finally:
        spill.SPILL_BATCH_ROWS = old_rows
    seen: dict[bytes, tuple[list[int], int]] = {}
    for index in range(buckets):
        low, high = bucket_bounds(index, buckets)
        columns = read_bucket(("train", index, buckets), files, with_trained=False)
        assert all(low <= k and (high is None or k < high) for k in columns.key_hi.tolist())
        part = _as_dict(columns)
        assert not set(part) & set(seen)
        seen.update(part)
    assert seen == {key: (ids, len(ids) // 2) for key, ids in unique}


def test_bucket_bounds_cover_the_key_space_without_gaps() -> None:
    for count in (1, 2, 3, 7, 1000):
        bounds = [bucket_bounds(i, count) for i in range(count)]
        assert bounds[0][0] == 0 and bounds[-1][1] is None
        for (_, high), (low, _) in zip(bounds, bounds[1:], strict=False):
            assert high == low
        assert all(0 <= low < 2**64 for low, _ in bounds)


def test_conversation_masks_survive_a_spill_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pieces = [Piece(rng.integers(0, 50, n).astype(np.int32), 0, rng.random(n) < 0.5) for n in (5, 1, 9, 3)]
    keys = [rng.bytes(16) for _ in pieces]
    buffer = ExampleBuffer()
    for key, piece in zip(keys, pieces, strict=True):
        buffer.add(key, piece.ids, 0, piece.trained)
    path = str(tmp_path / "chat.arrow")
    write_spill(path, buffer.build())
    back = read_spill_range(path, 0, None, with_trained=True)
    by_key = {int.from_bytes(k[:8], "big"): p for k, p in zip(keys, pieces, strict=True)}
    for i, key_hi in enumerate(back.key_hi.tolist()):
        lo, hi = back.offsets[i], back.offsets[i + 1]
        assert back.ids[lo:hi].tolist() == by_key[key_hi].ids.tolist()
        assert back.trained[lo:hi].tolist() == by_key[key_hi].trained.tolist()


def test_an_empty_spill_file_reads_as_no_examples(tmp_path: Path) -> None:
    path = str(tmp_path / "empty.arrow")
    write_spill(path, ExampleBuffer().build())
    assert len(read_spill_range(path, 0, None, with_trained=False)) == 0


def test_a_buffer_refuses_to_mix_pair_and_conversation_examples() -> None:
    buffer = ExampleBuffer()
    buffer.add(bytes(16), np.array([1, 2], np.int32), 1)
    with pytest.raises(ValueError, match="per-token loss mask"):
        buffer.add(bytes(16), np.array([1, 2], np.int32), 0, np.array([True, False]))


@given(st.lists(st.integers(0, 6), max_size=20), st.data())
def test_take_and_slice_match_per_example_lists(lengths: list[int], data: st.DataObject) -> None:
    pieces = [Piece(np.arange(n, dtype=np.int32) + 10 * i, min(i, n)) for i, n in enumerate(lengths)]
    columns = columns_of_pieces(pieces)
    order = data.draw(st.permutations(range(len(pieces))))
    taken = columns.take(np.array(order, dtype=np.int64))
    assert [taken.example_ids(i).tolist() for i in range(len(order))] == [pieces[j].ids.tolist() for j in order]
    assert taken.n_masked.tolist() == [pieces[j].n_masked for j in order]
    start = data.draw(st.integers(0, len(pieces)))
    stop = data.draw(st.integers(start, len(pieces)))
    part = columns.slice(start, stop)
    assert [part.example_ids(i).tolist() for i in range(len(part))] == [p.ids.tolist() for p in pieces[start:stop]]


def test_gather_index_concatenates_ranges() -> None:
    assert gather_index(np.array([5, 0, 2]), np.array([2, 0, 3])).tolist() == [5, 6, 2, 3, 4]
    assert gather_index(np.array([], np.int64), np.array([], np.int64)).tolist() == []


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 1)), max_size=60),
       st.integers(1, 4), st.booleans())
@settings(max_examples=200, deadline=None)
def test_key_order_is_the_full_keys_sort(keys: list[tuple[int, int, int]], runs: int, mixture: bool) -> None:
    """The merge of key-sorted runs on the first 64 bits gives exactly the permutation of sorting on the whole
    key (and the source in a mixture): small values make ties on the first bits, with and without ties on the
    rest, common."""
    from seqpack.example_columns import offsets_of

    cuts = sorted({0, len(keys), *(len(keys) * k // runs for k in range(runs))})
    runs_of = [sorted(keys[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]  # each spill file's run is sorted
    rows = [key for run in runs_of for key in run]
    columns = ExampleColumns(
        key_hi=np.array([hi for hi, _, _ in rows], np.uint64), key_lo=np.array([lo for _, lo, _ in rows], np.uint64),
        offsets=offsets_of(np.ones(len(rows), np.int64)), ids=np.arange(len(rows), dtype=np.int32),
        n_masked=np.zeros(len(rows), np.int32),
        source=np.array([s for _, _, s in rows], np.int16) if mixture else None,
    )
    np.testing.assert_array_equal(columns.key_order(), columns._full_key_order())
