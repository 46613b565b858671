"""``seqpack audit``: a clean dataset has no findings; each kind of fault is found, counted and shown decoded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import chat_tokenizer, write_jsonl
from shardgen import Example, write_dataset
from transformers import AutoTokenizer

from seqpack import IGNORE_INDEX
from seqpack.audit import (
    ALL_TRAINED,
    BOS_INSIDE,
    DOUBLED_BOS,
    EOS_MISSING,
    EOS_UNTRAINED,
    FINDINGS,
    LABEL_MISMATCH,
    NO_TRAINED,
    POSITIONS,
    PROMPT_LOST,
    TARGET_CUT,
    AuditFacts,
    audit_block,
)
from seqpack.cli.main import main
from seqpack.dataset import open_manifest
from seqpack.tools.audit import audit_dataset

MAX_LENGTH = 48


@pytest.fixture(scope="module")
def tok(tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def encode(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def pair(tok: Any, source: str = "Hello world = ", target: str = "Bonjour le monde", *, eos: bool = True,
         **fields: Any) -> Example:
    """A pair example as seqpack lays it out: ``<s>source`` masked, ``target</s>`` trained."""
    src = encode(tok, "<s>" + source)
    tgt = encode(tok, target + ("</s>" if eos else ""))
    return Example(np.asarray(src + tgt, dtype=np.int64), len(src), **fields)


def full(tok: Any, source: str, *, eos: bool) -> Example:
    """A pair of exactly MAX_LENGTH tokens: what truncation leaves (the target is a repeated word, cut to fit)."""
    src = encode(tok, "<s>" + source)
    word = encode(tok, " monde")
    tgt = (word * MAX_LENGTH)[: MAX_LENGTH - len(src) - int(eos)] + ([tok.eos_token_id] if eos else [])
    return Example(np.asarray(src + tgt, dtype=np.int64), len(src))


def relabel(example: Example, change: Callable[[np.ndarray], None]) -> Example:
    labels = example.labels()
    change(labels)
    return Example(example.ids, example.source_len, label_ids=labels)


def write(root: Path, examples: list[Example], tok: Any, **config: Any) -> str:
    """A hand-made dataset (one example per row) whose manifest names the llama-like tokenizer's BOS and EOS and
    the run's settings, as ``seqpack run`` writes them."""
    url = str(root)
    write_dataset(url, {"train": examples}, max_length=MAX_LENGTH, packing="none")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["tokenizer"].update(bos_id=tok.bos_token_id, eos_id=tok.eos_token_id)
    manifest["config"].update({"template": "plain", "train_on": "target", "add_eos": True, "packing": "none",
                               "overlong": "truncate", **config})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return url


# A kind of fault → (the faulty examples, the run settings). Each makes exactly that finding, on each example.
FAULTS: dict[str, Callable[[Any], tuple[list[Example], dict[str, Any]]]] = {
    NO_TRAINED: lambda tok: ([relabel(pair(tok), lambda labels: labels.fill(IGNORE_INDEX))] * 2, {}),
    ALL_TRAINED: lambda tok: ([Example(pair(tok).ids, 0)] * 2, {}),
    DOUBLED_BOS: lambda tok: ([pair(tok, "<s>Hello world = ")] * 2, {}),
    BOS_INSIDE: lambda tok: ([pair(tok, "Hello <s> world = ")] * 2, {}),
    EOS_UNTRAINED: lambda tok: ([relabel(pair(tok), lambda labels: labels.__setitem__(-1, IGNORE_INDEX))] * 2,
                                {"add_eos": False}),
    EOS_MISSING: lambda tok: ([pair(tok, eos=False)] * 2, {}),
    LABEL_MISMATCH: lambda tok: ([relabel(pair(tok), lambda labels: labels.__setitem__(-2, 7))] * 2, {}),
    POSITIONS: lambda tok: ([Example(pair(tok).ids, pair(tok).source_len,
                                     positions=np.arange(len(pair(tok).ids)) + 3)] * 2, {}),
    PROMPT_LOST: lambda tok: ([full(tok, "", eos=True)] * 2, {}),
    TARGET_CUT: lambda tok: ([full(tok, "Hello world = ", eos=False)] * 2, {}),
}


