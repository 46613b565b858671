"""`seqpack compact`: several generations repacked into one that replaces them at once, every example kept exactly
(the same tokens, labels and split, as many times), the inputs still known as consumed, and `verify` proving it."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import IN_PROCESS, pack, run_args, write_jsonl

from seqpack.cli.main import EXIT_FAILED, EXIT_USAGE, main
from seqpack.dataset import verify_dataset
from seqpack.errors import UsageError
from seqpack.examples_digest import ExamplesDigest, block_arrays, example_bounds
from seqpack.masking import Piece
from seqpack.pipeline.compact import check_can_compact, choose_generations
from seqpack.schemas import DatasetFormatError, Manifest
from seqpack.schemas import stats as stats_format
from seqpack.unpacking import NotWholeExamples, examples_of_blocks

SETTINGS = ("--validation-fraction", "0.1")


def manifest_of(dataset: Path) -> Manifest:
    return Manifest.from_json((dataset / "manifest.json").read_text())


def examples(dataset: Path, generation_ids: list[int] | None = None) -> Counter:
    """Every example of the dataset (or of some generations) as (split, input_ids, labels), counted."""
    manifest = manifest_of(dataset)
    found: Counter = Counter()
    for generation in manifest.generations:
        if generation_ids is not None and generation.id not in generation_ids:
            continue
        for split, info in generation.splits.items():
            for shard in info.shards:
                ids, labels, *layout = block_arrays(pq.read_table(dataset / shard.path))
                for start, stop in example_bounds(*layout):
                    found[(split, tuple(ids[start:stop].tolist()), tuple(labels[start:stop].tolist()))] += 1
    return found


def generation_stats(dataset: Path, generation_ids: list[int] | None = None) -> list[dict]:
    manifest = manifest_of(dataset)
    return [json.loads((dataset / g.directory / "stats.json").read_text()) for g in manifest.generations
            if generation_ids is None or g.id in generation_ids]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    """Three days of pairs (and one record that is rejected), one file each."""
    folder = tmp_path_factory.mktemp("days")
    for day in range(3):
        write_jsonl(folder / f"day{day}.jsonl", pairs[day::3] + ([{"source": "no target"}] if day == 1 else []))
    return folder


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, inputs: Path, tokenizer_dir: Path) -> Path:
    """A dataset of three generations: one run, then two `--append` runs, each with one more day."""
    dataset = tmp_path_factory.mktemp("grown") / "dataset"
    for day in range(3):
        files = [arg for d in range(day + 1) for arg in ("-i", str(inputs / f"day{d}.jsonl"))]
        argv = run_args(inputs / "day0.jsonl", dataset, tokenizer_dir, *SETTINGS, *files[2:],
                        *(["--append"] if day else []))
        assert main(argv) == 0
    assert [g.id for g in manifest_of(dataset).generations] == [1, 2, 3]
    return dataset


def copy_of(dataset: Path, where: Path) -> Path:
    return Path(shutil.copytree(dataset, where / "dataset"))


def compact(dataset: Path, *extra: str) -> int:
    return main(["compact", str(dataset), IN_PROCESS, "-q", *extra])


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory, grown: Path) -> Path:
    dataset = copy_of(grown, tmp_path_factory.mktemp("compacted"))
    assert compact(dataset) == 0
    return dataset


def test_compaction_replaces_every_generation_with_one_holding_the_same_examples(grown: Path, compacted: Path) -> None:
    manifest = manifest_of(compacted)
    assert [g.id for g in manifest.generations] == [4]
    generation = manifest.generations[0]
    assert generation.replaces == [1, 2, 3]
    assert examples(compacted) == examples(grown)
    assert sum(examples(grown).values()) == generation.examples
    assert sorted(path.name for path in compacted.iterdir()) == ["manifest.json", "v000004"]


def test_compaction_packs_fuller_and_into_fewer_shards(grown: Path, compacted: Path) -> None:
    """Each generation here is a few buckets (train, validation), each with a part-filled last block; together they
    need fewer buckets. (Generations of many buckets each gain little: a bucket is packed alone either way.)"""
    before, (after,) = generation_stats(grown), generation_stats(compacted)
    assert after["fill"] >= sum(s["tokens_written"] for s in before) / sum(s["block_tokens"] for s in before)
    assert after["blocks"] <= sum(s["blocks"] for s in before)
    assert len(manifest_of(compacted).shard_paths()) < len(manifest_of(grown).shard_paths())


def test_statistics_still_account_for_every_input_record(grown: Path, compacted: Path) -> None:
    before, (after,) = generation_stats(grown), generation_stats(compacted)
    stats_format.check_identity(after)
    merged = stats_format.merge_stats(before)
    for name in ("records_read", "records_rejected", "tokens_in", "tokens_written", "pieces", "trained_tokens"):
        assert after[name] == merged[name], name
    assert after["rejected_by_reason"] == merged["rejected_by_reason"] == {"missing_field": 1}
    # the new blocks are audited as they are written: every example, and as clean as the replaced generations
    assert after["examples_audited"] == manifest_of(compacted).generations[0].examples
    assert after["audit_by_code"] == merged["audit_by_code"] == {}
    rejected = compacted / "v000004" / "rejected" / "rejected.jsonl"
    assert len(rejected.read_text().splitlines()) == 1


def test_the_compacted_generation_still_consumed_every_input(grown: Path, compacted: Path, inputs: Path,
                                                             tokenizer_dir: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    consumed = sorted(i.sha256 for g in manifest_of(grown).generations for i in g.inputs)
    assert sorted(i.sha256 for i in manifest_of(compacted).generations[0].inputs) == consumed
    dataset = copy_of(compacted, inputs.parent / "append-after-compact")
    argv = run_args(inputs / "day0.jsonl", dataset, tokenizer_dir, *SETTINGS, "-i", str(inputs / "day1.jsonl"),
                    "-i", str(inputs / "day2.jsonl"), "--append")
    argv.remove("-q")
    capsys.readouterr()
    assert main(argv) == 0
    assert "is up to date: no new input" in capsys.readouterr().err
    assert [g.id for g in manifest_of(dataset).generations] == [4]


def test_verify_proves_the_examples_were_kept(compacted: Path, tmp_path: Path) -> None:
    assert verify_dataset(str(compacted)).shards == len(manifest_of(compacted).shard_paths())
    generation = manifest_of(compacted).generations[0]
    assert generation.examples_digest.startswith("blake2b128-sum:")

    edited = copy_of(compacted, tmp_path)
    raw = json.loads((edited / "manifest.json").read_text())
    raw["generations"][0]["examples_digest"] = str(ExamplesDigest(generation.examples, 12345))
    (edited / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DatasetFormatError, match=r"generation 4 \(v000004\): its examples digest is"):
        verify_dataset(str(edited))
    assert main(["verify", str(edited)]) == EXIT_FAILED


def edit_first_label(dataset: Path, generation: int, label: int | None = None) -> str:
    """Change one trained label of the generation's first train shard (to ``label``, or to -100: no longer
    trained) and update the manifest to match the new bytes, so only the contents tell; the shard's path."""
    import hashlib

    raw = json.loads((dataset / "manifest.json").read_text())
    entry = next(g for g in raw["generations"] if g["id"] == generation)
    shard = entry["splits"]["train"]["shards"][0]
    path = dataset / shard["path"]
    table = pq.read_table(path)
    labels = table.column("labels").to_pylist()
    position = next(i for i, value in enumerate(labels[0]) if value != -100)
    labels[0][position] = -100 if label is None else label
    pq.write_table(table.set_column(1, "labels", [labels]).cast(pq.read_schema(path)), path)
    data = path.read_bytes()
    for listed in [shard, *raw["splits"]["train"]["shards"]]:
        if listed["path"] == shard["path"]:
            listed.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (dataset / "manifest.json").write_text(json.dumps(raw))
    return shard["path"]


