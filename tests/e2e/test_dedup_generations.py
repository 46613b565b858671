"""``--append --dedup exact`` end to end: a pair an earlier generation holds is dropped and counted, new pairs are
kept, every pair of the union is in the dataset exactly once, and the key files are small, listed, and the same
bytes whatever the workers; ``seqpack compact`` carries the union of the replaced generations' key files, so an
append after it still drops what they held."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.cli.main import main
from seqpack.dataset.verify import verify_dataset
from seqpack.pipeline.build import earlier_key_files
from seqpack.pipeline.commit import Destination
from seqpack.schemas import Manifest
from seqpack.schemas.dedup_keys import KEY_BYTES
from seqpack.schemas.layout import DEDUP_DIR, is_dedup_key_file
from seqpack.schemas.stats import check_identity
from seqpack.transforms.dedup import DROPPED_REASON, read_key_file, write_key_files

ONE_WORKER = "--direct_running_mode=in_memory"
TWO_WORKERS = ("--direct_running_mode=multi_threading", "--direct_num_workers=2")


def run(inputs: list[Path], output: Path, tokenizer: Path, *extra: str) -> None:
    args = [a for path in inputs for a in ("-i", str(path))]
    code = main(["run", "-q", *args, "-o", str(output), "-t", str(tokenizer), "--max-length", "128",
                 "--bucket-tokens", "2048", "--dedup", "exact", *extra])
    assert code == 0


def manifest(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def stats_of(dataset: Path, generation: dict) -> dict:
    return json.loads((dataset / generation["directory"] / "stats.json").read_text())


def files_of(dataset: Path, directory: str) -> dict[str, bytes]:
    return {str(p.relative_to(dataset)): p.read_bytes() for p in sorted((dataset / directory).rglob("*"))
            if p.is_file()}


def pairs_in(dataset: Path, tokenizer_dir: Path) -> list[tuple[str, str]]:
    """Every example of the dataset decoded back to its pair (the plain template: ``<s>source = target</s>``)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    found = []
    for shard in manifest(dataset)["splits"]["train"]["shards"]:
        for row in pq.read_table(dataset / shard["path"]).to_pylist():
            start = 0
            for length in row["seq_lens"]:
                ids, labels = row["input_ids"][start : start + length], row["labels"][start : start + length]
                start += length
                n_source = sum(1 for label in labels if label == IGNORE_INDEX)
                source = tokenizer.decode(ids[1:n_source]).removesuffix(" = ")
                found.append((source, tokenizer.decode(ids[n_source:-1])))
    return found


def as_tuples(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["source"], r["target"]) for r in records]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict]) -> dict[str, list]:
    """Three days of pairs: day two repeats some of day one (and one of its own), day three only day one's."""
    directory = tmp_path_factory.mktemp("in")
    days = {
        "a": pairs[0:40] + [pairs[5]],
        "b": pairs[25:70] + [pairs[60], pairs[3]],
        "c": list(reversed(pairs[0:10])),
    }
    return {name: (write_jsonl(directory / f"{name}.jsonl", records), records) for name, records in days.items()}


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, inputs: dict, tokenizer_dir: Path) -> Path:
    """The dataset after three appends (one worker)."""
    output = tmp_path_factory.mktemp("out") / "ds"
    a, b, c = (inputs[name][0] for name in "abc")
    run([a], output, tokenizer_dir, ONE_WORKER)
    run([a, b], output, tokenizer_dir, ONE_WORKER, "--append")
    run([a, b, c], output, tokenizer_dir, ONE_WORKER, "--append")
    return output


def test_pairs_of_earlier_generations_are_dropped_and_counted(grown: Path, inputs: dict) -> None:
    first, second, third = manifest(grown)["generations"]
    a, b, c = (inputs[name][1] for name in "abc")
    seen_in_a = set(as_tuples(a))
    repeats_of_a = sum(1 for pair in as_tuples(b) if pair in seen_in_a)
    new_in_b = set(as_tuples(b)) - seen_in_a
    expected = [
        (len(a), len(set(as_tuples(a))), len(a) - len(set(as_tuples(a)))),  # within the generation, as before
        (len(b), len(new_in_b), len(b) - len(new_in_b)),
        (len(c), 0, len(c)),  # nothing new: committed empty, so its input counts as consumed
    ]
    assert repeats_of_a > 0 and len(b) - len(new_in_b) > repeats_of_a, "the test has both kinds of duplicate"
    for generation, (read, written, dropped) in zip((first, second, third), expected, strict=True):
        stats = stats_of(grown, generation)
        check_identity(stats)
        assert stats["records_read"] == read
        assert sum(stats["examples_by_split"].values()) == written
        assert stats["dropped_by_reason"] == ({DROPPED_REASON: dropped} if dropped else {})
    assert [i["path"] for i in third["inputs"]] == [str(inputs["c"][0])]


def test_every_pair_of_the_union_is_in_the_dataset_once(grown: Path, inputs: dict, tokenizer_dir: Path) -> None:
    union = {pair for name in "abc" for pair in as_tuples(inputs[name][1])}
    assert sorted(pairs_in(grown, tokenizer_dir)) == sorted(union)
    verify_dataset(str(grown))  # raises on a bad shard


def test_key_files_are_16_bytes_a_kept_pair_and_listed(grown: Path) -> None:
    for generation in manifest(grown)["generations"]:
        on_disk = {path for path in files_of(grown, generation["directory"]) if f"/{DEDUP_DIR}/" in path}
        listed = {path for path in generation["files"] if is_dedup_key_file(path)}
        assert on_disk == listed
        size = sum((grown / path).stat().st_size for path in listed)
        assert size == KEY_BYTES * sum(stats_of(grown, generation)["examples_by_split"].values())
    assert set(manifest(grown)["files"]) >= {p for g in manifest(grown)["generations"] for p in g["files"]}


