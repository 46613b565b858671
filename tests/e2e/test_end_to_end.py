"""The CLI end to end: every pair comes out exactly once, decodable, masked right; runs are reproducible."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.cli.main import main
from seqpack.schemas import STAGING_NAME
from seqpack.transforms.shard_groups import SHARD_BYTES_PER_TOKEN

BAD_RECORDS = [
    ('{"source": "no target"}', "missing_field"),
    ('{"source": null, "target": "x"}', "null_field"),
    ('{"source": 7, "target": "x"}', "not_a_string"),
    ('{"source": "a", "target": ""}', "empty_target"),
    ("{not json", "invalid_json"),
    ("[1, 2]", "not_an_object"),
]

SMALL = ("--bucket-tokens", "2048", "--shard-bytes", str(2 * 2048 * SHARD_BYTES_PER_TOKEN))
"""Small buckets, two to a shard: several shards, each assembled from staged parts."""


def run_cli(*args: str) -> int:
    """Run in-process on one worker unless the test picks the runner mode (startup of workers costs seconds)."""
    mode = [] if any(a.startswith("--direct_") for a in args) else ["--direct_running_mode=in_memory"]
    return main(["run", "--quiet", *args, *mode])


def read_rows(dataset: Path, split: str = "train") -> list[dict]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        rows += pq.read_table(dataset / shard["path"]).to_pylist()
    return rows


def segments(row: dict) -> list[tuple[list[int], list[int], list[int]]]:
    """(ids, labels, positions) of each example in a block, cut by seq_lens."""
    out, start = [], 0
    for length in row["seq_lens"]:
        out.append(
            (
                row["input_ids"][start : start + length],
                row["labels"][start : start + length],
                row["position_ids"][start : start + length],
            )
        )
        start += length
    return out


def shard_hashes(dataset: Path) -> dict[str, str]:
    return {
        str(p.relative_to(dataset)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def input_file(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    path = tmp_path_factory.mktemp("in") / "pairs.jsonl"
    lines = [json.dumps(p, ensure_ascii=False) for p in pairs]
    for i, (bad, _) in enumerate(BAD_RECORDS):
        lines.insert(10 + 40 * i, bad)
    return write_jsonl(path, lines)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, input_file: Path, tokenizer_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("out") / "ds"
    code = run_cli("-i", str(input_file), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "128", *SMALL)
    assert code == 0
    return out


def test_every_pair_comes_out_once_with_exact_masking(dataset: Path, pairs: list, tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    seen = []
    for row in read_rows(dataset):
        assert len(row["input_ids"]) == 128
        real = sum(row["seq_lens"])
        assert row["attention_mask"] == [1] * real + [0] * (128 - real)
        assert all(label == IGNORE_INDEX for label in row["labels"][real:])
        for ids, labels, positions in segments(row):
            assert positions == list(range(len(ids)))
            assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
            trained = [t for t in labels if t != IGNORE_INDEX]
            n_source = len(ids) - len(trained)
            assert all(label == IGNORE_INDEX for label in labels[:n_source])
            assert labels[n_source:] == ids[n_source:]
            source = tokenizer.decode(ids[1:n_source])
            target = tokenizer.decode(trained[:-1])
            seen.append({"source": source.removesuffix(" = "), "target": target})
    key = lambda p: (p["source"], p["target"])  # noqa: E731
    assert sorted(seen, key=key) == sorted(pairs, key=key)


def test_manifest_stats_and_rejected(dataset: Path, pairs: list) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    stats = json.loads(dataset_file(dataset, "stats.json").read_text())
    assert stats["records_read"] == len(pairs) + len(BAD_RECORDS)
    assert stats["examples_by_split"] == {"train": len(pairs)}
    assert stats["records_rejected"] == len(BAD_RECORDS)
    assert stats["fill"] > 0.9
    assert len(manifest["splits"]["train"]["shards"]) > 1, "small buckets and shards give several shards"
    for shard in manifest["splits"]["train"]["shards"]:
        assert hashlib.sha256((dataset / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
    rejected = [json.loads(line) for line in dataset_file(dataset, "rejected/rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted(reason for _, reason in BAD_RECORDS)
    lines = Path(rejected[0]["file"]).read_text().splitlines()
    for entry in rejected:
        assert entry["line"] is not None
        raw_line = lines[entry["line"] - 1]
        if entry["reason"] == "invalid_json":
            assert entry["raw"] == raw_line, "a line that is not JSON is kept as it was"
        else:
            assert json.loads(entry["raw"]) == json.loads(raw_line)
    assert not (dataset / STAGING_NAME).exists()


def test_same_input_and_seed_give_identical_bytes_whatever_the_workers(
    dataset: Path, input_file: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    assert run_cli("-i", str(input_file), "-o", str(again), "-t", str(tokenizer_dir), "--max-length", "128", *SMALL,
                   "--direct_running_mode=multi_processing", "--direct_num_workers=2") == 0
    assert shard_hashes(again) == shard_hashes(dataset)
    other_seed = tmp_path / "seed1"
    assert run_cli("-i", str(input_file), "-o", str(other_seed), "-t", str(tokenizer_dir), "--max-length", "128",
                   *SMALL, "--seed", "1") == 0
    assert shard_hashes(other_seed) != shard_hashes(dataset)


def test_validation_split_wrap_packing_and_arrow(input_file: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "wrap"
    assert run_cli("-i", str(input_file), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "64",
                   "--packing", "wrap", "--validation-fraction", "0.2", "--format", "arrow") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stats = json.loads(dataset_file(out, "stats.json").read_text())
    assert set(manifest["splits"]) == {"train", "validation"}
    written = sum(stats["examples_by_split"].values())
    assert stats["examples_by_split"]["validation"] / written > 0.1
    assert stats["fill"] > 0.97
    assert manifest["splits"]["train"]["shards"][0]["path"].endswith(".arrow")


def test_overlong_drop_is_counted(input_file: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "drop"
    assert run_cli("-i", str(input_file), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "24",
                   "--overlong", "drop") == 0
    stats = json.loads(dataset_file(out, "stats.json").read_text())
    assert stats["dropped_by_reason"]["overlong"] > 0 and sum(stats["examples_by_split"].values()) > 0
    assert stats["tokens_dropped"] > 0


def test_split_policy_and_none_packing(input_file: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    assert run_cli("-i", str(input_file), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "12",
                   "--overlong", "split", "--packing", "none") == 0
    stats = json.loads(dataset_file(out, "stats.json").read_text())
    rows = read_rows(out)
    assert stats["examples_split"] > 0 and len(rows) == stats["pieces"]
    assert all(len(r["input_ids"]) <= 12 and r["attention_mask"] == [1] * len(r["input_ids"]) for r in rows)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqpack.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_usage_errors_exit_2_before_any_work(dataset: Path, input_file: Path, tokenizer_dir: Path,
                                             tmp_path: Path) -> None:
    cases = [
        (["-i", str(tmp_path / "nothing*.jsonl"), "-o", str(tmp_path / "a"), "-t", str(tokenizer_dir)], "nothing"),
        (["-i", str(input_file), "-o", str(tmp_path / "b"), "-t", str(tmp_path / "no-tokenizer")], "tokenizer"),
        (["-i", str(input_file), "-o", str(dataset), "-t", str(tokenizer_dir)], "--overwrite"),
        (["-i", str(input_file), "-o", str(tmp_path / "c"), "-t", str(tokenizer_dir), "--max-lenght", "9"],
         "--max-lenght"),
    ]
    for args, expected in cases:
        result = cli("run", *args)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_demo_runs(tmp_path: Path) -> None:
    result = cli("demo", "--output", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    dataset = Path(result.stdout.strip().splitlines()[-1])
    assert (dataset / "manifest.json").exists()
    assert np.isclose(json.loads(dataset_file(dataset, "stats.json").read_text())["records_read"], 480)


# ------------------------------------------------------------------------------------ overlong policies, end to end
LONG_SOURCE = "the cat sees a green book in the garden " * 8
OVERLONG = [{"source": LONG_SOURCE, "target": "le chat"},  # the prompt alone is over --max-length
            {"source": "short", "target": LONG_SOURCE},  # the target is cut
            {"source": "a", "target": "b"}]


@pytest.fixture(scope="module")
def overlong_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("overlong") / "long.jsonl", OVERLONG)


def identity_holds(stats: dict) -> bool:
    written = sum(stats["examples_by_split"].values())
    return (stats["records_read"] == written + stats["records_rejected"] + stats["examples_dropped"]
            and stats["tokens_in"] == stats["tokens_written"] + stats["tokens_truncated"] + stats["tokens_dropped"])


@pytest.mark.parametrize(("policy", "written", "counts"), [
    ([], 2, {"examples_truncated": 1, "examples_target_cut": 1, "examples_prompt_lost": 0, "examples_dropped": 1}),
    (["--overlong", "truncate-left"], 3,
     {"examples_truncated": 2, "examples_target_cut": 1, "examples_prompt_lost": 1, "examples_dropped": 0}),
])
def test_overlong_policies_keep_the_accounts(overlong_file: Path, tokenizer_dir: Path, tmp_path: Path,
                                              policy: list[str], written: int, counts: dict) -> None:
    out = tmp_path / "out"
    assert run_cli("-i", str(overlong_file), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "16",
                   *policy) == 0
    stats = json.loads(dataset_file(out, "stats.json").read_text())
    assert identity_holds(stats) and sum(stats["examples_by_split"].values()) == written
    assert {key: stats[key] for key in counts} == counts
    assert stats["dropped_by_reason"] == ({"prompt_too_long": 1} if not policy else {})
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    examples = [segment for row in read_rows(out) for segment in segments(row)]
    if not policy:  # the default: every prompt whole, and no EOS after a cut target
        (cut,) = [ids for ids, _, _ in examples if len(ids) == 16]
        assert tokenizer.decode(cut).startswith("<s>short = the cat") and tokenizer.eos_token_id not in cut


def test_an_example_that_trains_no_token_is_rejected(gpt2_like_tokenizer_dir: Path, tmp_path: Path) -> None:
    """No BOS, an empty prompt and a one-token target without EOS: its only token is the example's first, which
    never takes loss once packed; it goes to rejected/, counted, instead of into a block."""
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_like_tokenizer_dir))
    word = next(w for w in ("the", "cat", "a") if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)
    data = write_jsonl(tmp_path / "in.jsonl", [{"source": "", "target": word}, {"source": "a cat", "target": "chat"}])
    out = tmp_path / "out"
    assert run_cli("-i", str(data), "-o", str(out), "-t", str(gpt2_like_tokenizer_dir), "--template", "{target}",
                   "--no-eos", "--max-length", "16") == 0
    stats = json.loads(dataset_file(out, "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"no_trained_tokens": 1} and identity_holds(stats)
    (line,) = [json.loads(x) for x in dataset_file(out, "rejected/rejected.jsonl").read_text().splitlines()]
    assert line["reason"] == "no_trained_tokens" and line["line"] == 1 and json.loads(line["raw"])["target"] == word
