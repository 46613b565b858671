"""A dataset that grows with its data, through the CLI: ``seqpack run --append`` commits a generation holding only
the inputs no generation consumed, says "up to date" when there are none, refuses a changed build setting, and
leaves the committed generations whole when it fails or is killed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import IN_PROCESS, write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.cli.main import main
from seqpack.dataset import open_manifest, verify_dataset
from seqpack.faults import FAULT_ENV
from seqpack.schemas import FORMAT_VERSION, LOCK_NAME, MANIFEST_NAME, STAGING_NAME, STATS_NAME

DAYS = 4
PER_DAY = 60


def seqpack_run(inputs: Path, output: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["run", "-i", str(inputs), "-o", str(output), "-t", str(tokenizer), "--max-length", "128",
            "--bucket-tokens", "2048", IN_PROCESS, *extra]


def cli(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str]:
    """The command's exit status and what it printed on stderr."""
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def files_on_disk(output: Path) -> set[str]:
    return {p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file()}


def committed_files(output: Path) -> set[str]:
    manifest = open_manifest(str(output))
    return set(manifest.shard_paths()) | set(manifest.files) | {MANIFEST_NAME}


def day_pairs(pairs: list[dict], day: int) -> list[dict]:
    return pairs[day * PER_DAY : (day + 1) * PER_DAY]


def pairs_of_generation(output: Path, generation: dict, tokenizer: AutoTokenizer) -> list[tuple[str, str]]:
    """Every example of one generation's shards, decoded back to (source, target)."""
    seen = []
    for split in generation["splits"].values():
        for shard in split["shards"]:
            for row in pq.read_table(output / shard["path"]).to_pylist():
                start = 0
                for length in row["seq_lens"]:
                    ids = row["input_ids"][start : start + length]
                    labels = row["labels"][start : start + length]
                    start += length
                    trained = [t for t in labels if t != IGNORE_INDEX]
                    n_source = len(ids) - len(trained)
                    seen.append((tokenizer.decode(ids[1:n_source]).removesuffix(" = "),
                                 tokenizer.decode(trained[:-1])))
    return seen


def as_tuples(pairs: list[dict]) -> list[tuple[str, str]]:
    return [(p["source"], p["target"]) for p in pairs]


