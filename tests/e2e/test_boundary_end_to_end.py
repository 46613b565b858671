"""`--chat-boundary joint` from a job file through the whole run: the blocks hold apply_chat_template's ids, the
conversation whose boundary merges is in rejected/ and counted, the manifest records the setting, and an
``--append`` with the other boundary is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from boundaries import CLEAN, MERGING, merging_chat_tokenizer
from helpers import IN_PROCESS, dataset_file, write_jsonl
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.boundary import REASON
from seqpack.cli.main import main


def _messages(answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Translate: hello"}, {"role": "assistant", "content": answer}]


def test_a_joint_chat_run_commits_whole_text_ids_and_rejects_a_merged_boundary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer_dir = merging_chat_tokenizer(tmp_path / "tok")
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "chats.jsonl", [{"messages": _messages(answer)} for answer in [MERGING, *CLEAN]])
    output = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"input": [str(inputs)], "output": str(output), "tokenizer": str(tokenizer_dir),
                                   "template": "chat", "chat_boundary": "joint", "max_length": 64,
                                   "packing": "none"}), encoding="utf-8")
    assert main(["run", "-q", "--config", str(job), IN_PROCESS]) == 0

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    rows = [row for path in sorted(dataset_file(output, "train").iterdir()) for row in pq.read_table(path).to_pylist()]
    answers = {tuple(tokenizer.apply_chat_template(_messages(answer), tokenize=True, return_dict=False)): answer
               for answer in CLEAN}
    assert sorted(answers[tuple(row["input_ids"])] for row in rows) == sorted(CLEAN)  # --packing none: a row each
    for row in rows:
        trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE_INDEX]
        assert tokenizer.decode(trained, skip_special_tokens=False) == answers[tuple(row["input_ids"])] + "<|im_end|>"

    rejected = [json.loads(line) for line in dataset_file(output, "rejected/rejected.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["line"]) for r in rejected] == [(REASON, 1)]
    stats = json.loads(dataset_file(output, "stats.json").read_text())
    assert stats["rejected_by_reason"] == {REASON: 1}
    assert json.loads((output / "manifest.json").read_text())["config"]["chat_boundary"] == "joint"

    write_jsonl(inputs / "more.jsonl", [{"messages": _messages("Le chat")}])
    capsys.readouterr()
    assert main(["run", "-q", "--config", str(job), "--append", "--chat-boundary", "turn", IN_PROCESS]) == 2
    assert '--chat-boundary is "turn" here, but the dataset was built with "joint"' in capsys.readouterr().err