def test_verify_finds_a_changed_label_even_when_the_manifest_was_updated_to_match(compacted: Path,
                                                                                 tmp_path: Path) -> None:
    """The shard's sha256 in the manifest proves the bytes; the digest proves they are the examples replaced."""
    edited = copy_of(compacted, tmp_path)
    edit_first_label(edited, 4)
    verify_dataset(str(edited), splits=["train"])  # the bytes match the manifest: only the digest can tell
    with pytest.raises(DatasetFormatError, match="do not hold the examples they replaced"):
        verify_dataset(str(edited))


def test_a_shard_seqpack_could_not_have_packed_is_not_compacted(grown: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    dataset = copy_of(grown, tmp_path)
    path = edit_first_label(dataset, 1, label=99999)  # a label that is neither -100 nor its token
    manifest = (dataset / "manifest.json").read_bytes()
    capsys.readouterr()
    assert compact(dataset) == EXIT_FAILED
    error = capsys.readouterr().err
    assert path in error and "neither -100 nor its token" in error and "seqpack verify" in error
    assert (dataset / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in dataset.iterdir()) == ["manifest.json", "v000001", "v000002", "v000003"]


def test_compacting_some_generations_keeps_the_others(grown: Path, tmp_path: Path) -> None:
    dataset = copy_of(grown, tmp_path)
    assert compact(dataset, "--generations", "1,2") == 0
    manifest = manifest_of(dataset)
    assert [g.id for g in manifest.generations] == [3, 4]
    assert manifest.generation(4).replaces == [1, 2]
    assert manifest.generation(3) == manifest_of(grown).generation(3)
    assert examples(dataset, [4]) == examples(grown, [1, 2])
    assert examples(dataset) == examples(grown)
    assert sorted(p.name for p in dataset.iterdir()) == ["manifest.json", "v000003", "v000004"]
    verify_dataset(str(dataset))


def test_compacting_the_same_dataset_twice_writes_the_same_shards(grown: Path, compacted: Path,
                                                                  tmp_path: Path) -> None:
    again = copy_of(grown, tmp_path)
    assert compact(again) == 0
    first, second = manifest_of(compacted), manifest_of(again)
    assert first.shard_paths() == second.shard_paths()
    for path in first.shard_paths():
        assert (compacted / path).read_bytes() == (again / path).read_bytes(), path
    assert first.generations[0].examples_digest == second.generations[0].examples_digest


def test_a_compaction_that_loses_an_example_commits_nothing(grown: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    dataset = copy_of(grown, tmp_path)
    manifest = (dataset / "manifest.json").read_bytes()
    monkeypatch.setenv("SEQPACK_FAULT", "lose_example")  # packing drops an example of each bucket
    capsys.readouterr()
    assert compact(dataset) == EXIT_FAILED
    assert "the repacked examples are not the examples read" in capsys.readouterr().err
    assert (dataset / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in dataset.iterdir()) == ["manifest.json", "v000001", "v000002", "v000003"]


# ------------------------------------------------------------------------------------------------ refusals


def test_refusals_name_the_problem_and_what_to_do(grown: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = manifest_of(grown)
    with pytest.raises(UsageError, match="has no generation 9; its generations are 1, 2, 3"):
        choose_generations(manifest, [1, 9], "out")
    with pytest.raises(UsageError, match="names one generation"):
        choose_generations(manifest, [2], "out")
    single = manifest.restricted_to([3])
    with pytest.raises(UsageError, match="has one generation"):
        choose_generations(single, None, "out")
    with pytest.raises(UsageError, match="--packing wrap"):
        check_can_compact(replace(manifest, packing="wrap"), "out")
    check_can_compact(manifest, "out")
    check_can_compact(replace(manifest, config={**manifest.config, "dedup": "exact"}), "out")

    capsys.readouterr()
    assert compact(grown, "--generations", "2") == EXIT_USAGE
    assert "names one generation" in capsys.readouterr().err
    assert [g.id for g in manifest_of(grown).generations] == [1, 2, 3]  # untouched
    assert main(["compact", str(grown / "v000001")]) == EXIT_USAGE
    assert "not a seqpack dataset" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ pure parts


def random_pieces(rng: np.random.Generator, count: int, *, chat: bool) -> list[Piece]:
    pieces = []
    for _ in range(count):
        ids = rng.integers(1, 500, int(rng.integers(1, 30))).astype(np.int32)
        if chat:
            pieces.append(Piece(ids, 0, rng.random(len(ids)) < 0.5))
        else:
            pieces.append(Piece(ids, int(rng.integers(0, len(ids) + 1))))
    return pieces


def block_examples(blocks) -> Counter:  # noqa: ANN001 - a PackedBlocks
    digest_bounds = example_bounds(blocks.row_offsets, blocks.seq_len_offsets, blocks.seq_lens)
    return Counter((tuple(blocks.input_ids[a:b].tolist()), tuple(blocks.labels[a:b].tolist()))
                   for a, b in digest_bounds)


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("strategy", ["bfd", "none"])
@pytest.mark.parametrize("mask_boundaries", [True, False])
def test_blocks_cut_back_and_packed_again_hold_the_same_examples(chat: bool, strategy: str,
                                                                 mask_boundaries: bool) -> None:
    from seqpack.packing import pack_columns

    rng = np.random.default_rng(7)
    blocks = pack(random_pieces(rng, 60, chat=chat), strategy=strategy, max_length=48, pad_id=0,
                  mask_boundaries=mask_boundaries)
    columns = examples_of_blocks(blocks.input_ids, blocks.labels, blocks.row_offsets, blocks.seq_len_offsets,
                                 blocks.seq_lens, seed=3, with_trained=chat)
    assert len(columns) == blocks.examples
    assert np.all(np.diff(columns.key_hi.astype(np.float64)) >= 0)  # sorted by key, ready to spill
    again = pack_columns(columns, strategy=strategy, max_length=48, pad_id=0, mask_boundaries=mask_boundaries)
    assert block_examples(again) == block_examples(blocks)
    first, second = ExamplesDigest(), ExamplesDigest()
    first.add_blocks("train", blocks.input_ids, blocks.labels, blocks.row_offsets, blocks.seq_len_offsets,
                     blocks.seq_lens)
    second.add_blocks("train", again.input_ids, again.labels, again.row_offsets, again.seq_len_offsets,
                      again.seq_lens)
    assert str(first) == str(second)


def test_the_digest_ignores_order_and_sees_every_change() -> None:
    ids, labels = np.array([5, 6, 7], np.int32), np.array([-100, 6, 7], np.int32)
    one, two = ExamplesDigest(), ExamplesDigest()
    one.add_example("train", ids, labels)
    one.add_example("train", ids[:2], labels[:2])
    two.add_example("train", ids[:2], labels[:2])
    two.add_example("train", ids, labels)
    assert str(one) == str(two)
    for changed in (("validation", ids, labels), ("train", ids, np.array([-100, -100, 7], np.int32)),
                    ("train", np.array([5, 6, 8], np.int32), labels)):
        other = ExamplesDigest()
        other.add_example(*changed)
        other.add_example("train", ids[:2], labels[:2])
        assert str(other) != str(one)
    twice = ExamplesDigest()
    for _ in range(2):
        twice.add_example("train", ids, labels)
    assert str(twice) != str(one)


def test_labels_that_packing_cannot_have_made_are_refused() -> None:
    blocks = pack([Piece(np.array([5, 6, 7, 8], np.int32), 2)], strategy="bfd", max_length=8, pad_id=0)
    labels = blocks.labels.copy()
    labels[3] = -100  # a masked token after a trained one: not a masked prefix
    with pytest.raises(NotWholeExamples, match="not a masked prefix"):
        examples_of_blocks(blocks.input_ids, labels, blocks.row_offsets, blocks.seq_len_offsets, blocks.seq_lens,
                           seed=0, with_trained=False)
    labels = blocks.labels.copy()
    labels[3] = 99
    with pytest.raises(NotWholeExamples, match="neither -100 nor its token"):
        examples_of_blocks(blocks.input_ids, labels, blocks.row_offsets, blocks.seq_len_offsets, blocks.seq_lens,
                           seed=0, with_trained=False)


def test_an_arrow_dataset_packed_one_example_per_row_compacts_too(inputs: Path, tokenizer_dir: Path,
                                                                  tmp_path: Path) -> None:
    """Also with --add-special-tokens: the extended tokenizer, which readers take from the newest generation,
    comes along into the compacted one."""
    dataset = tmp_path / "dataset"
    for day in range(2):
        files = [arg for d in range(day + 1) for arg in ("-i", str(inputs / f"day{d}.jsonl"))]
        assert main(run_args(inputs / "day0.jsonl", dataset, tokenizer_dir, "--format", "arrow", "--packing", "none",
                             "--add-special-tokens", "[SEP]", *files[2:], *(["--append"] if day else []))) == 0
    before = examples_of_arrow(dataset)
    tokenizer = sorted(p.name for p in (dataset / "v000002" / "tokenizer").iterdir())
    assert compact(dataset) == 0
    manifest = manifest_of(dataset)
    assert [g.replaces for g in manifest.generations] == [[1, 2]]
    assert examples_of_arrow(dataset) == before
    assert manifest.generations[0].rows == manifest.generations[0].examples  # still one example per row
    assert tokenizer and sorted(p.name for p in (dataset / "v000003" / "tokenizer").iterdir()) == tokenizer
    assert {f"v000003/tokenizer/{name}" for name in tokenizer} <= set(manifest.files)
    verify_dataset(str(dataset))


def examples_of_arrow(dataset: Path) -> Counter:
    import pyarrow as pa

    found: Counter = Counter()
    for path in manifest_of(dataset).shard_paths():
        with pa.memory_map(str(dataset / path)) as source:
            ids, labels, *layout = block_arrays(pa.ipc.open_file(source).read_all())
        for start, stop in example_bounds(*layout):
            found[(tuple(ids[start:stop].tolist()), tuple(labels[start:stop].tolist()))] += 1
    return found


@pytest.mark.parametrize("chat", [False, True])
def test_a_shard_cut_back_spills_its_examples_keyed_and_sorted(chat: bool, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The cut step alone, on one Parquet shard of a few row groups: its spill files (several, when the examples
    exceed the spill size) hold exactly the shard's examples, conversations with their per-token mask."""
    from seqpack.packing import pack_columns
    from seqpack.schemas import serialize_shard
    from seqpack.transforms import unpack
    from seqpack.transforms.shuffle import read_spill_range
    from seqpack.transforms.write import table_of

    monkeypatch.setattr(unpack, "SPILL_TOKENS", 200)
    blocks = pack(random_pieces(np.random.default_rng(11), 80, chat=chat), strategy="bfd", max_length=48, pad_id=0)
    shard = tmp_path / "part-00000-of-00001.parquet"
    shard.write_bytes(serialize_shard(table_of(blocks), "parquet", 8))
    cut = unpack.CutShardDoFn(unpack.UnpackOptions(file_format="parquet", seed=5, with_trained=chat),
                              str(tmp_path / "spill"))
    out = list(cut.process(unpack.ShardToCut("train", str(shard))))
    spills, (digest,) = out[:-1], [tagged.value for tagged in out[-1:]]
    assert len(spills) > 1 and sum(s.examples for s in spills) == blocks.examples
    again = Counter()
    for spill in spills:
        columns = read_spill_range(spill.path, 0, None, with_trained=chat)
        assert (columns.trained is not None) == chat
        assert np.all(np.diff(columns.key_hi.astype(np.float64)) >= 0)
        again += block_examples(pack_columns(columns, strategy="bfd", max_length=48, pad_id=0))
    assert again == block_examples(blocks)
    expected = ExamplesDigest()
    expected.add_blocks("train", blocks.input_ids, blocks.labels, blocks.row_offsets, blocks.seq_len_offsets,
                        blocks.seq_lens)
    assert str(digest) == str(expected)


# gs:// only: on s3:// the same steps take a minute, nearly all of it Beam making a boto3 client for every file it
# opens; the runs into both stores are tested in tests/e2e/test_object_stores.py.
@pytest.mark.parametrize("object_store", ["gs"], indirect=True)
def test_a_dataset_in_a_bucket_compacts_as_it_does_locally(grown: Path, compacted: Path, object_store: Any) -> None:
    """Shards read and written through Beam's filesystems: the same bytes as the local compaction, and the digest
    verified through fsspec."""
    import fsspec

    options = {"token": "anon"} if object_store.scheme == "gs" else object_store.storage_options
    fs = fsspec.filesystem(object_store.scheme, skip_instance_cache=True, **options)
    url = f"{object_store.url}/dataset"
    for path in sorted(p for p in grown.rglob("*") if p.is_file()):
        fs.pipe_file(f"{url}/{path.relative_to(grown).as_posix()}", path.read_bytes())
    assert main(["compact", url, IN_PROCESS, "-q", *object_store.beam_args]) == 0
    manifest = Manifest.from_json(fs.cat_file(f"{url}/manifest.json").decode())
    assert [g.replaces for g in manifest.generations] == [[1, 2, 3]]
    for path in manifest_of(compacted).shard_paths():
        assert fs.cat_file(f"{url}/{path}") == (compacted / path).read_bytes(), path
    verify_dataset(url, storage_options=options)
    assert not fs.exists(f"{url}/v000001/stats.json")
