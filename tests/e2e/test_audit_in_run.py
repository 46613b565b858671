"""The audit inside every ``seqpack run``: findings counted in stats.json and the summary line, ``--audit strict``
commits nothing, ``--audit off`` skips it, the shards' bytes never depend on it, and the report shows it.

Five small runs, made once for the module: clean (warn, and off), with findings (warn, in shards assembled from
several buckets and in one shard per bucket), and the same data with ``--audit strict`` over a clean dataset.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import html5lib
import pytest
from helpers import dataset_file, run_args, write_jsonl

from seqpack.audit import BOS_INSIDE, DOUBLED_BOS, FINDINGS
from seqpack.cli.main import main
from seqpack.dataset import open_manifest
from seqpack.schemas import STATS_NAME
from seqpack.schemas import stats as stats_format
from seqpack.tools.audit import audit_dataset
from seqpack.tools.report import build_report
from seqpack.transforms.shard_groups import MIN_SHARDS, buckets_per_shard
from seqpack.transforms.shuffle import bucket_count

FAULTY = [{"source": f"Hello <s> world {i}", "target": "Bonjour"} for i in range(5)]
"""A BOS written into the text: each of these examples has a BOS after its start (``bos-inside``)."""


def _run(root: Path, name: str, records: list[dict[str, str]], tokenizer: Path, *flags: str) -> dict[str, Any]:
    """``seqpack run`` (small blocks and buckets, in this process); its exit code and what it printed on stderr
    (the summary, or the error)."""
    source = write_jsonl(root / f"{name}.jsonl", records)
    args = run_args(source, root / name, tokenizer, "--max-length", "64", "--bucket-tokens", "256", *flags)
    args.remove("-q")
    with contextlib.redirect_stderr(io.StringIO()) as err:  # a module-scoped fixture cannot take capsys
        code = main(args)
    return {"code": code, "summary": err.getvalue(), "path": root / name}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]
         ) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("audit-in-run")
    faulty = pairs[:80] + FAULTY
    made = {
        "clean": _run(root, "clean", pairs[:60], tokenizer_dir, "--shard-bytes", "1"),
        "off": _run(root, "off", pairs[:60], tokenizer_dir, "--shard-bytes", "1", "--audit", "off"),
        # small buckets, so that shards of several buckets each are assembled (at least MIN_SHARDS of them)
        "found": _run(root, "found", faulty, tokenizer_dir, "--shard-bytes", "100000", "--bucket-tokens", "64"),
        "found-whole": _run(root, "found-whole", faulty, tokenizer_dir, "--shard-bytes", "1"),
    }
    shutil.copytree(root / "clean", root / "strict")
    before = {path.relative_to(root / "strict"): path.read_bytes() for path in (root / "strict").rglob("*")
              if path.is_file()}
    made["strict"] = _run(root, "strict", faulty, tokenizer_dir, "--shard-bytes", "1", "--overwrite",
                          "--audit", "strict")
    made["strict"]["before"] = before
    return made


def stats_of(run: dict[str, Any]) -> dict[str, Any]:
    path = dataset_file(run["path"], STATS_NAME)
    return stats_format.parse(path.read_bytes(), str(path))


def split_rows(url: Path, places: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(row in the split, example)`` of each place, as ``seqpack audit`` names them."""
    shards = open_manifest(str(url)).splits["train"].shards
    first = {shard.path: sum(s.rows for s in shards[:i]) for i, shard in enumerate(shards)}
    return [(first[where["shard"]] + where["row"], where["example"]) for where in places]


def test_findings_are_counted_in_stats_and_named_in_the_summary(runs: dict[str, dict[str, Any]]) -> None:
    found = runs["found"]
    stats = stats_of(found)

    assert found["code"] == 0
    assert stats["audit_by_code"] == {BOS_INSIDE: len(FAULTY)}
    assert stats["examples_audited"] == sum(stats["examples_by_split"].values()) == 85
    assert f"  audit: 5 findings: {BOS_INSIDE} 5 (seqpack audit {found['path']} shows them)\n" in found["summary"]


