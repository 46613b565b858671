"""The whole pipeline and the loader against real object-store servers: gs:// (fake-gcs-server) and s3:// (moto).

Inputs, the tokenizer directory and the output all lie in the bucket; the run's shards must be byte for byte
those of the same run into a local directory, and the commit, the overwrite and the lock must behave as they do
locally (see docs/scaling.md). The servers start once per session (tests/conftest.py); S3's
endpoint reaches seqpack only through Beam's ``--s3_*`` options, so the driver's commit and lock use them too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import fsspec
import pytest
from helpers import run_args

from seqpack.cli.main import main
from seqpack.schemas import LOCK_NAME, MANIFEST_NAME, STAGING_NAME


def filesystem(store: Any) -> fsspec.AbstractFileSystem:
    options = {"token": "anon"} if store.scheme == "gs" else store.storage_options
    return fsspec.filesystem(store.scheme, skip_instance_cache=True, **options)


def upload(store: Any, local: Path, name: str) -> str:
    """Copy a local file or directory into the bucket; return its URL."""
    fs, url = filesystem(store), f"{store.url}/{name}"
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
    for path in files:
        relative = path.relative_to(local).as_posix() if local.is_dir() else ""
        fs.pipe_file(f"{url}/{relative}" if relative else url, path.read_bytes())
    return url


def objects(store: Any, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (a URL), relative to it, with its bytes."""
    fs = filesystem(store)
    root = prefix.split("://", 1)[1].rstrip("/")
    return {path[len(root) + 1:]: fs.cat_file(path) for path in sorted(fs.find(root))}


def sha256s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory, pairs_file: Path, tokenizer_dir: Path) -> Path:
    """The reference: the same run into a local directory."""
    out = tmp_path_factory.mktemp("local") / "ds"
    assert main(run_args(pairs_file, out, tokenizer_dir)) == 0
    return out


def local_files(dataset: Path) -> dict[str, bytes]:
    return {p.relative_to(dataset).as_posix(): p.read_bytes() for p in sorted(dataset.rglob("*")) if p.is_file()}


def run_in_bucket(store: Any, pairs_file: Path, tokenizer_dir: Path, *extra: str, mark: list | None = None,
                  ) -> tuple[int, str]:
    """``seqpack run`` with input, tokenizer and output in the bucket; the exit code and the output URL.
    ``mark`` gets the server log's position after the uploads, before the run."""
    inputs = upload(store, pairs_file, "in/pairs.jsonl")
    tokenizer = upload(store, tokenizer_dir, "tokenizer")
    if mark is not None:
        mark.append(store.server.log.mark())
    output = f"{store.url}/out"
    args = run_args(Path("x"), Path("x"), Path("x"), *store.beam_args, *extra)
    args[args.index("-i") + 1], args[args.index("-o") + 1], args[args.index("-t") + 1] = inputs, output, tokenizer
    return main(args), output