def test_every_finding_code_has_a_fault_that_makes_it() -> None:
    assert set(FAULTS) == set(FINDINGS)


@pytest.mark.parametrize("code", list(FAULTS))
def test_each_fault_is_found_and_counted_alone(tmp_path: Path, tok: Any, code: str) -> None:
    faulty, config = FAULTS[code](tok)
    clean = [pair(tok), pair(tok, "Translate to French = ", "Traduire")]
    url = write(tmp_path / "ds", [clean[0], *faulty, clean[1]], tok, **config)

    audit = audit_dataset(url, tokenizer=str(tok.name_or_path))

    assert dict(audit.counts) == {code: len(faulty)}
    assert [(place.block, place.example) for place in audit.samples[code]] == [(1, 0), (2, 0)]
    assert audit.exit_code == 1


def test_the_command_prints_code_count_meaning_and_decoded_examples(
    tmp_path: Path, tok: Any, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    url = write(tmp_path / "ds", [pair(tok, eos=False)] * 4 + [pair(tok)], tok)

    code = main(["audit", url, "--plain", "--tokenizer", str(tokenizer_dir)])

    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0] == f"{url} · 5 examples in 5 blocks audited"
    assert out[1].split(None, 2) == [EOS_MISSING, "4", FINDINGS[EOS_MISSING]]
    shown = [line for line in out if line.startswith(f"{EOS_MISSING}: ")]
    assert shown == [f"{EOS_MISSING}: split train, block {block}, example #1" for block in range(3)]
    assert out.count("  #1 ⟦<s>Hello world = ⟧Bonjour le monde") == 3


def test_expected_masking_is_not_a_finding(tmp_path: Path, tok: Any) -> None:
    everything = Example(pair(tok).ids, 0)  # trained throughout: what --train-on all asks for
    url = write(tmp_path / "ds", [everything, pair(tok)], tok, train_on="all")

    assert audit_dataset(url).counts == {}


def test_pieces_of_wrapped_examples_are_only_checked_within() -> None:
    """With --packing wrap a row's first example may be the end of one: no BOS, all trained, positions going on."""
    facts = AuditFacts(max_length=8, bos_id=1, eos_ids=frozenset({2}), wrap=True)
    ids = np.array([7, 8, 2, 1, 5, 9, 3, 2])
    labels = np.array([7, 8, 2, -100, -100, -100, 3, 2])
    row = {"input_ids": ids, "labels": labels, "attention_mask": np.ones(8), "seq_lens": np.array([3, 5])}

    wrapped = list(audit_block(facts, position_ids=np.array([5, 6, 7, 0, 1, 2, 3, 4]), **row))
    unwrapped = list(audit_block(AuditFacts(max_length=8, bos_id=1, eos_ids=frozenset({2})),
                                 position_ids=np.array([5, 6, 7, 0, 1, 2, 3, 4]), **row))

    assert wrapped == []
    assert {(f.code, f.example) for f in unwrapped} == {(ALL_TRAINED, 0), (POSITIONS, 0)}


# ------------------------------------------------------------------------------ datasets made by seqpack run