# ------------------------------------------------------------------------------------- a dataset grown by days


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory, pairs: list, tokenizer_dir: Path) -> dict:
    """Day 0 by ``--append`` onto a missing output (generation 1); day 1 (generation 2); nothing new ("up to
    date"); days 2 and 3 together (generation 3). What each step printed and left is kept for the tests."""
    root = tmp_path_factory.mktemp("grown")
    inputs, output = root / "incoming", root / "dataset"
    inputs.mkdir()

    def step(*extra: str) -> tuple[int, str]:
        """A module fixture cannot use capsys: capture what the command prints by hand."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(seqpack_run(inputs, output, tokenizer_dir, *extra))
        return code, err.getvalue()

    write_jsonl(inputs / "day-0.jsonl", day_pairs(pairs, 0))
    first = step("--append")
    write_jsonl(inputs / "day-1.jsonl", day_pairs(pairs, 1))
    second = step("--append")
    before = {"manifest": (output / MANIFEST_NAME).read_bytes(), "files": files_on_disk(output),
              "entries": sorted(p.name for p in output.iterdir())}
    nothing = step("--append")
    after = {"manifest": (output / MANIFEST_NAME).read_bytes(), "files": files_on_disk(output),
             "entries": sorted(p.name for p in output.iterdir())}
    for day in (2, 3):
        write_jsonl(inputs / f"day-{day}.jsonl", day_pairs(pairs, day))
    third = step("--append")
    return {"inputs": inputs, "output": output, "steps": [first, second, nothing, third], "before": before,
            "after": after}


def test_each_append_commits_a_generation_of_only_its_new_files(grown: dict) -> None:
    codes = [code for code, _ in grown["steps"]]
    assert codes == [0, 0, 0, 0], grown["steps"]
    manifest = json.loads((grown["output"] / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    generations = manifest["generations"]
    assert [g["id"] for g in generations] == [1, 2, 3], "the up-to-date append added no generation"
    consumed = [sorted(Path(i["path"]).name for i in g["inputs"]) for g in generations]
    assert consumed == [["day-0.jsonl"], ["day-1.jsonl"], ["day-2.jsonl", "day-3.jsonl"]]
    for generation in generations:
        for consumed_input in generation["inputs"]:
            data = Path(consumed_input["path"]).read_bytes()
            assert consumed_input["size"] == len(data) and consumed_input["stop"] == len(data)
    assert sorted(p.name for p in grown["output"].iterdir() if p.name.startswith("v")) == [
        "v000001", "v000002", "v000003"]
    assert "wrote generation 3 of" in grown["steps"][3][1] and "now 3 generations" in grown["steps"][3][1]
    verify_dataset(str(grown["output"]))
    assert files_on_disk(grown["output"]) == committed_files(grown["output"])


def test_each_generation_holds_exactly_its_files_pairs(grown: dict, pairs: list, tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    output = grown["output"]
    manifest = json.loads((output / MANIFEST_NAME).read_text())
    days_of = {1: [0], 2: [1], 3: [2, 3]}
    union = []
    for generation in manifest["generations"]:
        expected = [pair for day in days_of[generation["id"]] for pair in as_tuples(day_pairs(pairs, day))]
        decoded = pairs_of_generation(output, generation, tokenizer)
        assert sorted(decoded) == sorted(expected), f"generation {generation['id']}"
        stats = json.loads((output / generation["directory"] / STATS_NAME).read_text())
        assert stats["records_read"] == len(expected), "each generation read only its new files"
        assert sum(stats["examples_by_split"].values()) == len(expected)
        union += decoded
    assert sorted(union) == sorted(as_tuples(pairs[: DAYS * PER_DAY])), "every input pair appears exactly once"
    table = pa.concat_tables(pq.read_table(output / path) for path in open_manifest(str(output)).shard_paths())
    assert sum(len(lens) for lens in table.column("seq_lens").to_pylist()) == DAYS * PER_DAY


def test_an_append_with_nothing_new_is_up_to_date_and_changes_nothing(grown: dict) -> None:
    code, err = grown["steps"][2]
    assert code == 0
    assert "is up to date: no new input (generation 2 is the newest of 2 generations)" in err
    before, after = grown["before"], grown["after"]
    assert after["manifest"] == before["manifest"], "the manifest is unchanged byte for byte"
    assert after["files"] == before["files"] and after["entries"] == before["entries"], "no new directory or file"
    assert LOCK_NAME not in after["entries"] and STAGING_NAME not in after["entries"], "the lock is released"


# ------------------------------------------------------------------------------------- what an append refuses


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory, pairs: list, tokenizer_dir: Path) -> dict:
    """A dataset of one generation (day 0), and day 1 waiting in the inputs."""
    root = tmp_path_factory.mktemp("one-day")
    inputs, output = root / "incoming", root / "dataset"
    inputs.mkdir()
    write_jsonl(inputs / "day-0.jsonl", day_pairs(pairs, 0))
    assert main(seqpack_run(inputs, output, tokenizer_dir, "--quiet")) == 0
    write_jsonl(inputs / "day-1.jsonl", day_pairs(pairs, 1))
    return {"inputs": inputs, "output": output, "manifest": (output / MANIFEST_NAME).read_bytes()}


@pytest.mark.parametrize(("flags", "named"), [
    (["--max-length", "256"], "--max-length is 256 here, but the dataset was built with 128"),
    (["--template", "alpaca"], "--template"),
    (["--packing", "wrap"], "--packing"),
    (["--seed", "7"], "--seed"),
    (["--format", "arrow"], "--format"),
    (["--validation-fraction", "0.1"], "--validation-fraction"),
])
def test_a_changed_build_setting_is_refused_naming_it(
    one_day: dict, tokenizer_dir: Path, capsys: pytest.CaptureFixture, flags: list, named: str
) -> None:
    args = seqpack_run(one_day["inputs"], one_day["output"], tokenizer_dir, "--append")
    if flags[0] == "--max-length":
        args = [a for a in args if a not in ("--max-length", "128")]
    code, err = cli(capsys, args + flags)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, f"one line: {err}"
    assert "--append refused" in err and named in err and "--rebuild" in err
    assert (one_day["output"] / MANIFEST_NAME).read_bytes() == one_day["manifest"]
    assert not (one_day["output"] / LOCK_NAME).exists()
    assert sorted(p.name for p in one_day["output"].iterdir()) == ["manifest.json", "v000001"]


def test_another_tokenizer_is_refused_by_its_fingerprint(
    one_day: dict, gpt2_like_tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = cli(capsys, seqpack_run(one_day["inputs"], one_day["output"], gpt2_like_tokenizer_dir, "--append"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "the tokenizer differs" in err and "fingerprint" in err and str(gpt2_like_tokenizer_dir) in err
    assert (one_day["output"] / MANIFEST_NAME).read_bytes() == one_day["manifest"]


def test_the_same_tokenizer_elsewhere_is_the_same_tokenizer(
    one_day: dict, tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Compared by fingerprint, not path: a copy in another directory builds the same examples."""
    tokenizer = shutil.copytree(tokenizer_dir, tmp_path / "elsewhere")
    output = shutil.copytree(one_day["output"], tmp_path / "dataset")
    code, err = cli(capsys, seqpack_run(one_day["inputs"], output, tokenizer, "--append"))
    assert code == 0, err
    assert [g.id for g in open_manifest(str(output)).generations] == [1, 2]


