"""``--shuffle``: both ways of gathering buckets write the same dataset, and ``auto`` picks by runner.

The local runs force many small spill files (a small ``SPILL_TOKENS``) and many buckets (a small
``--bucket-tokens``), so that buckets read slices of several files, some buckets are empty, and the validation
split has its own buckets. The Dask and portable runners are compared in ``test_dask``/``test_portable``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.portable_runner import PortableRunner
from helpers import write_jsonl
from test_portable import dataset_bytes

import seqpack.transforms.tokenize as tokenize
from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.pipeline.dask_runner import DaskRunner
from seqpack.pipeline.run import run
from seqpack.pipeline.runners import resolve_shuffle
from seqpack.schemas import Manifest
from seqpack.transforms.shard_groups import SHARD_BYTES_PER_TOKEN, buckets_per_shard
from seqpack.transforms.shuffle import bucket_count


@pytest.mark.parametrize(("runner", "expected"), [(FnApiRunner(), "spill"), (DaskRunner(), "runner"),
                                                  (PortableRunner(), "runner")])
def test_auto_spills_on_the_local_runner_and_uses_the_runners_shuffle_elsewhere(runner: object, expected: str) -> None:
    assert resolve_shuffle("auto", runner) == expected
    assert resolve_shuffle("spill", runner) == "spill" and resolve_shuffle("runner", runner) == "runner"


def test_an_unknown_shuffle_is_refused_with_the_choices() -> None:
    with pytest.raises(UsageError, match="--shuffle must be one of auto, runner, spill"):
        RunConfig(inputs=["x"], output="o", tokenizer="t", shuffle="grouped").validate()


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]], tokenizer_dir: Path) -> dict:
    data = write_jsonl(tmp_path_factory.mktemp("in") / "pairs.jsonl", pairs[:300] + pairs[:40])  # duplicates too
    return {"inputs": [str(data)], "tokenizer": str(tokenizer_dir), "max_length": 64, "bucket_tokens": 64,
            "validation_fraction": 0.2, "dedup": "none"}


def _run(tmp_path: Path, job: dict, shuffle: str, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    monkeypatch.setattr(tokenize, "SPILL_TOKENS", 400)  # in-memory runner: the workers are this process
    manifest, _ = run(RunConfig(output=str(tmp_path / shuffle), shuffle=shuffle, **job),
                      ["--direct_running_mode=in_memory"])
    return manifest


@pytest.mark.parametrize("per_shard", [1, 4])
def test_runner_and_spill_shuffles_write_the_same_dataset(
    tmp_path: Path, job: dict, monkeypatch: pytest.MonkeyPatch, per_shard: int
) -> None:
    """One bucket per shard (written directly), and four (staged parts assembled into a shard)."""
    job = {**job, "shard_bytes": per_shard * job["bucket_tokens"] * SHARD_BYTES_PER_TOKEN}
    spill = _run(tmp_path, job, "spill", monkeypatch)
    runner = _run(tmp_path, job, "runner", monkeypatch)
    train = spill.splits["train"]
    buckets = bucket_count(sum(shard.tokens for shard in train.shards), job["bucket_tokens"])
    assert buckets_per_shard(job["shard_bytes"], job["bucket_tokens"], buckets) == per_shard, "enough buckets"
    assert len(train.shards) == -(-buckets // per_shard) and set(spill.splits) == {"train", "validation"}
    assert any(shard.examples == 0 for shard in train.shards) or per_shard > 1, "no empty bucket: smaller buckets"
    assert runner.config["shuffle"] == "runner" and spill.config["shuffle"] == "spill"
    assert dataset_bytes(tmp_path / "runner") == dataset_bytes(tmp_path / "spill")
