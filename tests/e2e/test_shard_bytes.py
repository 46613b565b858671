"""``--shard-bytes``: a run whose buckets share shards has fewer files, the same rows in the same order as a run
with one bucket per shard, verifies, and reads back through the loader exactly once, resuming exactly."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, run_args, write_jsonl

from seqpack.cli.main import main
from seqpack.dataset.verify import verify_dataset
from seqpack.loader import PackedDataLoader, PackedDataset
from seqpack.schemas import BLOCK_SCHEMA, STAGING_NAME, serialize_shard
from seqpack.transforms.shard_groups import SHARD_BYTES_PER_TOKEN, buckets_per_shard
from seqpack.transforms.shuffle import bucket_count

BUCKET_TOKENS = 320
PER_SHARD = 3
"""Train has enough buckets (over ``MIN_SHARDS`` times this) to group exactly this many to a shard."""

pytestmark = pytest.mark.filterwarnings("ignore:.*suggested max number of worker")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, pairs: list[dict[str, str]], tokenizer_dir: Path) -> dict:
    """The same job written with one bucket per shard and with ``PER_SHARD``."""
    root = tmp_path_factory.mktemp("shard-bytes")
    data = write_jsonl(root / "pairs.jsonl", pairs)
    out = {}
    for per_shard in (1, PER_SHARD):
        output = root / f"per-shard-{per_shard}"
        shard_bytes = per_shard * BUCKET_TOKENS * SHARD_BYTES_PER_TOKEN
        assert main(run_args(data, output, tokenizer_dir, "--bucket-tokens", str(BUCKET_TOKENS), "--shard-bytes",
                             str(shard_bytes), "--validation-fraction", "0.1", "--row-group-size", "4")) == 0
        out[per_shard] = output
    return out


def manifest(dataset: Path) -> dict:
    return json.loads((dataset / "manifest.json").read_text())


def shard_tables(dataset: Path, split: str) -> list[pa.Table]:
    return [pq.read_table(dataset / shard["path"]) for shard in manifest(dataset)["splits"][split]["shards"]]


def test_buckets_share_shards_and_the_rows_and_statistics_stay_the_same(datasets: dict) -> None:
    one, grouped = datasets[1], datasets[PER_SHARD]
    for split in ("train", "validation"):
        tokens = sum(s["tokens"] for s in manifest(one)["splits"][split]["shards"])
        buckets = bucket_count(tokens, BUCKET_TOKENS)
        per_shard = buckets_per_shard(PER_SHARD * BUCKET_TOKENS * SHARD_BYTES_PER_TOKEN, BUCKET_TOKENS, buckets)
        assert per_shard == PER_SHARD or split == "validation", "make BUCKET_TOKENS smaller"
        singles, groups = shard_tables(one, split), shard_tables(grouped, split)
        assert len(singles) == buckets and len(groups) == -(-buckets // per_shard)
        assert pa.concat_tables(groups).equals(pa.concat_tables(singles)), "the same rows, in the same order"
        for index in range(len(groups)):  # and each grouped shard is its buckets written at once
            members = pa.concat_tables(singles[index * per_shard : (index + 1) * per_shard]).combine_chunks()
            members = members.cast(BLOCK_SCHEMA)  # as written: Parquet reads lists back with other item names
            path = grouped / manifest(grouped)["splits"][split]["shards"][index]["path"]
            assert path.read_bytes() == serialize_shard(members, "parquet", 4)
    assert len(manifest(grouped)["splits"]["train"]["shards"]) > 1, "make BUCKET_TOKENS smaller"
    assert json.loads(dataset_file(one, "stats.json").read_text()) == json.loads(
        dataset_file(grouped, "stats.json").read_text()
    )
    assert manifest(grouped)["config"]["shard_bytes"] == PER_SHARD * BUCKET_TOKENS * SHARD_BYTES_PER_TOKEN
    assert verify_dataset(str(grouped)).shards == sum(len(s["shards"]) for s in manifest(grouped)["splits"].values())
    assert not (grouped / STAGING_NAME).exists(), "the parts go with the staging directory"


def row_keys(samples: Sequence[dict]) -> list[tuple[int, ...]]:
    return [tuple(sample["input_ids"].tolist()) for sample in samples]


def loader(url: Path) -> PackedDataLoader:
    dataset = PackedDataset(str(url), batch_size=4, shuffle_buffer=8, lanes=2)
    return PackedDataLoader(dataset, num_workers=0, collate_fn=row_keys)


def test_the_loader_reads_every_row_once_and_resumes_exactly_mid_epoch(datasets: dict) -> None:
    grouped = datasets[PER_SHARD]
    rows = [tuple(ids) for table in shard_tables(grouped, "train") for ids in table.column("input_ids").to_pylist()]
    reference = list(loader(grouped))
    assert Counter(row for batch in reference for row in batch) == Counter(rows)
    for stop in (1, len(reference) // 2, len(reference) - 1):
        first = loader(grouped)
        head = []
        for batch in first:
            head.append(batch)
            if len(head) == stop:
                break
        second = loader(grouped)
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert head + list(second) == reference
