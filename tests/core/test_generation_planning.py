"""``seqpack.generations``: which inputs an ``--append`` reads, and which settings it must share with the dataset;
and the format-2 manifest that records generations (``schemas.manifest``): v1 and v2 parsed, tampering refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.config import RunConfig
from seqpack.generations import BUILD_SETTINGS, FoundFile, changed_setting, consumed_inputs, flag_of, plan_inputs
from seqpack.schemas import DatasetFormatError
from seqpack.schemas.manifest import (
    ConsumedInput,
    GenerationInfo,
    Manifest,
    ShardInfo,
    SplitInfo,
    TokenizerInfo,
    merged_splits,
)

TOKENIZER = TokenizerInfo(name="tok", vocab_size=100, pad_id=0, bos_id=1, eos_id=2, fingerprint="f" * 16)


def consumed(path: str, content: str, *, modified: float = 1.0) -> ConsumedInput:
    return ConsumedInput(path=path, size=len(content), sha256=sha(content), modified=modified, start=0,
                         stop=len(content))


def sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def generation(gid: int, inputs: list[ConsumedInput], shards: int = 1) -> GenerationInfo:
    directory = f"v{gid:06d}"
    infos = [ShardInfo(path=f"{directory}/train/part-{i:05d}-of-{shards:05d}.parquet", rows=2, examples=3,
                       tokens=20, bytes=100, sha256=sha(f"{gid}-{i}")) for i in range(shards)]
    split = SplitInfo(rows=2 * shards, examples=3 * shards, tokens=20 * shards, shards=infos)
    return GenerationInfo(id=gid, directory=directory, splits={"train": split}, files=[f"{directory}/stats.json"],
                          inputs=inputs, created_by="test")


class Disk:
    """Files as the filesystem lists them, and their content, with a record of which were hashed."""

    def __init__(self, files: dict[str, tuple[str, float]]) -> None:
        self.files = files
        self.hashed: list[str] = []

    def found(self) -> list[FoundFile]:
        return [FoundFile(path, len(content), modified) for path, (content, modified) in self.files.items()]

    def sha256_of(self, path: str) -> str:
        self.hashed.append(path)
        return sha(self.files[path][0])


# ---------------------------------------------------------------------------------------------- plan_inputs


def test_plan_sorts_each_kind_of_file() -> None:
    generations = [
        generation(1, [consumed("a.jsonl", "aaaa"), consumed("b.jsonl", "bbbbb")]),
        generation(2, [consumed("c.jsonl", "cccccc"), consumed("gone.jsonl", "g")]),
    ]
    disk = Disk({
        "a.jsonl": ("aaaa", 1.0),          # unchanged: not even hashed
        "b.jsonl": ("bbbbb", 9.0),         # touched, same content: hashed, consumed
        "c.jsonl": ("CCCCCC", 9.0),        # same size, other content: changed
        "copy-of-a.jsonl": ("aaaa", 5.0),  # a consumed file's content under a new name
        "new.jsonl": ("fresh pairs", 5.0),  # new, and no consumed file has its size: not hashed
        "same-size.jsonl": ("zzzz", 5.0),  # new, with a consumed file's size: hashed, new
    })
    plan = plan_inputs(disk.found(), generations, sha256_of=disk.sha256_of)
    assert [f.path for f in plan.new] == ["new.jsonl", "same-size.jsonl"]
    assert [f.path for f in plan.consumed] == ["a.jsonl", "b.jsonl"]
    assert [(f.path, was) for f, was in plan.copies] == [("copy-of-a.jsonl", "a.jsonl")]
    [changed] = plan.changed
    assert (changed.path, changed.generation, changed.size, changed.sha256) == ("c.jsonl", 2, 6, sha("CCCCCC"))
    assert changed.consumed == generations[1].inputs[0]
    assert [c.path for c in plan.missing] == ["gone.jsonl"]
    assert sorted(disk.hashed) == ["b.jsonl", "c.jsonl", "copy-of-a.jsonl", "same-size.jsonl"]


def test_no_generation_consumed_anything_every_file_is_new_and_none_is_hashed() -> None:
    disk = Disk({"x": ("1", 1.0), "y": ("22", 1.0)})
    plan = plan_inputs(disk.found(), [generation(1, [])], sha256_of=disk.sha256_of)
    assert [f.path for f in plan.new] == ["x", "y"] and disk.hashed == []


def test_the_latest_generation_to_consume_a_path_is_its_record() -> None:
    """A path consumed again after a --rebuild is compared with its newest record."""
    generations = [generation(1, [consumed("a", "old")]), generation(3, [consumed("a", "newer")])]
    assert consumed_inputs(generations)["a"][0] == 3
    disk = Disk({"a": ("newer", 1.0)})
    plan = plan_inputs(disk.found(), generations, sha256_of=disk.sha256_of)
    assert [f.path for f in plan.consumed] == ["a"] and not plan.changed


contents = st.text(alphabet="ab", min_size=1, max_size=4)


@st.composite
def histories(draw: Any) -> tuple[list[GenerationInfo], Disk]:
    """Generations that consumed some files, and a disk where files were kept, touched, edited, copied, added."""
    consumed_files = draw(st.dictionaries(st.sampled_from([f"c{i}" for i in range(6)]), contents, max_size=6))
    paths = sorted(consumed_files)
    split = draw(st.integers(0, len(paths)))
    generations = [
        generation(1, [consumed(p, consumed_files[p]) for p in paths[:split]]),
        generation(2, [consumed(p, consumed_files[p]) for p in paths[split:]]),
    ]
    files: dict[str, tuple[str, float]] = {}
    for path, content in consumed_files.items():
        fate = draw(st.sampled_from(["kept", "touched", "edited", "gone"]))
        if fate == "kept":
            files[path] = (content, 1.0)
        elif fate == "touched":
            files[path] = (content, 2.0)
        elif fate == "edited":
            files[path] = (draw(contents), draw(st.sampled_from([1.0, 2.0])))
    for i in range(draw(st.integers(0, 5))):
        files[f"n{i}"] = (draw(contents), 3.0)
    return generations, Disk(files)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_every_found_file_lands_in_exactly_one_bucket(history: tuple[list[GenerationInfo], Disk]) -> None:
    generations, disk = history
    plan = plan_inputs(disk.found(), generations, sha256_of=disk.sha256_of)
    buckets = [
        *(f.path for f in plan.new), *(f.path for f in plan.consumed), *(f.path for f, _ in plan.copies),
        *(c.path for c in plan.changed),
    ]
    assert sorted(buckets) == sorted(disk.files), "each file found is new, consumed, a copy or changed, once"
    recorded = consumed_inputs(generations)
    assert [c.path for c in plan.missing] == sorted(set(recorded) - set(disk.files))
    consumed_contents = {c.sha256 for g in generations for c in g.inputs}
    for found in plan.new:
        assert sha(disk.files[found.path][0]) not in consumed_contents, "content already consumed is never new"
        assert found.path not in recorded
    for found, was in plan.copies:
        assert sha(disk.files[found.path][0]) == recorded[was][1].sha256
    for changed in plan.changed:
        assert sha(disk.files[changed.path][0]) != recorded[changed.path][1].sha256


@settings(max_examples=200, deadline=None)
@given(histories())
def test_only_files_whose_metadata_changed_or_whose_size_collides_are_hashed(
    history: tuple[list[GenerationInfo], Disk],
) -> None:
    generations, disk = history
    plan_inputs(disk.found(), generations, sha256_of=disk.sha256_of)
    recorded = consumed_inputs(generations)
    sizes = {c.size for g in generations for c in g.inputs}
    must_hash = set()
    for path, (content, modified) in disk.files.items():
        if path in recorded:
            if (len(content), modified) != (recorded[path][1].size, recorded[path][1].modified):
                must_hash.add(path)
        elif len(content) in sizes:
            must_hash.add(path)
    assert sorted(disk.hashed) == sorted(must_hash), "each file is hashed at most once, and only when needed"


# ---------------------------------------------------------------------------------------------- changed_setting


def manifest_of(config: RunConfig, tokenizer: TokenizerInfo = TOKENIZER, version: int = 2) -> Manifest:
    gen = generation(1, [consumed("a", "x")])
    return Manifest(max_length=config.max_length, packing=config.packing, file_format=config.file_format,
                    tokenizer=tokenizer, splits=merged_splits([gen]), config=config.to_dict(), created_by="test",
                    format_version=version, revision=1, directory=gen.directory, files=list(gen.files),
                    generations=[gen])


BASE = RunConfig(inputs=["in/"], output="out", tokenizer="tok", max_length=128)


def through_json(manifest: Manifest) -> Manifest:
    return Manifest.from_json(manifest.to_json())


def test_the_same_settings_read_back_from_the_manifest_are_unchanged() -> None:
    """Tuples become lists in JSON: a setting read back must still compare equal to its own."""
    previous = through_json(manifest_of(BASE))
    assert changed_setting(previous, BASE.to_dict(), TOKENIZER.fingerprint) is None


@pytest.mark.parametrize(("change", "flag"), [
    ({"max_length": 256}, "--max-length"),
    ({"template": "alpaca"}, "--template"),
    ({"packing": "wrap"}, "--packing"),
    ({"seed": 7}, "--seed"),
    ({"file_format": "arrow"}, "--format"),
    ({"add_eos": False}, "--eos/--no-eos"),
    ({"validation_fraction": 0.25}, "--validation-fraction"),
    ({"pair_boundary": "joint"}, "--pair-boundary"),
])
def test_a_changed_build_setting_is_named_with_both_values(change: dict, flag: str) -> None:
    previous = through_json(manifest_of(BASE))
    now = replace(BASE, **change)
    reason = changed_setting(previous, now.to_dict(), TOKENIZER.fingerprint)
    assert reason is not None and reason.startswith(flag + " is ") and "\n" not in reason
    setting = next(iter(change))
    assert json.dumps(now.to_dict()[setting]) in reason and json.dumps(BASE.to_dict()[setting]) in reason


@pytest.mark.parametrize("change", [
    {"inputs": ["elsewhere/"]}, {"output": "gs://b/out"}, {"shard_bytes": 12345}, {"row_group_size": 7},
    {"max_reject_fraction": 0.5}, {"tokenizer": "/copy/of/tok"}, {"append": True}, {"audit": "strict"},
])
def test_settings_that_do_not_shape_examples_may_change(change: dict) -> None:
    previous = through_json(manifest_of(BASE))
    assert changed_setting(previous, replace(BASE, **change).to_dict(), TOKENIZER.fingerprint) is None


def old_truncate_dataset() -> Manifest:
    """A dataset built before truncate-target: its manifest records the old default's name, ``truncate``."""
    manifest = manifest_of(BASE)
    return replace(manifest, config={**manifest.config, "overlong": "truncate"})