@pytest.fixture(scope="module")
def run_dataset(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Callable[..., str]:
    def run(records: list[dict[str, Any]], *flags: str, tokenizer: Path = tokenizer_dir) -> str:
        root = tmp_path_factory.mktemp("audit-run")
        source = write_jsonl(root / "pairs.jsonl", records)
        code = main(["run", "-q", "-i", str(source), "-o", str(root / "ds"), "-t", str(tokenizer),
                     "--bucket-tokens", "1024", "--direct_running_mode=in_memory", *flags])
        assert code == 0
        return str(root / "ds")

    return run


def test_a_dataset_made_by_seqpack_run_is_clean(
    run_dataset: Callable[..., str], pairs: list[dict[str, str]], capsys: pytest.CaptureFixture
) -> None:
    url = run_dataset(pairs[:40], "--max-length", "96")
    capsys.readouterr()

    code = main(["audit", url, "--plain"])

    assert capsys.readouterr().out == f"{url} · 40 examples in {audit_dataset(url).blocks} blocks audited\n" \
        "no findings\n"
    assert code == 0


def test_examples_cut_into_pieces_by_wrap_and_split_are_not_findings(
    run_dataset: Callable[..., str], pairs: list[dict[str, str]]
) -> None:
    url = run_dataset(pairs[:40], "--max-length", "24", "--packing", "wrap", "--overlong", "split")

    audit = audit_dataset(url)

    assert audit.examples > 40  # pieces
    assert audit.counts == {}


CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHATS = [
    {"messages": [{"role": "user", "content": "The cat"}, {"role": "assistant", "content": "Le chat"},
                  {"role": "user", "content": "The dog"}, {"role": "assistant", "content": "Le chien"}]},
    {"source": "The apple", "target": "La pomme"},
]


@pytest.fixture(scope="module")
def chatml(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chat_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("chatml"), CHATML)


@pytest.mark.parametrize("train_on", ["target", "all"])
def test_a_chat_dataset_ends_its_turns_with_the_tokenizers_end_of_turn_token(
    run_dataset: Callable[..., str], chatml: Path, train_on: str
) -> None:
    url = run_dataset(CHATS, "--template", "chat", "--max-length", "96", "--train-on", train_on, tokenizer=chatml)

    assert AuditFacts.of(open_manifest(url)).expects_eos is False  # <|im_end|> is not in the manifest...
    assert audit_dataset(url).counts == {}  # ...but in the tokenizer, which audit loads for a chat dataset


def test_truncation_that_cuts_the_whole_prompt_and_the_answer_is_found(run_dataset: Callable[..., str]) -> None:
    records = [{"source": "Hello world", "target": "monde " * 60}, {"source": "cat", "target": "chat"}]
    url = run_dataset(records, "--max-length", "32", "--overlong", "truncate")

    audit = audit_dataset(url)

    assert dict(audit.counts) == {PROMPT_LOST: 1, TARGET_CUT: 1}
    assert audit.samples[PROMPT_LOST] == audit.samples[TARGET_CUT]


def test_an_unknown_split_is_a_usage_error(tmp_path: Path, tok: Any, capsys: pytest.CaptureFixture) -> None:
    url = write(tmp_path / "ds", [pair(tok)], tok)

    assert main(["audit", url, "--split", "validation"]) == 2
    assert "has no split 'validation'" in capsys.readouterr().err


def test_a_chat_answer_without_its_end_of_turn_token_is_found(tmp_path: Path, chatml: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(chatml))

    def turn(answer: str) -> Example:
        prompt = encode(tok, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        trained, after = encode(tok, answer), encode(tok, "\n")
        ids = np.asarray(prompt + trained + after, dtype=np.int64)
        labels = np.where(np.arange(len(ids)) < len(prompt), IGNORE_INDEX, ids)
        labels[len(prompt) + len(trained):] = IGNORE_INDEX
        return Example(ids, 0, label_ids=labels)

    url = write(tmp_path / "ds", [turn("Salut<|im_end|>"), turn("Salut"), turn("Salut")], tok, template="chat")

    audit = audit_dataset(url, tokenizer=str(chatml))

    # the user turn's <|im_end|> is there, masked, and no answer trains one: both findings, on both examples
    assert dict(audit.counts) == {EOS_MISSING: 2, EOS_UNTRAINED: 2}
    assert [place.block for place in audit.samples[EOS_MISSING]] == [1, 2]