def test_a_run_into_the_bucket_is_the_local_run_byte_for_byte(
    object_store: Any, pairs_file: Path, tokenizer_dir: Path, local_dataset: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    marks: list[int] = []
    code, output = run_in_bucket(object_store, pairs_file, tokenizer_dir, mark=marks)
    assert code == 0, capsys.readouterr().err
    requests = object_store.server.log.requests_since(marks[0])
    by_object = object_store.server.log.requests_by_object(marks[0])
    with capsys.disabled():  # shown with `pytest -s`: the numbers behind the cost model in docs/scaling.md
        print(f"\n{object_store.scheme}:// requests of one run: {dict(sorted(requests.items()))}")
        for kind, counts in by_object.items():
            print(f"  {kind:<10} {dict(sorted(counts.items()))}")
    assert "COPY" not in requests and "BATCH" not in requests, "objects are written in place, never renamed"
    assert by_object["manifest"]["PUT"] == 1, "the manifest is one PUT"

    remote, local = objects(object_store, output), local_files(local_dataset)
    assert LOCK_NAME not in remote, "the lock is released"
    assert not any(name.startswith(STAGING_NAME) for name in remote), "the staging files are removed"
    assert not any(".tmp-" in name for name in remote), "no temporary object is left"
    manifest, local_manifest = json.loads(remote.pop(MANIFEST_NAME)), json.loads(local.pop(MANIFEST_NAME))
    assert manifest["splits"] == local_manifest["splits"], "the same shards, rows and sha256s"
    assert sha256s(remote).keys() == sha256s(local).keys()
    shards = [s["path"] for split in manifest["splits"].values() for s in split["shards"]]
    assert shards and all(sha256s(remote)[p] == sha256s(local)[p] for p in shards)

    if object_store.scheme == "s3":  # the verify command reads through fsspec, which finds the endpoint in the env
        monkeypatch.setenv("AWS_ENDPOINT_URL", object_store.server.url)
    capsys.readouterr()
    assert main(["verify", output]) == 0, capsys.readouterr().err
    _loader_reads_what_the_local_loader_reads(object_store, output, local_dataset)


def _loader_reads_what_the_local_loader_reads(store: Any, output: str, local_dataset: Path) -> None:
    from seqpack.loader import PackedDataset

    options = {"token": "anon"} if store.scheme == "gs" else store.storage_options
    remote = PackedDataset(output, shuffle=False, verify=True, storage_options=options)
    local = PackedDataset(str(local_dataset), shuffle=False)
    got, expected = list(remote), list(local)
    assert len(got) == len(expected) == remote.num_samples > 0
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        assert all(bytes(memoryview(a[k].numpy())) == bytes(memoryview(b[k].numpy())) for k in a)


def test_overwrite_replaces_the_dataset_and_touches_nothing_foreign(
    object_store: Any, pairs_file: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture,
) -> None:
    fs = filesystem(object_store)
    neighbour = f"{object_store.url}/out-notes.txt"  # shares the prefix "out" but is not in out/
    fs.pipe_file(neighbour.split("://", 1)[1], b"mine")
    assert run_in_bucket(object_store, pairs_file, tokenizer_dir)[0] == 0
    output = f"{object_store.url}/out"
    first = objects(object_store, output)
    assert run_in_bucket(object_store, pairs_file, tokenizer_dir, "--seed", "1")[0] == 2, "needs --overwrite"
    assert objects(object_store, output) == first

    assert run_in_bucket(object_store, pairs_file, tokenizer_dir, "--seed", "1", "--overwrite")[0] == 0
    second = objects(object_store, output)
    assert json.loads(second[MANIFEST_NAME])["directory"] == "v000002"
    assert sorted({name.split("/")[0] for name in second}) == [MANIFEST_NAME, "v000002"], "v000001 is deleted"
    assert fs.cat_file(neighbour.split("://", 1)[1]) == b"mine", "an object beside the output is not touched"

    fs.pipe_file(f"{output}/v000002/train/NOTES.txt".split("://", 1)[1], b"mine")
    capsys.readouterr()
    assert run_in_bucket(object_store, pairs_file, tokenizer_dir, "--overwrite")[0] == 2
    assert "files it did not write" in capsys.readouterr().err
    after = objects(object_store, output)
    assert after.pop("v000002/train/NOTES.txt") == b"mine" and after == second, "nothing was touched"


@pytest.mark.parametrize("object_store", ["s3"], indirect=True)  # gs:// workers each look for credentials ~20 s
def test_worker_processes_reach_the_store_through_the_runs_options(
    object_store: Any, pairs_file: Path, tokenizer_dir: Path, local_dataset: Path, capsys: pytest.CaptureFixture,
) -> None:
    """The local runner's worker processes get the run's Beam options (``--s3_endpoint_url``, credentials): Beam's
    FnApiRunner hands its workers none, and they asked the real AWS, retrying for minutes."""
    code, output = run_in_bucket(object_store, pairs_file, tokenizer_dir,
                                 "--direct_running_mode=multi_processing", "--direct_num_workers=2")
    assert code == 0, capsys.readouterr().err
    remote, local = objects(object_store, output), local_files(local_dataset)
    manifest = json.loads(remote[MANIFEST_NAME])
    shards = [s["path"] for split in manifest["splits"].values() for s in split["shards"]]
    assert shards and all(sha256s(remote)[p] == sha256s(local)[p] for p in shards)
