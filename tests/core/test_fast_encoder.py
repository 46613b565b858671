"""The fast encoder (fastokens) is used only where it gives the Hugging Face ids: equivalence on a byte-level BPE
(hard cases, generated text), a clean fallback for every kind it cannot reproduce, and the run-time fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from seqpack import fast_encoder
from seqpack.fast_encoder import (
    FallbackEncoder,
    FastEncoderError,
    choose_encoder,
    compare,
    fast_encode,
    hard_cases,
    load_fast,
    sample_texts,
)
from seqpack.inputs import InputFile
from seqpack.prompt_templates import make_template
from seqpack.transforms.read import beam_open

pytest.importorskip("fastokens")

TRAIN = ["Hello world, this is a test of many words.", "Bonjour le monde", "ünïcödé 日本語 text",
         "def f(x):\n    return x + 1"] * 20


def hf_encoder(tokenizer: Tokenizer) -> Callable[[list[str]], list[list[int]]]:
    return lambda texts: [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def byte_bpe(tokenizer_dir: Path) -> tuple[str, Tokenizer]:
    """The tests' Llama-like byte-level BPE (with <s>, </s>, <pad>, <unk> and an added token)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.add_special_tokens(["<|sep|>"])
    return tokenizer.to_str(), tokenizer


def test_hard_cases_agree_on_a_byte_level_bpe(byte_bpe: tuple[str, Tokenizer]) -> None:
    definition, tokenizer = byte_bpe
    cases = hard_cases(["<s>", "<|sep|>"])
    assert "" in cases and "\x00" in cases and any("<|sep|>" in case and case != "<|sep|>" for case in cases)
    assert max(map(len, cases)) >= 20_000, "very long lines"
    result = compare(hf_encoder(tokenizer), fast_encode(load_fast(definition)), cases)
    assert result.mismatch is None and result.rejected == []
    ids = hf_encoder(tokenizer)(["a<|sep|>b"])[0]
    assert tokenizer.token_to_id("<|sep|>") in ids, "the added token is one token inside text"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=60), min_size=1, max_size=8))
def test_generated_text_gets_the_same_ids(byte_bpe: tuple[str, Tokenizer], texts: list[str]) -> None:
    definition, tokenizer = byte_bpe
    fast = _cached_fast(definition)
    texts = texts + [" ".join(texts), "<s>".join(texts), "<|sep|>".join(texts)]
    assert fast(texts) == hf_encoder(tokenizer)(texts)


_FAST: dict[str, Callable[[list[str]], list]] = {}


def _cached_fast(definition: str) -> Callable[[list[str]], list]:
    if definition not in _FAST:
        _FAST[definition] = fast_encode(load_fast(definition))
    return _FAST[definition]


def test_auto_uses_the_fast_encoder_when_it_agrees(byte_bpe: tuple[str, Tokenizer]) -> None:
    definition, tokenizer = byte_bpe
    choice = choose_encoder("auto", definition, hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "fast", choice.reason
    assert "80 of the job's texts" in choice.reason
    assert choose_encoder("hf", definition, hf_encoder(tokenizer), TRAIN).backend == "hf"


def _byte_level_variant(kind: str) -> Tokenizer:
    """Byte-level BPEs fastokens loads, other than the fixture's: digits split one by one before the byte-level
    step (as Llama 3 and Qwen do), and the byte-level step without its split regex."""
    byte_level = {"digits": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)]),
                  "no-regex": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)}[kind]
    tokenizer = _trained(models.BPE(), trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<s>"],
        show_progress=False), pre_tokenizer=byte_level, decoder=decoders.ByteLevel())
    tokenizer.add_special_tokens(["<|sep|>"])
    return tokenizer


_VARIANTS: dict[str, Tokenizer] = {}


@pytest.mark.parametrize("kind", ["digits", "no-regex"])
@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=60), min_size=1, max_size=8))
def test_other_byte_level_bpes_agree_on_hard_cases_and_generated_text(kind: str, texts: list[str]) -> None:
    """Every kind of tokenizer the fast encoder loads gets the Hugging Face ids, not only the fixture's."""
    tokenizer = _VARIANTS.setdefault(kind, _byte_level_variant(kind))
    definition = tokenizer.to_str()
    fast = _cached_fast(definition)
    if definition not in _HARD_CASES_CHECKED:
        result = compare(hf_encoder(tokenizer), fast_encode(load_fast(definition)), hard_cases(["<s>", "<|sep|>"]))
        assert result.mismatch is None and result.rejected == []
        _HARD_CASES_CHECKED.add(definition)
    texts = texts + [" ".join(texts), "<s>".join(texts), "<|sep|>".join(texts), "x1234567890y"]
    assert fast(texts) == hf_encoder(tokenizer)(texts)


_HARD_CASES_CHECKED: set[str] = set()


