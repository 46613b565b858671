"""`--template chat` through the CLI: OpenAI, ShareGPT and pair records; only assistant turns are trained."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import chat_tokenizer, dataset_file, write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.cli.main import main

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
COUNTER = "{{- messages | length }} messages\n" + CHATML

RECORDS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cat"},
                  {"role": "assistant", "content": "Le chat"}, {"role": "user", "content": "The dog"},
                  {"role": "assistant", "content": "Le chien"}]},
    {"conversations": [{"from": "human", "value": "The bread"}, {"from": "gpt", "value": "Le pain"}]},
    {"source": "The apple", "target": "La pomme"},
    {"messages": [{"role": "user", "content": "no answer"}]},
]
ASSISTANT_TEXTS = ["Le chat", "Le chien", "Le pain", "La pomme"]


def run(*args: str) -> int:
    return main(["run", "-q", "--direct_running_mode=in_memory", "--template", "chat", *args])


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return chat_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("chatml"), CHATML)


def trained_runs(row: dict, tokenizer) -> list[str]:  # noqa: ANN001
    """Decoded maximal runs of trained tokens in a block (example starts are never trained)."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    if current:
        runs.append(tokenizer.decode(current, skip_special_tokens=False))
    return runs


def test_only_assistant_turns_are_trained(tmp_path: Path, chatml_dir: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", RECORDS)
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(chatml_dir), "--max-length", "256",
               "--system", "Translate.") == 0
    tokenizer = AutoTokenizer.from_pretrained(str(chatml_dir))
    rows = [r for p in sorted(dataset_file(output, "train").iterdir()) for r in pq.read_table(p).to_pylist()]
    runs = [text for row in rows for text in trained_runs(row, tokenizer)]
    assert sorted(runs) == sorted(text + "<|im_end|>" for text in ASSISTANT_TEXTS)
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"no_assistant_turn": 1}
    decoded = tokenizer.decode(rows[0]["input_ids"], skip_special_tokens=False)
    assert "<|im_start|>system\nTranslate.<|im_end|>" in decoded or "Be brief." in decoded


def test_last_turn_only(tmp_path: Path, chatml_dir: Path) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", RECORDS[:1])
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(chatml_dir), "--train-on", "last") == 0
    tokenizer = AutoTokenizer.from_pretrained(str(chatml_dir))
    rows = [r for p in dataset_file(output, "train").iterdir() for r in pq.read_table(p).to_pylist()]
    assert [t for row in rows for t in trained_runs(row, tokenizer)] == ["Le chien<|im_end|>"]


def test_non_prefix_stable_template_rejects(tmp_path: Path, tokenizer_dir: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    counter_dir = chat_tokenizer(tokenizer_dir, tmp_path / "counter", COUNTER)
    data = write_jsonl(tmp_path / "chats.jsonl", RECORDS[:3])
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(counter_dir)) == 1, "every record rejected: no commit"
    assert "the top reason is template_not_prefix_stable (3)" in capsys.readouterr().err
    assert run("-i", str(data), "-o", str(output), "-t", str(counter_dir), "--max-reject-fraction", "1") == 1
    assert not (output / "manifest.json").exists()


def test_tokenizer_without_chat_template_is_a_usage_error(tmp_path: Path, tokenizer_dir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", RECORDS[:1])
    assert run("-i", str(data), "-o", str(tmp_path / "out"), "-t", str(tokenizer_dir)) == 2
    assert "chat template" in capsys.readouterr().err


def test_every_copy_of_an_unrenderable_conversation_is_rejected_as_with_pairs(tmp_path: Path, chatml_dir: Path) -> None:
    """Render turns conversations into text before --dedup compares them, as it does pairs: a record the template
    cannot render is rejected where it stands, every copy of it, and only rendered copies count as duplicates."""
    assistant_first = {"messages": [{"role": "assistant", "content": "first"}]}
    data = write_jsonl(tmp_path / "chats.jsonl", [RECORDS[0], RECORDS[0], assistant_first, assistant_first])
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(chatml_dir), "--dedup", "exact",
               "--max-reject-fraction", "1") == 0
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"assistant_turn_first": 2}
    assert stats["dropped_by_reason"] == {"duplicate": 1}
    rejected = [json.loads(line) for line in dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()]
    assert [entry["line"] for entry in rejected] == [3, 4]
    assert json.loads(rejected[0]["raw"]) == assistant_first, "rejected/ shows the conversation as read"


LONG = "the cat sees a green book in the garden " * 6
OVERLONG_CHATS = [
    # Over --max-length in its second turn: the default keeps the system prompt and the first answer.
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cat"},
                  {"role": "assistant", "content": "Le chat"}, {"role": "user", "content": LONG},
                  {"role": "assistant", "content": LONG}]},
    # A long final user turn: truncate-left keeps only it, so nothing is trained.
    {"messages": [{"role": "user", "content": "The dog"}, {"role": "assistant", "content": "Le chien"},
                  {"role": "user", "content": LONG}]},
    # A system prompt that fills --max-length alone: no answer fits after it.
    {"messages": [{"role": "system", "content": LONG * 2}, {"role": "user", "content": "The bread"},
                  {"role": "assistant", "content": "Le pain"}]},
]


@pytest.mark.parametrize("policy", ["truncate-target", "truncate-left"])
def test_overlong_conversations_are_cut_dropped_or_rejected_and_counted(tmp_path: Path, chatml_dir: Path,
                                                                        policy: str) -> None:
    data = write_jsonl(tmp_path / "chats.jsonl", OVERLONG_CHATS)
    output = tmp_path / "out"
    assert run("-i", str(data), "-o", str(output), "-t", str(chatml_dir), "--max-length", "48",
               "--overlong", policy) == 0
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    written = sum(stats["examples_by_split"].values())
    assert stats["records_read"] == 3 == written + stats["records_rejected"] + stats["examples_dropped"]
    tokenizer = AutoTokenizer.from_pretrained(str(chatml_dir))
    rows = [r for p in sorted(dataset_file(output, "train").iterdir()) for r in pq.read_table(p).to_pylist()]
    runs = sorted(text for row in rows for text in trained_runs(row, tokenizer))
    if policy == "truncate-target":
        assert stats["rejected_by_reason"] == {} and stats["dropped_by_reason"] == {"prompt_too_long": 1}
        assert stats["examples_truncated"] == 2 and stats["examples_prompt_lost"] == 0
        assert runs[:2] == ["Le chat<|im_end|>", "Le chien<|im_end|>"]
        assert any(tokenizer.decode(r["input_ids"]).startswith("<|im_start|>system\nBe brief.") for r in rows)
    else:
        assert stats["rejected_by_reason"] == {"no_trained_tokens": 1} and stats["dropped_by_reason"] == {}
        assert "Le chien<|im_end|>" not in runs
        lines = dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()
        assert [json.loads(x)["line"] for x in lines] == [2]
