"""``--append --dedup exact`` with the dataset in a bucket (gs:// on fake-gcs-server, s3:// on moto): the job
finds the earlier generation's key files there, reads them on the workers, and lists its own in the manifest.

Only gs:// here: the same test on moto's s3:// passes too, but takes 80 s (two runs against moto); the key files go
through Beam's filesystems as shards do, which tests/e2e/test_object_stores.py checks on both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from helpers import IN_PROCESS, write_jsonl

from seqpack.cli.main import main
from seqpack.schemas import MANIFEST_NAME
from seqpack.schemas.dedup_keys import KEY_BYTES
from seqpack.schemas.layout import DEDUP_DIR, is_dedup_key_file
from seqpack.transforms.dedup import DROPPED_REASON


@pytest.mark.parametrize("object_store", ["gs"], indirect=True)
def test_an_append_into_a_bucket_drops_what_the_bucket_holds(object_store: Any, pairs: list[dict],
                                                             tokenizer_dir: Path, tmp_path: Path) -> None:
    options = {"token": "anon"} if object_store.scheme == "gs" else object_store.storage_options
    fs = fsspec.filesystem(object_store.scheme, skip_instance_cache=True, **options)
    root = object_store.url.split("://", 1)[1]
    first, second = pairs[:30], pairs[20:40]
    for name, records in (("a", first), ("b", second)):
        fs.pipe_file(f"{root}/in/{name}.jsonl", write_jsonl(tmp_path / name, records).read_bytes())
    output = f"{object_store.url}/out"
    common = ["-o", output, "-t", str(tokenizer_dir), "--dedup", "exact", IN_PROCESS, *object_store.beam_args]
    for names, append in (("a", []), ("ab", ["--append"])):
        inputs = [a for name in names for a in ("-i", f"{object_store.url}/in/{name}.jsonl")]
        assert main(["run", "-q", *inputs, *common, *append]) == 0
    manifest = json.loads(fs.cat_file(f"{root}/out/{MANIFEST_NAME}"))
    for generation, kept in zip(manifest["generations"], (30, 10), strict=True):
        stats = json.loads(fs.cat_file(f"{root}/out/{generation['directory']}/stats.json"))
        assert sum(stats["examples_by_split"].values()) == kept
        listed = sorted(path for path in generation["files"] if is_dedup_key_file(path))
        found = sorted(path[len(root) + 5:] for path in fs.find(f"{root}/out/{generation['directory']}/{DEDUP_DIR}"))
        assert listed == found and sum(fs.size(f"{root}/out/{path}") for path in listed) == KEY_BYTES * kept
    assert stats["dropped_by_reason"] == {DROPPED_REASON: 10}