def _trained(model: models.Model, trainer: trainers.Trainer, **parts: object) -> Tokenizer:
    tokenizer = Tokenizer(model)
    for name, part in parts.items():
        setattr(tokenizer, name, part)
    tokenizer.train_from_iterator(TRAIN, trainer=trainer)
    return tokenizer


def _wordpiece() -> Tokenizer:
    return _trained(models.WordPiece(unk_token="[UNK]"), trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False), pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False))


def _unigram() -> Tokenizer:
    return _trained(models.Unigram(), trainers.UnigramTrainer(
        vocab_size=100, special_tokens=["<unk>"], unk_token="<unk>", show_progress=False))


def _metaspace() -> Tokenizer:
    return _trained(models.BPE(unk_token="<unk>", byte_fallback=True), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>"], show_progress=False),
        pre_tokenizer=pre_tokenizers.Metaspace(), decoder=decoders.Metaspace())


def _normalized(byte_bpe: Tokenizer) -> Tokenizer:
    tokenizer = Tokenizer.from_str(byte_bpe.to_str())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    return tokenizer


def _dropout(byte_bpe: Tokenizer) -> Tokenizer:
    definition = json.loads(byte_bpe.to_str())
    definition["model"]["dropout"] = 0.5
    return Tokenizer.from_str(json.dumps(definition))


