"""``benchmarks/scale.py`` counts what the issue asks for: the spill path's requests per token grow with the data,
the runner path's stay flat. Counts, not timings, on the in-memory local runner: a few seconds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
scale = pytest.importorskip("scale")  # needs psutil (the bench extra)


def test_runner_shuffle_opens_per_token_stay_flat_while_the_spill_shuffles_grow(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    runs = _count_both_shuffles(tmp_path, tokenizer_dir, pairs=120)
    small, large = runs["spill", 1], runs["spill", 4]
    assert large.counts["create"] > small.counts["create"] > 4 and large.buckets > small.buckets > 4
    assert large.opens_per_1k_tokens > 2.5 * small.opens_per_1k_tokens  # buckets x files: quadratic
    small, large = runs["runner", 1], runs["runner", 4]
    assert small.counts["open"] == small.counts["create"] and large.counts["open"] == large.counts["create"]
    assert large.opens_per_1k_tokens <= 1.25 * small.opens_per_1k_tokens  # one open per spill file: linear
    assert large.counts["read_bytes"] / large.tokens <= 1.25 * small.counts["read_bytes"] / small.tokens


def test_against_s3_the_runner_shuffles_spill_file_gets_per_token_stay_flat_while_the_spill_shuffles_grow(
    tmp_path: Path, tokenizer_dir: Path, s3_server: object
) -> None:
    """The same claim counted by a real S3 server (moto, its request log): the GETs of spill files. Tiny sizes:
    each spill-file open is several HTTP requests (Beam makes a client per open), and the spill path's
    opens are buckets x spill files."""
    from s3_requests import S3Store

    store = S3Store(s3_server, prefix=f"scale-{tmp_path.name}")
    runs = _count_both_shuffles(tmp_path, tokenizer_dir, pairs=16, store=store)
    for run in runs.values():
        assert run.requests is not None and run.requests.by_kind["PUT"] > 0 and run.requests.spill_gets > 0
    small, large = runs["spill", 1], runs["spill", 4]
    assert large.spill_gets_per_1k_tokens > 2 * small.spill_gets_per_1k_tokens  # buckets x files: quadratic
    small, large = runs["runner", 1], runs["runner", 4]
    assert large.spill_gets_per_1k_tokens <= 1.25 * small.spill_gets_per_1k_tokens  # each file once: linear


def _count_both_shuffles(tmp_path: Path, tokenizer_dir: Path, *, pairs: int, **store: object) -> dict:
    """Each shuffle at 1x and 4x ``pairs``, its requests counted: ``{(shuffle, factor): Scale}``."""
    runs = {}
    for factor in (1, 4):
        data = tmp_path / f"pairs-{factor}.jsonl"
        scale.write_pairs(data, pairs * factor, 1)
        for shuffle in scale.SHUFFLES:
            runs[shuffle, factor] = scale.count_in_process(
                data, tmp_path / f"{shuffle}-{factor}", tokenizer_dir, shuffle=shuffle, scale=factor,
                bucket_tokens=256, spill_tokens=256, **store)
    return runs