def test_settings_that_do_not_shape_examples_may_differ(
    tmp_path: Path, pairs: list, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs, output = tmp_path / "incoming", tmp_path / "dataset"
    inputs.mkdir()
    write_jsonl(inputs / "day-0.jsonl", day_pairs(pairs, 0))
    assert main(seqpack_run(inputs, output, tokenizer_dir, "--quiet")) == 0
    for day, flags in ((1, ["--shard-bytes", "100000"]), (2, ["--row-group-size", "3"])):
        write_jsonl(inputs / f"day-{day}.jsonl", day_pairs(pairs, day))
        code, err = cli(capsys, seqpack_run(inputs, output, tokenizer_dir, "--append", *flags))
        assert code == 0, err
    manifest = open_manifest(str(output))
    assert [g.id for g in manifest.generations] == [1, 2, 3]
    newest = manifest.generations[-1]
    assert pq.ParquetFile(output / newest.shard_paths()[0]).metadata.row_group(0).num_rows <= 3
    verify_dataset(str(output))


# ------------------------------------------------------------------------------------- consumed inputs, by content


@pytest.fixture
def two_days(tmp_path: Path, pairs: list, tokenizer_dir: Path) -> dict:
    """Two generations (days 0 and 1), each its own run."""
    inputs, output = tmp_path / "incoming", tmp_path / "dataset"
    inputs.mkdir()
    for day in (0, 1):
        write_jsonl(inputs / f"day-{day}.jsonl", day_pairs(pairs, day))
        assert main(seqpack_run(inputs, output, tokenizer_dir, "--quiet", "--append")) == 0
    return {"inputs": inputs, "output": output, "tokenizer": tokenizer_dir}


def test_a_consumed_input_that_changed_is_not_read_again_and_is_named(
    two_days: dict, pairs: list, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    inputs, output = two_days["inputs"], two_days["output"]
    changed = inputs / "day-0.jsonl"
    write_jsonl(changed, day_pairs(pairs, 0) + day_pairs(pairs, 3)[:5])  # someone appended to a consumed file
    write_jsonl(inputs / "day-2.jsonl", day_pairs(pairs, 2))
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))
    assert code == 0, err
    warning = next(r.getMessage() for r in caplog.records if "changed since generation 1 consumed it" in r.getMessage())
    assert caplog.records[0].levelname == "WARNING"
    assert str(changed) in warning and "not read again" in warning and "--rebuild" in warning
    newest = open_manifest(str(output)).generations[-1]
    assert [Path(i.path).name for i in newest.inputs] == ["day-2.jsonl"]
    stats = json.loads((output / newest.directory / STATS_NAME).read_text())
    assert stats["records_read"] == PER_DAY, "only the new file was read, not the changed one"