@pytest.mark.parametrize(("kind", "reason"), [
    ("wordpiece", "WordPiece"), ("unigram", "Unigram"), ("metaspace", "Metaspace"), ("normalizer", "NFKC"),
    ("dropout", "BPE dropout"),
])
def test_kinds_it_cannot_reproduce_fall_back(byte_bpe: tuple[str, Tokenizer], kind: str, reason: str) -> None:
    base = byte_bpe[1]
    tokenizer = {"wordpiece": _wordpiece, "unigram": _unigram, "metaspace": _metaspace,
                 "normalizer": lambda: _normalized(base), "dropout": lambda: _dropout(base)}[kind]()
    choice = choose_encoder("auto", tokenizer.to_str(), hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "hf"
    assert reason in choice.reason and "\n" not in choice.reason
    with pytest.raises(FastEncoderError, match="--tokenizer-backend fast cannot be used.*" + reason):
        choose_encoder("fast", tokenizer.to_str(), hf_encoder(tokenizer), TRAIN)


def test_not_importable_falls_back(byte_bpe: tuple[str, Tokenizer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastokens", None)
    definition, tokenizer = byte_bpe
    choice = choose_encoder("auto", definition, hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "hf" and "fastokens is not importable" in choice.reason


def _patched_fast(monkeypatch: pytest.MonkeyPatch, change: Callable[[str, list[int]], list[int]]) -> None:
    """The real fast encoder, its ids for each text passed through ``change`` (which may raise)."""
    real = fast_encoder.fast_encode

    def fake(fast: object) -> Callable[[list[str]], list]:
        encode = real(fast)
        return lambda texts: [change(text, ids) for text, ids in zip(texts, encode(texts), strict=True)]

    monkeypatch.setattr(fast_encoder, "fast_encode", fake)


def test_a_disagreement_in_the_jobs_texts_falls_back(byte_bpe: tuple[str, Tokenizer],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _patched_fast(monkeypatch, lambda text, ids: ids[::-1] if text == "Bonjour le monde" else ids)
    definition, tokenizer = byte_bpe
    choice = choose_encoder("auto", definition, hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "hf"
    assert "disagrees" in choice.reason and "'Bonjour le monde'" in choice.reason
    with pytest.raises(FastEncoderError, match="disagrees"):
        choose_encoder("fast", definition, hf_encoder(tokenizer), TRAIN)


def _raise_on(bad: str) -> Callable[[str, list[int]], list[int]]:
    def change(text: str, ids: list[int]) -> list[int]:
        if bad in text:
            raise ValueError(f"byte {bad!r} has no token")
        return ids
    return change


def test_raising_on_hard_cases_is_allowed(byte_bpe: tuple[str, Tokenizer], monkeypatch: pytest.MonkeyPatch) -> None:
    """A raise is not a wrong id: the run re-encodes such a batch with Hugging Face."""
    _patched_fast(monkeypatch, _raise_on("\x04"))
    definition, tokenizer = byte_bpe
    choice = choose_encoder("auto", definition, hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "fast" and "raises on" in choice.reason and "re-encoded" in choice.reason


def test_raising_on_many_of_the_jobs_texts_falls_back(byte_bpe: tuple[str, Tokenizer],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _patched_fast(monkeypatch, _raise_on("monde"))
    definition, tokenizer = byte_bpe
    choice = choose_encoder("auto", definition, hf_encoder(tokenizer), TRAIN)
    assert choice.backend == "hf" and "raises on 20 of 80 sampled texts" in choice.reason
    assert choose_encoder("fast", definition, hf_encoder(tokenizer), TRAIN).backend == "fast"


def test_a_batch_it_raises_on_is_reencoded(byte_bpe: tuple[str, Tokenizer]) -> None:
    definition, tokenizer = byte_bpe
    fast, hf = fast_encode(load_fast(definition)), hf_encoder(tokenizer)
    counted: list[int] = []

    def fussy(texts: list[str]) -> list:
        if any("\x04" in text for text in texts):
            raise ValueError("byte 0x04 has no token")
        return fast(texts)

    encoder = FallbackEncoder(fussy, hf, counted.append)
    assert encoder(["a", "b"]) == hf(["a", "b"]) and counted == []
    assert encoder(["a", "x\x04y", "c"]) == hf(["a", "x\x04y", "c"]) and counted == [3]


class PanicException(BaseException):
    """As pyo3 raises a Rust panic: not an ``Exception``."""


def test_a_rust_panic_is_a_rejection_and_an_interrupt_is_not(byte_bpe: tuple[str, Tokenizer]) -> None:
    hf = hf_encoder(byte_bpe[1])
    counted: list[int] = []

    def raising(error: BaseException) -> Callable[[list[str]], list]:
        def call(texts: list[str]) -> list:
            raise error
        return call

    assert FallbackEncoder(raising(PanicException("boom")), hf, counted.append)(["a"]) == hf(["a"])
    assert counted == [1]
    with pytest.raises(KeyboardInterrupt):
        FallbackEncoder(raising(KeyboardInterrupt()), hf, counted.append)(["a"])
    assert compare(hf, raising(PanicException("boom")), ["a", "b"]).rejected == ["a", "b"]
    assert "2 results for 1 texts" in compare(hf, lambda texts: [[1], [2]], ["a"]).mismatch


def test_a_worker_without_fastokens_encodes_with_hf(byte_bpe: tuple[str, Tokenizer],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastokens", None)
    definition, tokenizer = byte_bpe
    counted: list[int] = []
    encode = fast_encoder.worker_encoder(definition, hf_encoder(tokenizer), counted.append)
    assert encode(["a b", "c"]) == hf_encoder(tokenizer)(["a b", "c"]) and counted == [2]


def test_the_sample_is_the_jobs_rendered_texts_chosen_by_the_seed(tmp_path: Path) -> None:
    files = []
    for index in range(6):
        records = [{"source": f"s{index}-{n}", "target": f"t{index}-{n}"} for n in range(50)]
        records.append({"source": "no target"})  # rejected by the template: not sampled
        path = write_jsonl(tmp_path / f"{index}.jsonl", records)
        files.append(InputFile(str(path), "jsonl", str(path)))
    render = make_template("plain").render
    sample = sample_texts(files, beam_open, render, seed=1, count=40)
    assert len(sample) == 40 and all(text.startswith(("s", "t")) for text in sample)
    assert any(text.endswith(" = ") for text in sample), "sources are rendered with the template's separator"
    assert len({text.split("-")[0][1:] for text in sample}) <= fast_encoder.SAMPLE_FILES
    assert sample == sample_texts(files, beam_open, render, seed=1, count=40)
    assert sample != sample_texts(files, beam_open, render, seed=2, count=40)


def test_a_preloaded_encoder_is_handed_out_once_and_only_for_its_definition(byte_bpe: tuple[str, Tokenizer],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """What the warm pool's server loads before it forks (``preload``) is what a worker's ``load_fast`` of the
    same definition returns, once; another definition, or a second caller, loads its own."""
    monkeypatch.setattr(fast_encoder, "_PRELOADED", {})
    definition = byte_bpe[0]
    assert fast_encoder.preload(definition)

    other = json.loads(definition)
    other["added_tokens"] = [*other["added_tokens"], {**other["added_tokens"][-1], "id": 99999, "content": "<x>"}]
    assert load_fast(json.dumps(other)) is not None and fast_encoder._PRELOADED, "not for another definition"
    first, second = load_fast(definition), load_fast(definition)
    assert first is not second and not fast_encoder._PRELOADED
    assert fast_encode(first)(TRAIN) == fast_encode(second)(TRAIN) == hf_encoder(byte_bpe[1])(TRAIN)


def test_a_definition_it_cannot_load_is_not_preloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_encoder, "_PRELOADED", {})
    assert not fast_encoder.preload(_wordpiece().to_str())
    assert not fast_encoder._PRELOADED


def test_preloading_starts_no_thread(byte_bpe: tuple[str, Tokenizer], tmp_path: Path) -> None:
    """The warm pool's server forks its workers right after ``preload``: a thread started by loading (a Rust
    thread pool) would not exist in the forked workers, and an encoder waiting on it would hang them."""
    definition = tmp_path / "tokenizer.json"
    definition.write_text(byte_bpe[0], encoding="utf-8")
    code = (
        "import os, sys\n"
        "from seqpack import fast_encoder\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        f"assert fast_encoder.preload(open({str(definition)!r}, encoding='utf-8').read())\n"
        "print(before, len(os.listdir('/proc/self/task')))\n"
    )
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc/self/task to count threads in")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert after == before
