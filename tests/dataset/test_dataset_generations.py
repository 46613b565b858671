"""Readers of a dataset that grows: an append is no change for them, a replaced generation is."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from growing import commit, copy, halves
from shardgen import examples_in, make_examples, write_dataset

from seqpack.dataset import DatasetChangedError, ShardSet, data_files, manifest_io, open_manifest
from seqpack.schemas import MANIFEST_NAME


def keys(shards: ShardSet, units: range | None = None) -> list[bytes]:
    """Every example in ``units`` (all by default), in order."""
    chosen = range(shards.num_units) if units is None else units
    return [key for unit in chosen for row in shards.read_unit(unit).to_pylist() for key in examples_in(row)]


@pytest.fixture(scope="module")
def grown(
    tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]
) -> SimpleNamespace:
    """``one``: a first run; ``two``: a copy of it and one append; readers opened on copies of ``one`` before an
    append (``before_append``) and before an ``--overwrite`` (``before_overwrite``), each having read one unit."""
    root = tmp_path_factory.mktemp("generations")
    first, second = halves(pairs)
    one = commit(root, root / "one", tokenizer_dir, first, "first")
    two, replaced = copy(one, root / "two"), copy(one, root / "replaced")
    before_append, before_overwrite = ShardSet.open(str(two)), ShardSet.open(str(replaced))
    head_append, head_overwrite = keys(before_append, range(1)), keys(before_overwrite, range(1))
    commit(root, two, tokenizer_dir, second, "second", "--append")
    commit(root, replaced, tokenizer_dir, second, "second", "--overwrite")
    return SimpleNamespace(
        one=str(one), two=str(two), replaced=str(replaced), before_append=before_append,
        before_overwrite=before_overwrite, head_append=head_append, head_overwrite=head_overwrite,
    )


def test_the_append_made_a_second_generation(grown: SimpleNamespace) -> None:
    manifest = open_manifest(grown.two)
    assert [g.id for g in manifest.generations] == [1, 2]
    assert all(len(g.splits["train"].shards) > 2 for g in manifest.generations), "each reader test opens shards"


def test_all_generations_read_as_their_union_and_each_alone(grown: SimpleNamespace) -> None:
    whole = keys(ShardSet.open(grown.two))
    first, second = (keys(ShardSet.open(grown.two, generations=[g])) for g in (1, 2))
    assert first == keys(ShardSet.open(grown.one))
    assert first and second and not set(first) & set(second)
    assert sorted(whole) == sorted(first + second)
    assert ShardSet.open(grown.two, generations=[2]).generations == [2]


def test_data_files_of_some_generations(grown: SimpleNamespace) -> None:
    manifest = open_manifest(grown.two)
    listed = {g.id: [f"{grown.two}/{s.path}" for s in g.splits["train"].shards] for g in manifest.generations}
    assert data_files(grown.two, generations=[2]) == listed[2]
    assert data_files(grown.two, generations=[1]) == listed[1]
    assert data_files(grown.two) == listed[1] + listed[2]
    with pytest.raises(ValueError, match="no generation 7; it has 1, 2"):
        data_files(grown.two, generations=[7])


def test_a_reader_opened_before_an_append_reads_on(grown: SimpleNamespace) -> None:
    shards = grown.before_append
    assert shards.generations == [1]
    rest = keys(shards, range(1, shards.num_units))  # opens every other shard under the new manifest
    assert grown.head_append + rest == keys(ShardSet.open(grown.one))
    assert shards.listed_generations() == [1, 2]


def test_a_reader_opened_before_an_overwrite_stops(grown: SimpleNamespace) -> None:
    shards = grown.before_overwrite
    with pytest.raises(DatasetChangedError, match=r"\(manifest.json changed: generation 1 is gone\)"):
        keys(shards, range(1, shards.num_units))


def test_a_changed_manifest_is_parsed_once(grown: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened on generation 1 of the grown dataset and told an older manifest: the first check compares, the
    later ones only hash the bytes."""
    shards = ShardSet.open(grown.two, generations=[1])
    shards.pin.manifest_sha256 = "an older manifest"
    parsed = []
    original = manifest_io.Manifest.from_json
    monkeypatch.setattr(manifest_io.Manifest, "from_json", lambda *a, **k: parsed.append(1) or original(*a, **k))
    for _ in range(3):
        shards.check_unchanged()
    assert len(parsed) == 1


# ------------------------------------------------------------------ without Beam: edited and version-1 manifests


def rewrite(root: Path, edit) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((root / MANIFEST_NAME).read_text())
    edit(raw)
    (root / MANIFEST_NAME).write_text(json.dumps(raw))


def test_a_generation_listing_other_shards_is_a_change(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(60, seed=1)}, rows_per_shard=2, revision=1)
    shards = ShardSet.open(str(tmp_path))

    def edit(raw: dict) -> None:
        for listing in (raw, raw["generations"][0]):
            listing["splits"]["train"]["shards"][3]["sha256"] = "0" * 64

    rewrite(tmp_path, edit)
    with pytest.raises(DatasetChangedError, match="generation 1 lists other shards"):
        shards.read_unit(3)


def test_a_version_1_dataset_is_one_generation(tmp_path: Path) -> None:
    write_dataset(str(tmp_path), {"train": make_examples(60, seed=1)}, rows_per_shard=4, revision=1)

    def to_version_1(raw: dict) -> None:
        raw["format_version"] = 1
        del raw["generations"]

    rewrite(tmp_path, to_version_1)
    shards = ShardSet.open(str(tmp_path))
    assert shards.generations == [1]
    assert keys(shards) == keys(ShardSet.open(str(tmp_path), generations=[1]))
    assert data_files(str(tmp_path), generations=[1]) == data_files(str(tmp_path))