def test_a_consumed_input_rewritten_with_the_same_bytes_is_still_consumed(
    two_days: dict, capsys: pytest.CaptureFixture
) -> None:
    """A new modification time alone makes the run hash the file: the same content is not new, nor changed."""
    touched = two_days["inputs"] / "day-1.jsonl"
    touched.write_bytes(touched.read_bytes())
    os.utime(touched, (1_000_000_000, 1_000_000_000))
    code, err = cli(capsys, seqpack_run(two_days["inputs"], two_days["output"], two_days["tokenizer"], "--append"))
    assert code == 0 and "is up to date" in err and "changed" not in err, err


def test_a_renamed_copy_of_a_consumed_file_is_not_read_again(
    two_days: dict, capsys: pytest.CaptureFixture
) -> None:
    inputs, output = two_days["inputs"], two_days["output"]
    shutil.copy(inputs / "day-0.jsonl", inputs / "day-0-copy.jsonl")
    os.replace(inputs / "day-1.jsonl", inputs / "renamed-day-1.jsonl")
    before = (output / MANIFEST_NAME).read_bytes()
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))
    assert code == 0, err
    assert "is up to date" in err and "2 new file names for content already consumed" in err
    assert (output / MANIFEST_NAME).read_bytes() == before


def test_rebuild_starts_over_from_every_input(two_days: dict, pairs: list, capsys: pytest.CaptureFixture) -> None:
    inputs, output = two_days["inputs"], two_days["output"]
    write_jsonl(inputs / "day-2.jsonl", day_pairs(pairs, 2))
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--rebuild", "--seed", "3"))
    assert code == 0, err
    manifest = open_manifest(str(output))
    [generation] = manifest.generations
    assert generation.id == 3 and manifest.config["seed"] == 3
    assert sorted(Path(i.path).name for i in generation.inputs) == ["day-0.jsonl", "day-1.jsonl", "day-2.jsonl"]
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "v000003"], "old generations removed"
    assert generation.examples == 3 * PER_DAY
    assert files_on_disk(output) == committed_files(output)
    # the rebuilt dataset grows again with its new settings
    write_jsonl(inputs / "day-3.jsonl", day_pairs(pairs, 3))
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append", "--seed", "3"))
    assert code == 0, err
    assert [g.id for g in open_manifest(str(output)).generations] == [3, 4]