def test_a_dataset_built_with_the_old_truncate_is_refused_with_the_flag_that_appends_to_it() -> None:
    reason = changed_setting(old_truncate_dataset(), BASE.to_dict(), TOKENIZER.fingerprint)
    assert BASE.overlong == "truncate-target"
    assert reason is not None and reason.startswith('--overlong is "truncate-target" here')
    assert reason.endswith("(now named truncate-left): pass --overlong truncate-left to add to it")


@pytest.mark.parametrize("name", ["truncate-left", "truncate"])
def test_truncate_left_appends_to_a_dataset_built_with_the_old_truncate(name: str) -> None:
    now = replace(BASE, overlong=name)
    assert now.overlong == "truncate-left", "the old name is recorded under the new one"
    assert changed_setting(old_truncate_dataset(), now.to_dict(), TOKENIZER.fingerprint) is None
    assert changed_setting(manifest_of(now), BASE.to_dict(), TOKENIZER.fingerprint) is not None


def test_the_tokenizer_is_compared_by_fingerprint() -> None:
    previous = manifest_of(BASE)
    reason = changed_setting(previous, replace(BASE, tokenizer="other-tok").to_dict(), "0" * 16)
    assert reason is not None and "the tokenizer differs" in reason and "other-tok" in reason
    assert "0" * 16 in reason and TOKENIZER.fingerprint in reason


