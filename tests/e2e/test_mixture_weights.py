"""Mixture weights end to end: three sources (plain pairs, alpaca, chat) with weights 0.5/0.3/0.2 land each within
one example of its share, by tokens and by examples, with a source up-sampled and one down-sampled; the same
bytes whatever the workers and the shuffle; each source's records add up; stats.json and the manifest report
the shares and the plan.

Three runs, shared by every test: by tokens (spill shuffle, one worker), the same (runner shuffle, two workers),
and by examples (spill shuffle, with ``--mix-total-tokens``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import chat_tokenizer, write_jsonl

from seqpack.cli.main import main
from seqpack.dataset import ShardSet, open_manifest
from seqpack.mixing import MixturePlan
from seqpack.schemas.layout import MIXTURE_FILE
from seqpack.schemas.stats import MIXTURE, SOURCES
from seqpack.weighting import MIXTURE_REASON

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
)
NAMES = ("pairs", "alpaca", "chat")
WEIGHTS = (0.5, 0.3, 0.2)
RECORDS = {
    "pairs": [{"source": f"cat {i}", "target": f"chat {i}"} for i in range(30)],
    "alpaca": [{"instruction": f"Translate the sentence number {i} into French, please", "input": f"The dog {i}",
                "output": f"Le chien numéro {i} est ici"} for i in range(14)],
    "chat": [{"messages": [{"role": "user", "content": f"Hello {i}"}, {"role": "assistant", "content": f"Hi {i}"}]}
             for i in range(9)],
}
TWO_WORKERS = ("--direct_running_mode=multi_threading", "--direct_num_workers=2")
TOTAL_TOKENS = 4000


@pytest.fixture(scope="module")
def job_file(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("weights")
    chatml = chat_tokenizer(tokenizer_dir, root / "chatml", CHATML)
    sources = []
    for name, weight, template in zip(NAMES, WEIGHTS, ("plain", "alpaca", "chat"), strict=True):
        (root / name).mkdir()
        write_jsonl(root / name / "part-0.jsonl", RECORDS[name])
        sources.append({"name": name, "input": f"{root}/{name}/*.jsonl", "template": template, "weight": weight})
    job = {"tokenizer": str(chatml), "max_length": 256, "bucket_tokens": 512, "shard_bytes": 1, "seed": 5,
           "sources": sources, "beam": {"direct_running_mode": "in_memory"}}
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


def _run(job_file: Path, output: Path, *extra: str) -> Path:
    assert main(["run", "-q", "--config", str(job_file), "-o", str(output), *extra]) == 0
    return output


@pytest.fixture(scope="module")
def by_tokens(job_file: Path) -> Path:
    return _run(job_file, job_file.parent / "by-tokens", "--shuffle", "spill")


@pytest.fixture(scope="module")
def by_tokens_runner(job_file: Path) -> Path:
    return _run(job_file, job_file.parent / "by-tokens-runner", "--shuffle", "runner", *TWO_WORKERS)


@pytest.fixture(scope="module")
def by_examples(job_file: Path) -> Path:
    return _run(job_file, job_file.parent / "by-examples", "--weight-by", "examples",
                "--mix-total-tokens", str(TOTAL_TOKENS), "--validation-fraction", "0.25")


def written(dataset: Path, splits: tuple[str, ...] = ("train",)) -> dict[str, list[tuple[int, ...]]]:
    """Every example in the shards, as its token ids, under its source's name (read through ``ShardSet``)."""
    found: dict[str, list[tuple[int, ...]]] = {name: [] for name in NAMES}
    for split in splits:
        _read_split(ShardSet.open(str(dataset), split=split), found)
    return found


def _read_split(shards: ShardSet, found: dict[str, list[tuple[int, ...]]]) -> None:
    for unit in range(shards.num_units):
        for row in shards.read_unit(unit).to_pylist():
            start = 0
            for length, source_id in zip(row["seq_lens"], row["source_id"], strict=True):
                found[NAMES[source_id]].append(tuple(row["input_ids"][start : start + length]))
                start += length


def plan_of(dataset: Path) -> MixturePlan:
    manifest = json.loads((dataset / "manifest.json").read_text())
    (path,) = [p for p in manifest["generations"][-1]["files"] if p.endswith(MIXTURE_FILE)]
    return MixturePlan.from_dict(json.loads((dataset / path).read_text())["plan"])


def stats_of(dataset: Path) -> dict:
    return json.loads((dataset / "v000001" / "stats.json").read_text())


def test_each_source_is_within_one_example_of_its_token_share(by_tokens: Path) -> None:
    found, plan = written(by_tokens), plan_of(by_tokens)
    sources = {p.name: p for (split, _), p in plan.sources.items() if split == "train"}
    measured = sum(p.tokens for p in sources.values())
    for name, weight in zip(NAMES, WEIGHTS, strict=True):
        tokens = sum(map(len, found[name]))
        longest = max(map(len, found[name]))
        assert abs(tokens - weight * measured) <= longest / 2, (name, tokens, weight * measured)
    # a source written more than once holds each of its examples: its distinct examples are what it read
    for name, source in sources.items():
        if source.repeats >= 1:
            assert sum(map(len, set(found[name]))) == source.tokens


