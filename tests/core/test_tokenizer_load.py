"""A tokenizer-only directory of the plain class is loaded without AutoTokenizer (and without importing torch),
into exactly what AutoTokenizer gives; anything else still goes through AutoTokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from seqpack.tokenizer import describe, is_plain_tokenizer_dir, load_tokenizer, pad_id_of, pair_layout

TEXTS = ["Hello world", " leading space", "ünïcödé 日本語 <s> inside", "", "tabs\tand\nnewlines</s>"]


def _with_chat_template(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    config["additional_special_tokens"] = ["<pad>"]
    config_path.write_text(json.dumps(config))
    return target


@pytest.fixture(params=["bos", "gpt2", "chat"])
def plain_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "chat":
        return _with_chat_template(request.getfixturevalue("tokenizer_dir"), tmp_path / "chat")
    return request.getfixturevalue({"bos": "tokenizer_dir", "gpt2": "gpt2_like_tokenizer_dir"}[request.param])


def test_the_direct_load_is_what_autotokenizer_gives(plain_dir: Path) -> None:
    assert is_plain_tokenizer_dir(str(plain_dir))
    direct, auto = load_tokenizer(str(plain_dir)), AutoTokenizer.from_pretrained(str(plain_dir))
    assert type(direct) is type(auto)
    assert describe(direct, "t", pad_id_of(direct)) == describe(auto, "t", pad_id_of(auto))  # fingerprint too
    assert direct.special_tokens_map == auto.special_tokens_map
    assert direct.chat_template == auto.chat_template
    assert pair_layout(direct, add_eos=True) == pair_layout(auto, add_eos=True)
    for special in (False, True):
        assert direct(TEXTS, add_special_tokens=special)["input_ids"] == auto(TEXTS, add_special_tokens=special)[
            "input_ids"]
    assert direct.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()


def _edited(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    edit(config, target)
    config_path.write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("case", ["model config", "custom code", "other class", "no class"])
def test_anything_else_goes_through_autotokenizer(case: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    def edit(config: dict, directory: Path) -> None:
        if case == "model config":
            (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
        elif case == "custom code":
            config["auto_map"] = {"AutoTokenizer": ["tok.MyTokenizer", None]}
        elif case == "other class":
            config["tokenizer_class"] = "GPT2Tokenizer"
        else:
            del config["tokenizer_class"]

    assert not is_plain_tokenizer_dir(str(_edited(tokenizer_dir, tmp_path / "t", edit)))


def test_loading_a_plain_directory_imports_no_torch(tokenizer_dir: Path) -> None:
    code = (f"import sys; from seqpack.tokenizer import load_tokenizer; load_tokenizer({str(tokenizer_dir)!r}); "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
