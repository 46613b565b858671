"""Mixtures end to end: three sources (plain pairs, alpaca, chat), each with its own files, template and options,
in one run; every example carries its source id through the shards, the loader, inspect and the statistics."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import chat_tokenizer, dataset_file, write_jsonl

from seqpack.cli.flags import config_from_args
from seqpack.cli.jobfile import apply_job_file
from seqpack.cli.main import _parser, main
from seqpack.config import RunConfig
from seqpack.dataset import ShardSet, open_manifest, verify_dataset
from seqpack.errors import UsageError
from seqpack.generations import changed_setting
from seqpack.schemas.columns import SOURCE_ID
from seqpack.schemas.stats import AccountingError, check_identity

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PAIRS = [{"source": f"The cat {i}", "target": f"Le chat {i}"} for i in range(12)]
PAIRS_BAD = [{"source": "no target"}, {"source": "short", "target": "x"}]  # rejected; dropped (min_target_tokens)
ALPACA = [{"instruction": f"Translate {i}", "input": "Hello world", "output": f"Bonjour {i}"} for i in range(8)]
CHATS = [
    {"messages": [{"role": "user", "content": f"The dog {i}"}, {"role": "assistant", "content": f"Le chien {i}"}]}
    for i in range(6)
]
CHATS_BAD = [{"messages": [{"role": "user", "content": "no answer"}]}]
SOURCES = ("pairs", "alpaca", "chat")
EXPECTED = {  # what each written example of a source holds, once
    "pairs": [f"The cat {i} = Le chat {i}</s>" for i in range(12)],
    "alpaca": [f"Bonjour {i}</s>" for i in range(8)],
    "chat": [f"Le chien {i}<|im_end|>" for i in range(6)],
}


def resolve(argv: list[str]) -> RunConfig:
    """The RunConfig `seqpack run ARGV` would run, without running it."""
    args, _ = _parser().parse_known_args(["run", *argv])
    apply_job_file(args._run_parser, args, argv)
    return config_from_args(args)


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return chat_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("chatml"), CHATML)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, chatml_dir: Path) -> dict:
    """A three-source job file's options, its input files written."""
    root = tmp_path_factory.mktemp("mixture")
    for name, records in zip(SOURCES, (PAIRS + PAIRS_BAD, ALPACA, CHATS + CHATS_BAD), strict=True):
        (root / name).mkdir()
        write_jsonl(root / name / "part-0.jsonl", records)
    return {
        "tokenizer": str(chatml_dir), "output": str(root / "out"), "max_length": 256, "seed": 3,
        "bucket_tokens": 256, "shard_bytes": 2000,  # several buckets to a shard: the parts path
        # weights in proportion to the examples each source keeps (12, 8, 6): each is written once
        # (tests/e2e/test_mixture_weights.py has weights that repeat and leave out examples)
        "weight_by": "examples",
        "sources": [
            {"name": "pairs", "input": f"{root}/pairs/*.jsonl", "weight": 12, "min-target-tokens": 3},
            {"name": "alpaca", "input": f"{root}/alpaca/*.jsonl", "template": "alpaca", "weight": 8},
            {"name": "chat", "inputs": [f"{root}/chat/*.jsonl"], "template": "chat", "weight": 6},
        ],
    }