def test_a_setting_the_dataset_did_not_record_is_not_compared() -> None:
    """A dataset written before a setting existed accepts an append with that setting's value (its default)."""
    config = BASE.to_dict()
    del config["min_target_tokens"]
    previous = replace(manifest_of(BASE), config=config)
    assert changed_setting(previous, replace(BASE, min_target_tokens=3).to_dict(), TOKENIZER.fingerprint) is None


def test_a_dataset_built_before_the_boundary_modes_was_built_turn_and_split() -> None:
    config = BASE.to_dict()
    del config["chat_boundary"], config["pair_boundary"]
    previous = replace(manifest_of(BASE), config=config)
    assert changed_setting(previous, BASE.to_dict(), TOKENIZER.fingerprint) is None
    refused = changed_setting(previous, replace(BASE, pair_boundary="joint").to_dict(), TOKENIZER.fingerprint)
    assert refused and refused.startswith('--pair-boundary is "joint" here, but the dataset was built with "split"')


def test_every_build_setting_is_a_run_setting_with_a_flag() -> None:
    fields = set(BASE.to_dict())
    assert set(BUILD_SETTINGS) <= fields, set(BUILD_SETTINGS) - fields
    assert flag_of("file_format") == "--format" and flag_of("max_length") == "--max-length"


