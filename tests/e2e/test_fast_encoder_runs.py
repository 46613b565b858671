"""``--tokenizer-backend``: the fast encoder writes the same shards as Hugging Face, the manifest says which one
wrote them, and a batch it raises on is re-encoded (counted in stats)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import IN_PROCESS, dataset_file, write_jsonl

from seqpack import fast_encoder
from seqpack.cli.main import main
from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.pipeline.encoder_choice import hf_only

pytest.importorskip("fastokens")

HARD = ["emoji 😀👍🏽 and 日本語", "tabs\tand\n\nnewlines   ", "ctrl \x04 byte", "NUL \x00 inside", "<s> as text",
        "def f(x):\n    return x + 1\n" * 20, "ΣΑΣ ß ﬁ é", "   "]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    records = pairs[:300] + [{"source": a, "target": b} for a in HARD for b in HARD[:3]]
    return write_jsonl(tmp_path_factory.mktemp("fast") / "pairs.jsonl", records)


def _run(corpus: Path, output: Path, tokenizer: Path, backend: str) -> tuple[dict, dict]:
    assert main(["run", "-q", "-i", str(corpus), "-o", str(output), "-t", str(tokenizer), "--max-length", "256",
                 "--bucket-tokens", "4096", "--tokenizer-backend", backend, IN_PROCESS]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    return manifest, json.loads(dataset_file(output, "stats.json").read_text())


def _shards(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tokenizer_dir: Path) -> Path:
    output = tmp_path_factory.mktemp("hf") / "out"
    manifest, stats = _run(corpus, output, tokenizer_dir, "hf")
    assert manifest["tokenizer"]["backend"] == "hf" and stats["texts_reencoded"] == 0
    return output


def test_auto_writes_the_hf_bytes_with_the_fast_encoder(hf_run: Path, corpus: Path, tokenizer_dir: Path,
                                                        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="seqpack"):
        manifest, stats = _run(corpus, tmp_path / "out", tokenizer_dir, "auto")
    assert manifest["tokenizer"]["backend"] == "fast"
    assert stats["texts_reencoded"] == 0
    assert any("gives the Hugging Face ids on" in r.getMessage() for r in caplog.records)
    shards = _shards(tmp_path / "out")
    assert shards and shards == _shards(hf_run)


def test_a_batch_the_fast_encoder_rejects_is_reencoded(hf_run: Path, corpus: Path, tokenizer_dir: Path,
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fast_encoder.fast_encode_flat  # what a worker encodes with

    def fussy(fast: object) -> Callable[[list[str]], list]:
        encode = real(fast)

        def call(texts: list[str]) -> list:
            if any("\x04" in text for text in texts):
                raise ValueError("byte 0x04 has no token in vocabulary")
            return encode(texts)
        return call

    monkeypatch.setattr(fast_encoder, "fast_encode_flat", fussy)
    manifest, stats = _run(corpus, tmp_path / "out", tokenizer_dir, "fast")
    assert manifest["tokenizer"]["backend"] == "fast"
    assert stats["texts_reencoded"] > 0
    assert _shards(tmp_path / "out") == _shards(hf_run)


def test_fast_is_refused_where_it_cannot_take_part(caplog: pytest.LogCaptureFixture) -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer="t", template="chat", tokenizer_backend="fast")
    with pytest.raises(UsageError, match="--tokenizer-backend fast cannot be used: chat"):
        hf_only(config, "chat templates are rendered and tokenized by transformers")
    with caplog.at_level(logging.INFO, logger="seqpack"):
        hf_only(RunConfig(inputs=["x"], output="o", tokenizer="t"), "why")
    assert "tokenizing with Hugging Face: why" in caplog.text


@pytest.mark.parametrize("check", ["chooses hf", "fails", "is slow"])
def test_the_check_while_the_job_starts_decides_the_encoder_or_falls_back_to_hf(
    hf_run: Path, corpus: Path, tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, check: str,
) -> None:
    """On the local runner ``auto`` checks the fast encoder on a thread while the job starts: the workers and the
    commit step take its answer; a check that breaks leaves the run to Hugging Face, with a warning."""
    from seqpack.pipeline import run as run_module

    def choose(*_args: object) -> str:
        if check == "fails":
            raise RuntimeError("the check broke")
        if check == "is slow":  # the workers, and the commit step, wait for it
            time.sleep(1.5)
        return "hf"

    monkeypatch.setattr(run_module, "choose_for_run", choose)
    with caplog.at_level(logging.WARNING, logger="seqpack"):
        manifest, stats = _run(corpus, tmp_path / "out", tokenizer_dir, "auto")
    assert manifest["tokenizer"]["backend"] == "hf"
    assert ("checking the fast encoder failed: the check broke" in caplog.text) == (check == "fails")
    assert _shards(tmp_path / "out") == _shards(hf_run)


def test_a_worker_waits_for_the_choice_and_says_when_it_never_comes(tmp_path: Path) -> None:
    from seqpack.tokenizer import DEFERRED, BackendPlan, SpecialLayout, chosen_encoder, read_encoder_choice

    choice = tmp_path / "encoder-choice"
    plan = BackendPlan("unused.json", SpecialLayout((), ()), DEFERRED, str(choice))
    with pytest.raises(RuntimeError, match="did not choose the encoder within 0 s"):
        chosen_encoder(plan, wait_seconds=0.05)
    choice.write_text("fast")
    assert chosen_encoder(plan) == "fast"
    assert chosen_encoder(BackendPlan("unused.json", SpecialLayout((), ()), "hf")) == "hf"
    choice.write_text("quick")
    with pytest.raises(RuntimeError, match="not an encoder"):
        read_encoder_choice(str(choice))
