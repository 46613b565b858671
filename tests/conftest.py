"""Shared fixtures: small tokenizers built on the spot (no hub downloads) and small pair files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from seqpack.demo import build_tokenizer, make_pairs

# helpers.py and shardgen.py live here; the tests in tests/dataset/, tests/loader/ and tests/tools/ import them too.
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

EXTRA_TEXTS = ["Hello world", "Translate to French", "### Response:", "Below is an instruction"]


@pytest.fixture(scope="session")
def pairs() -> list[dict[str, str]]:
    return make_pairs()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    """A Llama-like byte-level BPE tokenizer that prepends <s>."""
    texts = [t for p in pairs for t in (p["source"], p["target"])] + EXTRA_TEXTS
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "llama-like", texts, add_bos=True)


@pytest.fixture(scope="session")
def gpt2_like_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    """A GPT-2-like tokenizer that adds no special tokens by itself."""
    texts = [t for p in pairs for t in (p["source"], p["target"])] + EXTRA_TEXTS
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "gpt2-like", texts, add_bos=False)


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]]) -> Path:
    """The demo pairs as a JSON lines file, for tests that run the command."""
    path = tmp_path_factory.mktemp("in") / "pairs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
    return path