def test_append_onto_an_empty_output_directory_creates_generation_1(
    tmp_path: Path, pairs: list, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs, output = tmp_path / "incoming", tmp_path / "empty"
    inputs.mkdir()
    output.mkdir()
    write_jsonl(inputs / "day-0.jsonl", day_pairs(pairs, 0))
    code, err = cli(capsys, seqpack_run(inputs, output, tokenizer_dir, "--append"))
    assert code == 0, err
    [generation] = open_manifest(str(output)).generations
    assert generation.id == 1 and [Path(i.path).name for i in generation.inputs] == ["day-0.jsonl"]


def test_append_and_rebuild_together_are_refused(
    one_day: dict, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = cli(capsys, seqpack_run(one_day["inputs"], one_day["output"], tokenizer_dir, "--append",
                                        "--rebuild"))
    assert code == 2 and "pass one of them" in err


# ------------------------------------------------------------------------------------- format version 1


def as_version_1(output: Path) -> None:
    """Rewrite a one-generation dataset's manifest as seqpack wrote it before generations (format version 1)."""
    raw = json.loads((output / MANIFEST_NAME).read_text())
    assert len(raw["generations"]) == 1
    del raw["generations"]
    raw["format_version"] = 1
    (output / MANIFEST_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def test_append_onto_a_version_1_dataset_is_refused_but_readers_open_it(
    tmp_path: Path, pairs: list, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs, output = tmp_path / "incoming", tmp_path / "old"
    inputs.mkdir()
    write_jsonl(inputs / "day-0.jsonl", day_pairs(pairs, 0))
    assert main(seqpack_run(inputs, output, tokenizer_dir, "--quiet")) == 0
    as_version_1(output)
    before = (output / MANIFEST_NAME).read_bytes()
    write_jsonl(inputs / "day-1.jsonl", day_pairs(pairs, 1))
    code, err = cli(capsys, seqpack_run(inputs, output, tokenizer_dir, "--append"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "format version 1" in err and "--rebuild" in err
    assert (output / MANIFEST_NAME).read_bytes() == before
    manifest = open_manifest(str(output))
    assert manifest.format_version == 1 and not manifest.inputs_recorded
    [generation] = manifest.generations
    assert generation.inputs == [] and generation.shard_paths() == manifest.shard_paths()
    assert verify_dataset(str(output)) is not None
    assert main(["verify", str(output)]) == 0
    torch = pytest.importorskip("torch")
    from seqpack.loader import PackedDataset

    examples = sum(len(sample["seq_lens"]) for sample in PackedDataset(str(output), split="train", seed=0))
    assert examples == PER_DAY and torch is not None
    # --rebuild converts it: a dataset of the current version, that can grow again
    code, err = cli(capsys, seqpack_run(inputs, output, tokenizer_dir, "--rebuild"))
    assert code == 0, err
    assert open_manifest(str(output)).format_version == FORMAT_VERSION


# ------------------------------------------------------------------------------------- failures leave it whole


def run_killed(args: list[str], point: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{FAULT_ENV: point})
    return subprocess.run([sys.executable, "-m", "seqpack.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("point", ["write_shard", "commit_manifest"])
def test_an_append_killed_midway_leaves_the_generations_whole_and_the_next_succeeds(
    two_days: dict, pairs: list, capsys: pytest.CaptureFixture, point: str
) -> None:
    inputs, output = two_days["inputs"], two_days["output"]
    before = (output / MANIFEST_NAME).read_bytes()
    committed = committed_files(output)
    write_jsonl(inputs / "day-2.jsonl", day_pairs(pairs, 2))
    killed = run_killed(seqpack_run(inputs, output, two_days["tokenizer"], "--append"), point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (output / MANIFEST_NAME).read_bytes() == before
    assert committed <= files_on_disk(output), "every file of the committed generations is still there"
    verify_dataset(str(output))
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))
    assert code == 0, err
    manifest = open_manifest(str(output))
    assert [Path(i.path).name for i in manifest.generations[-1].inputs] == ["day-2.jsonl"]
    assert [g.id for g in manifest.generations][:2] == [1, 2] and len(manifest.generations) == 3
    assert files_on_disk(output) == committed_files(output), "the crashed append's files are cleaned up"
    verify_dataset(str(output))


def test_an_input_written_while_the_job_reads_it_fails_the_run(
    two_days: dict, pairs: list, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job hashes what it reads; a file that grew after the driver planned it fails the run, commits nothing."""
    from seqpack.transforms import hash_inputs

    inputs, output = two_days["inputs"], two_days["output"]
    before = (output / MANIFEST_NAME).read_bytes()
    growing = write_jsonl(inputs / "day-2.jsonl", day_pairs(pairs, 2))
    real_sha256 = hash_inputs.sha256_file

    def writer_still_appending(path: str) -> tuple[str, int]:
        if path == str(growing):
            with open(growing, "a", encoding="utf-8") as out:
                out.write(json.dumps(day_pairs(pairs, 3)[0]) + "\n")
        return real_sha256(path)

    monkeypatch.setattr(hash_inputs, "sha256_file", writer_still_appending)
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))
    assert code == 1, err
    assert f"input {growing} changed while the run read it" in err and "nothing was committed" in err
    assert (output / MANIFEST_NAME).read_bytes() == before
    assert not (output / LOCK_NAME).exists()
    verify_dataset(str(output))


def test_an_empty_new_file_neither_blocks_appends_nor_is_consumed_before_it_has_content(
    two_days: dict, pairs: list, capsys: pytest.CaptureFixture
) -> None:
    """An exporter that creates its file, then writes it (or a day with no pairs) must not stop a daily append."""
    inputs, output = two_days["inputs"], two_days["output"]
    (inputs / "day-2.jsonl").touch()
    code, err = cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))
    assert code == 0, err
    write_jsonl(inputs / "day-3.jsonl", day_pairs(pairs, 3))
    assert cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))[0] == 0
    write_jsonl(inputs / "day-2.jsonl", day_pairs(pairs, 2))  # the exporter finished writing it
    assert cli(capsys, seqpack_run(inputs, output, two_days["tokenizer"], "--append"))[0] == 0
    consumed = {Path(i.path).name: i.size for g in open_manifest(str(output)).generations for i in g.inputs}
    assert consumed["day-2.jsonl"] == (inputs / "day-2.jsonl").stat().st_size, "its content was read"