def test_generations_are_the_same_bytes_whatever_the_workers(grown: Path, inputs: dict, tokenizer_dir: Path,
                                                           tmp_path: Path) -> None:
    again = tmp_path / "ds"
    a, b = inputs["a"][0], inputs["b"][0]
    run([a], again, tokenizer_dir, *TWO_WORKERS)
    run([a, b], again, tokenizer_dir, *TWO_WORKERS, "--append")
    for generation in manifest(again)["generations"]:
        assert files_of(again, generation["directory"]) == files_of(grown, generation["directory"])


def test_the_job_reads_the_key_files_of_the_generations_it_joins(grown: Path, caplog: pytest.LogCaptureFixture
                                                                 ) -> None:
    previous = Manifest.from_json((grown / "manifest.json").read_text(), where="manifest.json")
    listed = [str(grown / p) for g in previous.generations for p in g.files if is_dedup_key_file(p)]
    kept_all = Destination(output=str(grown), revision=9, previous=previous, kept=(1, 2, 3))
    assert earlier_key_files(kept_all) == listed and not caplog.records, "generation 3 is empty: no keys, no warning"
    assert earlier_key_files(Destination(output=str(grown), revision=9, previous=previous)) == [], "--rebuild"
    first = previous.generations[0]
    older = replace(previous, generations=[replace(first, files=[p for p in first.files if not is_dedup_key_file(p)])])
    assert earlier_key_files(Destination(output=str(grown), revision=9, previous=older, kept=(1,))) == []
    assert "generation 1" in caplog.text and "no dedup key files" in caplog.text


# ------------------------------------------------------------------------------------------- compaction


def key_files(dataset: Path, generation: dict) -> dict[str, bytes]:
    """A generation's key files as its manifest lists them: name in its ``dedup/`` folder → bytes."""
    listed = [path for path in generation["files"] if is_dedup_key_file(path)]
    on_disk = {path for path in files_of(dataset, generation["directory"]) if f"/{DEDUP_DIR}/" in path}
    assert set(listed) == on_disk, "every key file is listed, every listed one is there"
    return {path.removeprefix(generation["directory"] + "/"): (dataset / path).read_bytes() for path in listed}


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory, grown: Path) -> Path:
    """``grown``'s three generations compacted into one (two workers, so the key files come from several)."""
    dataset = Path(shutil.copytree(grown, tmp_path_factory.mktemp("compacted") / "ds"))
    assert main(["compact", "-q", str(dataset), *TWO_WORKERS]) == 0
    return dataset


@pytest.fixture(scope="module")
def appended(tmp_path_factory: pytest.TempPathFactory, compacted: Path, inputs: dict, tokenizer_dir: Path
             ) -> tuple[Path, list[dict]]:
    """``compacted``, then an append of a day that repeats pairs of the compacted generations, and new ones."""
    dataset = Path(shutil.copytree(compacted, tmp_path_factory.mktemp("appended") / "ds"))
    pairs = inputs["a"][1] + inputs["b"][1]
    day = pairs[2:6] + pairs[50:53] + [{"source": f"new {i}", "target": f"pair {i}"} for i in range(5)] + [pairs[3]]
    path = write_jsonl(tmp_path_factory.mktemp("day-d") / "d.jsonl", day)
    run([*(inputs[name][0] for name in "abc"), path], dataset, tokenizer_dir, ONE_WORKER, "--append")
    return dataset, day


def test_compaction_carries_the_union_of_the_key_files(grown: Path, compacted: Path, tmp_path: Path) -> None:
    before, after = manifest(grown)["generations"], manifest(compacted)["generations"]
    assert [g["id"] for g in after] == [4] and after[0]["replaces"] == [1, 2, 3]
    old_keys = [key for g in before for name in key_files(grown, g)
                for key in read_key_file(str(grown / g["directory"] / name))]
    assert len(old_keys) == len(set(old_keys)) > 0, "the generations' keys are disjoint: each pair in one of them"
    union = {name: (tmp_path / name).read_bytes() for name in write_key_files(old_keys, str(tmp_path))}
    carried = key_files(compacted, after[0])
    assert carried == union, "the union, partitioned and sorted: the bytes one writer of all the keys writes"
    assert sum(len(data) for data in carried.values()) == KEY_BYTES * sum(
        sum(stats_of(compacted, g)["examples_by_split"].values()) for g in after
    )
    assert set(manifest(compacted)["files"]) >= set(after[0]["files"])
    assert not list(compacted.glob("v000001")), "the replaced generations' files (key files too) are gone"
    verify_dataset(str(compacted))


def test_an_append_after_compaction_still_drops_what_the_compacted_generations_held(
        compacted: Path, appended: tuple[Path, list[dict]], inputs: dict, tokenizer_dir: Path) -> None:
    dataset, day = appended
    held = {pair for name in "abc" for pair in as_tuples(inputs[name][1])}
    new = set(as_tuples(day)) - held
    assert 0 < len(new) < len(day) - 1, "the day has both pairs the dataset holds and new ones"
    generations = manifest(dataset)["generations"]
    assert [g["id"] for g in generations] == [4, 5]
    stats = stats_of(dataset, generations[-1])
    check_identity(stats)
    assert stats["records_read"] == len(day)
    assert sum(stats["examples_by_split"].values()) == len(new)
    assert stats["dropped_by_reason"] == {DROPPED_REASON: len(day) - len(new)}
    assert sorted(pairs_in(dataset, tokenizer_dir)) == sorted(held | new), "every pair of the union, once"
    assert key_files(dataset, generations[0]) == key_files(compacted, manifest(compacted)["generations"][0])
    verify_dataset(str(dataset))
