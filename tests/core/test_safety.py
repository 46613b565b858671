"""Safe by default: no remote code unless asked, manifests cannot point outside the dataset."""

from __future__ import annotations

import pytest

from seqpack import tokenizer as tokenizer_module
from seqpack.schemas import DatasetFormatError, safe_relative_path


def test_tokenizers_load_without_remote_code_unless_asked(monkeypatch: pytest.MonkeyPatch, tokenizer_dir) -> None:
    seen = []
    import transformers

    real = transformers.AutoTokenizer.from_pretrained

    def spy(path, **kwargs):  # noqa: ANN001, ANN202
        seen.append(kwargs.get("trust_remote_code"))
        return real(path, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    tokenizer_module.load_tokenizer(str(tokenizer_dir))
    tokenizer_module.load_tokenizer(str(tokenizer_dir), trust_remote_code=True)
    assert seen == [False, True]


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../outside.parquet", "train/../../x.parquet", "gs://bucket/x", "C:/x", "train\\..\\x", ""]
)
def test_manifest_paths_must_stay_inside_the_dataset(path: str) -> None:
    with pytest.raises(DatasetFormatError):
        safe_relative_path(path)


def test_ordinary_shard_paths_are_accepted() -> None:
    assert safe_relative_path("train/part-00000-of-00001.parquet") == "train/part-00000-of-00001.parquet"