def test_one_source_is_up_sampled_and_one_down_sampled(by_tokens: Path) -> None:
    copies = {name: Counter(examples) for name, examples in written(by_tokens).items()}
    for name in ("pairs", "chat"):  # their few tokens are repeated to make half and a fifth of the mixture
        assert max(copies[name].values()) >= 2
        assert max(copies[name].values()) - min(copies[name].values()) == 1  # r or r + 1 copies each
    alpaca = plan_of(by_tokens).sources[("train", 1)]
    assert alpaca.repeats == 0 and 0 < len(copies["alpaca"]) < alpaca.examples
    assert set(copies["alpaca"].values()) == {1}


def test_each_source_is_within_one_example_of_its_example_share(by_examples: Path) -> None:
    found = written(by_examples)
    plan = {p.name: p for (split, _), p in plan_of(by_examples).sources.items() if split == "train"}
    total = sum(p.target for p in plan.values())
    for name, weight in zip(NAMES, WEIGHTS, strict=True):
        assert abs(len(found[name]) - weight * total) <= 0.5, (name, len(found[name]), weight * total)
        assert plan[name].target == pytest.approx(weight * total)
    everywhere = written(by_examples, ("train", "validation"))
    tokens = sum(len(example) for examples in everywhere.values() for example in examples)
    assert abs(tokens - TOTAL_TOKENS) < 0.1 * TOTAL_TOKENS  # as near as the sources' mean lengths allow
    held_out = [s for s in stats_of(by_examples)[MIXTURE]["shares"] if s["split"] == "validation"]
    assert held_out and sum(s["achieved"] for s in held_out) == pytest.approx(1.0)


def test_the_same_bytes_whatever_the_workers_and_the_shuffle(by_tokens: Path, by_tokens_runner: Path) -> None:
    def shards(dataset: Path) -> dict[str, bytes]:
        return {path: (dataset / path).read_bytes() for path in open_manifest(str(dataset)).shard_paths()}

    assert shards(by_tokens) == shards(by_tokens_runner)
    assert len(shards(by_tokens)) >= 2  # several buckets, each weighting its own examples
    assert plan_of(by_tokens) == plan_of(by_tokens_runner)


def test_every_source_adds_up(by_tokens: Path, by_examples: Path) -> None:
    for dataset in (by_tokens, by_examples):
        stats, found = stats_of(dataset), written(dataset, tuple(open_manifest(str(dataset)).splits))
        for name in NAMES:
            counts = stats[SOURCES][name]
            assert counts["examples_written"] == len(found[name])
            assert counts["examples_repeated"] == len(found[name]) - len(set(found[name]))
            assert counts["records_read"] == len(RECORDS[name])
            assert counts["records_read"] == (counts["examples_written"] - counts["examples_repeated"]
                                              + counts["records_rejected"] + counts["examples_dropped"])
        repeated = sum(stats[SOURCES][name]["examples_repeated"] for name in NAMES)
        assert stats[MIXTURE]["examples_repeated"] == repeated
        assert sum(stats["examples_by_split"].values()) == sum(map(len, found.values()))
        assert stats["records_read"] == (sum(stats["examples_by_split"].values()) - repeated
                                         + stats["records_rejected"] + stats["examples_dropped"])
    assert stats_of(by_tokens)["dropped_by_reason"][MIXTURE_REASON] == stats_of(by_tokens)[SOURCES]["alpaca"][
        "examples_dropped"]


def test_stats_and_manifest_report_the_shares(by_tokens: Path) -> None:
    found = written(by_tokens)
    total = sum(len(example) for examples in found.values() for example in examples)
    shares = {share["name"]: share for share in stats_of(by_tokens)[MIXTURE]["shares"] if share["split"] == "train"}
    assert stats_of(by_tokens)[MIXTURE]["weight_by"] == "tokens"
    for name, weight in zip(NAMES, WEIGHTS, strict=True):
        tokens = sum(map(len, found[name]))
        assert shares[name]["asked"] == pytest.approx(weight)
        assert shares[name]["written"] == tokens
        assert shares[name]["achieved"] == pytest.approx(tokens / total)
    manifest = json.loads((by_tokens / "manifest.json").read_text())
    assert f"v000001/{MIXTURE_FILE}" in manifest["files"]
    recorded = json.loads((by_tokens / "v000001" / MIXTURE_FILE).read_text())
    assert recorded["shares"] == stats_of(by_tokens)[MIXTURE]["shares"]


def test_a_mixture_refuses_overlong_split(job_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The weighting keeps or repeats rows; split examples would be sampled piece by piece."""
    assert main(["run", "--config", str(job_file), "-o", str(tmp_path / "out"), "--overlong", "split"]) == 2
    assert "a mixture cannot take --overlong split" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