# ---------------------------------------------------------------------------------------------- the manifest


def raw_of(manifest: Manifest) -> dict:
    return json.loads(manifest.to_json())


def two_generations() -> Manifest:
    gens = [generation(1, [consumed("a", "x")]), generation(2, [consumed("b", "yy")], shards=2)]
    return Manifest(max_length=128, packing="bfd", file_format="parquet", tokenizer=TOKENIZER,
                    splits=merged_splits(gens), config=BASE.to_dict(), created_by="test", revision=2,
                    directory="v000002", files=[f for g in gens for f in g.files], generations=gens)


def test_a_version_2_manifest_reads_back_as_written() -> None:
    manifest = two_generations()
    again = Manifest.from_json(manifest.to_json())
    assert again.to_json() == manifest.to_json()
    assert again.generations == manifest.generations, "generations, inputs and shards parse to what was written"
    assert again.inputs_recorded and [g.id for g in again.generations] == [1, 2]
    assert again.splits["train"].examples == 9 and len(again.shard_paths()) == 3
    assert again.restricted_to([2]).shard_paths() == manifest.generations[1].shard_paths()


def test_a_version_1_manifest_is_one_generation_without_inputs() -> None:
    raw = raw_of(two_generations().restricted_to([2]))
    del raw["generations"]
    raw["format_version"] = 1
    manifest = Manifest.from_json(json.dumps(raw))
    assert manifest.format_version == 1 and not manifest.inputs_recorded
    [only] = manifest.generations
    assert (only.id, only.directory, only.inputs) == (2, "v000002", [])
    assert only.shard_paths() == manifest.shard_paths() and only.files == manifest.files


def test_a_flat_version_1_dataset_before_revisions_is_generation_0() -> None:
    raw = raw_of(two_generations().restricted_to([1]))
    del raw["generations"]
    raw.update(format_version=1, revision=0, directory="")
    for shard in raw["splits"]["train"]["shards"]:
        shard["path"] = shard["path"].removeprefix("v000001/")
    raw["files"] = ["stats.json"]
    manifest = Manifest.from_json(json.dumps(raw))
    assert [(g.id, g.directory) for g in manifest.generations] == [(0, "")]


def tamper(edit: Any) -> str:
    raw = raw_of(two_generations())
    edit(raw)
    with pytest.raises(DatasetFormatError) as error:
        Manifest.from_json(json.dumps(raw), where="ds/manifest.json")
    return str(error.value)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda raw: raw.update(generations=[]), "lists no generation"),
    (lambda raw: raw.pop("generations"), "malformed field"),
    (lambda raw: raw["generations"].reverse(), "not distinct growing integers"),
    (lambda raw: raw["generations"][1].update(id=1), "not distinct growing integers"),
    (lambda raw: raw["generations"][0].update(id=-1), "not distinct growing integers"),
    (lambda raw: raw["generations"][0].update(id=True), "not distinct growing integers"),
    (lambda raw: raw.update(revision=3), "the newest generation is 2"),
    (lambda raw: raw["generations"].pop(), "the newest generation is 1"),
    (lambda raw: raw["generations"][1]["splits"]["train"]["shards"].pop(), "generations' shards are not"),
    (lambda raw: raw["splits"]["train"]["shards"].reverse(), "shards are not the shards"),
    (lambda raw: raw["generations"][0]["files"].append("v000001/extra.txt"), "generations' files are not"),
    (lambda raw: raw["generations"][0]["inputs"][0].update(size=-1), "input 'a' size"),
    (lambda raw: raw["generations"][0]["inputs"][0].pop("sha256"), "malformed field"),
    (lambda raw: raw["generations"][0].update(directory="../elsewhere"), "leaves the dataset directory"),
    (lambda raw: raw["generations"][0].update(unknown=1), "malformed field"),
])
def test_tampered_generations_are_refused(edit: Any, says: str) -> None:
    message = tamper(edit)
    assert says in message
    assert "ds/manifest.json" in message or "in the manifest" in message


def test_the_boundary_of_a_chat_dataset_is_a_build_setting() -> None:
    chat = replace(BASE, template="chat")
    joint = replace(chat, chat_boundary="joint").to_dict()
    reason = changed_setting(through_json(manifest_of(chat)), joint, TOKENIZER.fingerprint)
    assert reason == '--chat-boundary is "joint" here, but the dataset was built with "turn"'