@pytest.mark.parametrize("name", ["found", "found-whole"])
def test_the_places_are_the_first_examples_seqpack_audit_finds(runs: dict[str, dict[str, Any]], name: str) -> None:
    """A shard assembled from several buckets names its rows as the file holds them, as shards of one bucket do."""
    url = runs[name]["path"]
    places = stats_of(runs[name])["audit_places"][BOS_INSIDE]
    audit = audit_dataset(str(url))

    assert dict(audit.counts) == stats_of(runs[name])["audit_by_code"]
    assert split_rows(url, places) == [(p.block, p.example) for p in audit.samples[BOS_INSIDE]]
    shards = open_manifest(str(url)).splits["train"].shards
    if name == "found":  # each shard assembled from several buckets: its rows counted across them
        buckets = bucket_count(sum(shard.tokens for shard in shards), 64)
        per_shard = buckets_per_shard(100000, 64, buckets)
        assert per_shard > 1 and len(shards) == -(-buckets // per_shard) >= MIN_SHARDS
    else:
        assert len({where["shard"] for where in places}) == 3
    assert all(where["shard"].startswith(open_manifest(str(url)).directory + "/") for where in places)


def test_a_clean_run_says_clean_and_counts_nothing(runs: dict[str, dict[str, Any]]) -> None:
    stats = stats_of(runs["clean"])

    assert "  audit: clean\n" in runs["clean"]["summary"]
    assert stats["audit_by_code"] == {} and stats["audit_places"] == {}
    assert stats["examples_audited"] == 60


def test_audit_off_skips_it_and_the_shards_are_the_same_bytes(runs: dict[str, dict[str, Any]]) -> None:
    clean, off = runs["clean"], runs["off"]
    stats = stats_of(off)

    assert "audit:" not in off["summary"]
    assert stats["examples_audited"] == 0 and stats["audit_by_code"] == {}
    shards = [[(s.path, s.sha256) for s in open_manifest(str(run["path"])).splits["train"].shards]
              for run in (clean, off)]
    assert shards[0] == shards[1] and len(shards[0]) > 1
    differ = {key for key in stats_of(clean) if stats_of(clean)[key] != stats[key]}
    assert differ == {"examples_audited"}  # clean: no findings, so only the count of what was checked
    config = [json.loads((run["path"] / "manifest.json").read_text())["config"] for run in (clean, off)]
    assert {key for key in config[0] if config[0][key] != config[1][key]} == {"audit", "inputs", "output"}


def test_strict_findings_fail_the_run_and_commit_nothing(runs: dict[str, dict[str, Any]]) -> None:
    strict = runs["strict"]
    root = strict["path"]
    after = {path.relative_to(root): path.read_bytes() for path in root.rglob("*") if path.is_file()}

    assert strict["code"] == 1
    [line] = [line for line in strict["summary"].splitlines() if line.strip()]
    assert f"--audit strict: the audit found 5 findings: {BOS_INSIDE} 5" in line
    assert "Nothing was committed" in line and "--audit warn" in line
    assert after == strict["before"]  # the clean dataset it would have replaced, untouched


def test_stats_of_an_older_dataset_without_the_audit_still_parse() -> None:
    older = {key: value for key, value in stats_format.finalize(stats_format.empty_stats()).items()
             if key not in ("audit_by_code", "audit_places", "examples_audited")}

    stats = stats_format.parse(json.dumps(older), "stats.json")

    assert stats["audit_by_code"] == {} and stats["audit_places"] == {} and stats["examples_audited"] == 0


def test_damaged_places_are_a_format_error() -> None:
    stats = stats_format.finalize(stats_format.empty_stats())
    stats["audit_places"] = {DOUBLED_BOS: [{"split": "train", "row": -1}]}

    with pytest.raises(stats_format.DatasetFormatError, match="audit_places"):
        stats_format.parse(json.dumps(stats), "stats.json")


def test_places_merge_to_the_smallest_whatever_the_order() -> None:
    """Workers report places in any order and grouping: the statistics keep the same three."""
    places = [stats_format.place("train", f"v000001/train/part-{i % 3:05d}-of-00003.parquet", i, i % 2)
              for i in range(9)]
    parts = [{BOS_INSIDE: places[i::4]} for i in range(4)]

    merged = stats_format.merge_places(parts)

    assert merged == stats_format.merge_places(reversed(parts)) == stats_format.merge_places([{BOS_INSIDE: places}])
    assert [(p["shard"][-22:-17], p["row"]) for p in merged[BOS_INSIDE]] == [("00000", 0), ("00000", 3), ("00000", 6)]


@pytest.mark.parametrize(("name", "expected"), [("found", BOS_INSIDE), ("clean", "no findings"),
                                                ("off", "Not audited")])
def test_the_report_has_the_audit_section(runs: dict[str, dict[str, Any]], name: str, expected: str) -> None:
    document = build_report(str(runs[name]["path"]), blocks=0)
    html5lib.HTMLParser(strict=True).parse(document)
    section = document.split('<section id="audit">', 1)[1].split("</section>", 1)[0]

    assert expected in section
    if name == "found":
        assert FINDINGS[BOS_INSIDE] in section and "<td>5</td>" in section
        examples = section.split('<div class="sample">')[1:]
        assert len(examples) == 3  # three decoded, masked text dim
        assert all('<span class="m">&lt;s&gt;Hello &lt;s&gt; world' in example for example in examples)
        assert all('<span class="t">Bonjour' in example for example in examples)
        places = stats_of(runs[name])["audit_places"][BOS_INSIDE]
        assert [f'<ol start="{where["example"] + 1}">' in example for example, where in zip(examples, places,
                                                                                        strict=True)] == [True] * 3