def write_job(job: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(job: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_job({**job, "beam": {"direct_running_mode": "in_memory"}}, tmp_path_factory.mktemp("job") / "j.yaml")
    assert main(["run", "-q", "--config", str(path)]) == 0
    return Path(job["output"])


def examples_by_source(dataset: Path, tokenizer_dir: Path) -> dict[str, list[str]]:
    """The trained text of every written example, decoded, under its source's name."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    shards = ShardSet.open(str(dataset), split="train")
    found: dict[str, list[str]] = {name: [] for name in SOURCES}
    for unit in range(shards.num_units):
        for row in shards.read_unit(unit).to_pylist():
            start = 0
            for length, source_id in zip(row["seq_lens"], row[SOURCE_ID], strict=True):
                ids, labels = row["input_ids"][start : start + length], row["labels"][start : start + length]
                text = tokenizer.decode(ids) if SOURCES[source_id] == "pairs" else tokenizer.decode(
                    [token for token, label in zip(ids, labels, strict=True) if label != -100])
                found[SOURCES[source_id]].append(text.removeprefix("<s>"))
                start += length
    return found


def test_every_record_of_every_source_appears_once_with_its_source(dataset: Path, chatml_dir: Path) -> None:
    found = examples_by_source(dataset, chatml_dir)
    assert {name: sorted(texts) for name, texts in found.items()} == {n: sorted(t) for n, t in EXPECTED.items()}
    manifest = open_manifest(str(dataset))
    assert manifest.format_version == 3
    assert [(s["id"], s["name"], s["weight"], s["template"]) for s in manifest.sources] == [
        (0, "pairs", 12, "plain"), (1, "alpaca", 8, "alpaca"), (2, "chat", 6, "chat")]
    assert manifest.sources[0]["min_target_tokens"] == 3 and manifest.sources[1]["min_target_tokens"] == 0
    assert verify_dataset(str(dataset)).examples == sum(map(len, EXPECTED.values()))


def test_the_statistics_account_for_every_source(dataset: Path) -> None:
    stats = json.loads(dataset_file(dataset, "stats.json").read_text())
    counts = {name: {k: v for k, v in c.items() if k.startswith(("records", "examples"))}
              for name, c in stats["sources"].items()}
    assert counts == {
        "pairs": {"records_read": 14, "records_rejected": 1, "examples_dropped": 1, "examples_written": 12,
                  "examples_repeated": 0},
        "alpaca": {"records_read": 8, "records_rejected": 0, "examples_dropped": 0, "examples_written": 8,
                   "examples_repeated": 0},
        "chat": {"records_read": 7, "records_rejected": 1, "examples_dropped": 0, "examples_written": 6,
                 "examples_repeated": 0},
    }
    for total in ("tokens_written", "trained_tokens"):
        assert sum(c[total] for c in stats["sources"].values()) == stats[total] > 0
    assert stats["sources"]["chat"]["trained_tokens"] < stats["sources"]["chat"]["tokens_written"]
    check_identity(stats)
    lost = copy.deepcopy(stats)
    lost["sources"]["alpaca"]["examples_written"] -= 1
    lost["sources"]["pairs"]["examples_written"] += 1  # the run's totals still add up; the sources' do not
    with pytest.raises(AccountingError, match="source 'alpaca'"):
        check_identity(lost)
    rejected = [json.loads(line) for line in dataset_file(dataset, "rejected/rejected.jsonl").read_text().splitlines()]
    assert sorted((line["source"], line["reason"]) for line in rejected) == [
        ("chat", "no_assistant_turn"), ("pairs", "missing_field")]


def test_the_loader_yields_source_ids_aligned_with_examples(dataset: Path) -> None:
    from seqpack.loader import PackedDataset
    from seqpack.loader.collate import collate_padded, collate_padding_free

    samples = list(PackedDataset(str(dataset), shuffle=False))
    shards = ShardSet.open(str(dataset), split="train")
    stored = [ids for unit in range(shards.num_units) for ids in shards.read_unit(unit).column(SOURCE_ID).to_pylist()]
    assert [s[SOURCE_ID].tolist() for s in samples] == stored and len(shards.shards) > 1
    assert all(len(s[SOURCE_ID]) == len(s["seq_lens"]) for s in samples)
    for collate in (collate_padding_free, collate_padded):
        batch = collate(samples[:3])
        assert batch[SOURCE_ID].tolist() == [i for s in samples[:3] for i in s[SOURCE_ID].tolist()]
        assert len(batch[SOURCE_ID]) == len(batch["trained_tokens_per_example"])


def test_audit_checks_each_example_as_its_source_was_built(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pairs end with a trained EOS, chats with a trained end-of-turn: judged by one config, one kind fails."""
    assert main(["audit", str(dataset), "--plain"]) == 0, capsys.readouterr().out
    assert "no findings" in capsys.readouterr().out
    stats = json.loads(next(dataset.glob("v*/stats.json")).read_text())
    assert stats["examples_audited"] > 0 and stats["audit_by_code"] == {}, "the run's own audit, per source too"


def test_inspect_shows_one_source(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(dataset), "--source", "chat", "--random", "50", "--plain"]) == 0
    shown = capsys.readouterr().out
    assert "source chat" in shown and "Le chien" in shown
    assert "Le chat" not in shown and "Bonjour" not in shown
    assert main(["inspect", str(dataset), "--source", "code", "--plain"]) == 1
    assert "its sources are pairs, alpaca, chat" in capsys.readouterr().err


def test_the_shorthand_is_the_job_file(job: dict, tmp_path: Path) -> None:
    from_file = resolve(["--config", str(write_job(job, tmp_path / "job.yaml"))])
    first, second, third = job["sources"]
    shorthand = resolve([
        "--tokenizer", job["tokenizer"], "--output", job["output"], "--max-length", "256", "--seed", "3",
        "--bucket-tokens", "256", "--shard-bytes", "2000", "--weight-by", "examples",
        "--source", f"name=pairs,input={first['input']},weight=12,min_target_tokens=3",
        "--source", f"name=alpaca,input={second['input']},template=alpaca,weight=8",
        "--source", f"name=chat,input={third['inputs'][0]},template=chat,weight=6",
    ])
    assert shorthand == from_file
    assert from_file.per_source()[2].train_on == "assistant" and from_file.per_source()[0].min_target_tokens == 3
    recorded = json.loads(json.dumps(from_file.to_dict()))  # a manifest's config block is a job file too
    assert resolve(["--config", str(write_job(recorded, tmp_path / "again.yaml"))]) == from_file


@pytest.mark.parametrize(("change", "message"), [
    ({"sources": [{"name": "a", "input": "x"}, {"name": "a", "input": "y"}]}, "two sources are named 'a'"),
    ({"input": ["z.jsonl"]}, "drop the top-level --input"),
    ({"template": "alpaca"}, "drop the top-level --template"),
    ({"sources": [{"name": "a", "input": "x", "weigth": 1}]},
     "unknown source option 'weigth' (did you mean 'weight'?)"),
    ({"sources": [{"name": "a", "input": "x", "weight": 0}]}, "weight must be a number above 0"),
    ({"sources": [{"name": "a b", "input": "x"}]}, "a source name is"),
    ({"sources": [{"name": "a", "input": "x", "train_on": "assistant"}]}, "source 'a': --train-on must be"),
])
def test_bad_sources_are_usage_errors(job: dict, tmp_path: Path, change: dict, message: str) -> None:
    path = write_job({**job, **change}, tmp_path / "job.yaml")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        resolve(["--config", str(path)])


def test_an_append_must_keep_the_sources(dataset: Path) -> None:
    manifest = open_manifest(str(dataset))
    config, fingerprint = manifest.config, manifest.tokenizer.fingerprint
    assert changed_setting(manifest, config, fingerprint) is None
    moved = {**config, "sources": [{**s, "inputs": ["elsewhere/*.jsonl"]} for s in config["sources"]]}
    assert changed_setting(manifest, moved, fingerprint) is None, "a source's inputs may change"
    heavier = {**config, "sources": [{**config["sources"][0], "weight": 0.9}, *config["sources"][1:]]}
    assert "source 'pairs' has weight 0.9 here" in changed_setting(manifest, heavier, fingerprint)
    reordered = {**config, "sources": config["sources"][::-1]}
    assert "the sources are" in changed_setting(manifest, reordered, fingerprint)
    assert "no sources were given" in changed_setting(manifest, {**config, "sources": []}, fingerprint)


def test_a_plain_run_writes_what_a_one_source_mixture_writes_without_source_ids(
        tmp_path: Path, tokenizer_dir: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS + PAIRS_BAD)
    common = ["run", "-q", "--direct_running_mode=in_memory", "-t", str(tokenizer_dir), "--max-length", "32"]
    assert main([*common, "-i", str(data), "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "--source", f"name=only,input={data}", "-o", str(tmp_path / "mix")]) == 0
    plain, mix = (pq.read_table(sorted(dataset_file(tmp_path / d, "train").iterdir())[0]) for d in ("plain", "mix"))
    assert SOURCE_ID not in plain.column_names and open_manifest(str(tmp_path / "plain")).sources == []
    assert mix.column(SOURCE_ID).to_pylist() == [[0] * len(lens) for lens in mix.column("seq_lens").to_pylist()]
    assert mix.drop_columns([SOURCE_ID]).equals(plain)


def test_the_readme_job_file_is_a_valid_mixture(tmp_path: Path) -> None:
    section = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = section.split("\n## Mixtures\n", 1)[1].split("\n## ", 1)[0]
    job = section.split("```yaml\n")[1]  # the first; the Weights one (mixture.yaml) is run by test_readme
    config = resolve(["--config", str(write_job(yaml.safe_load(job.split("```")[0]), tmp_path / "job.yaml"))])
    assert [source.name for source in config.sources] == ["chat", "code", "translation", "math"]
    chat, code, translation, math = config.per_source()
    assert chat.role_map == {"human": "user", "gpt": "assistant"} and chat.train_on == "assistant"
    assert (translation.source_field, translation.separator) == ("en", " => ") and code.min_target_tokens == 1
    assert math.template == "Problem: {source}\nSolution: {target}"
    assert sum(source.weight for source in config.sources) == pytest.approx(1.0)
