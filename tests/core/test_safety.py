"""Safe by default: no remote code unless asked, manifests cannot point outside the dataset."""

from __future__ import annotations

import json
import shutil

import pytest

from seqpack import tokenizer as tokenizer_module
from seqpack.schemas import DatasetFormatError, safe_relative_path


def test_tokenizers_load_without_remote_code_unless_asked(monkeypatch: pytest.MonkeyPatch, tokenizer_dir,
                                                          tmp_path) -> None:
    seen = []
    import transformers

    real = transformers.AutoTokenizer.from_pretrained

    def spy(path, **kwargs):  # noqa: ANN001, ANN202
        seen.append(kwargs.get("trust_remote_code"))
        return real(path, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    tokenizer_module.load_tokenizer(str(tokenizer_dir))  # the plain class, no custom code: loaded directly
    assert seen == []
    unnamed = tmp_path / "unnamed"  # no tokenizer class named: AutoTokenizer decides, and may run code
    shutil.copytree(tokenizer_dir, unnamed)
    config = json.loads((unnamed / "tokenizer_config.json").read_text())
    del config["tokenizer_class"]
    (unnamed / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer_module.load_tokenizer(str(unnamed))
    tokenizer_module.load_tokenizer(str(unnamed), trust_remote_code=True)
    assert seen == [False, True]


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.parquet", "train/../../x.parquet", "gs://bucket/x", "C:/x", "train\\..\\x", ""]
)
def test_manifest_paths_must_stay_inside_the_dataset(path: str) -> None:
    with pytest.raises(DatasetFormatError):
        safe_relative_path(path)


def test_ordinary_shard_paths_are_accepted() -> None:
    assert safe_relative_path("train/part-00000-of-00001.parquet") == "train/part-00000-of-00001.parquet"
