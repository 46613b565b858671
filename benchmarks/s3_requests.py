"""The benchmarks' runs with their output in a real S3 bucket: moto's S3 server on 127.0.0.1, its request log
counted per run (``tests/object_store_servers.py``, shared with the object-store tests, not copied).

    with S3Store.start(log_dir) as store:
        mark = store.mark()
        ...                                       # seqpack run --output store.url("ds") *store.beam_args
        store.requests(mark)                      # Requests(by_kind=Counter({"GET": ..., "PUT": ...}), spill_gets=...)

Only the output (staging with its spill files, shards, manifest) lies in the bucket; inputs and tokenizer stay
local, so the requests counted are the shuffle's and the commit's.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import object_store_servers as servers  # noqa: E402  (tests/, found through the path above)

from seqpack.transforms.shuffle import SPILL_DIR  # noqa: E402

SPILL_MARK = f"/{SPILL_DIR}/"
"""A request whose (unquoted) target contains this touched a spill file: ``<output>/<staging>/_spill/...``."""


@dataclass(frozen=True)
class Requests:
    """What a run asked of the server: every request by kind (GET, PUT, PART, LIST, DELETE, ...), and the GETs
    (reads and HEADs) of spill files, the ones whose number the shuffle decides."""

    by_kind: Counter[str]
    spill_gets: int

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def missing() -> str | None:
    """Why the S3 server cannot start here (a package is absent), or None."""
    return servers.missing("moto", "flask", "boto3", "s3fs")


class S3Store:
    """A prefix ``s3://<bucket>/scale/`` on a running moto server."""

    def __init__(self, server: servers.S3Server, prefix: str = "scale") -> None:
        self.server, self.prefix = server, prefix

    @classmethod
    @contextmanager
    def start(cls, log_dir: Path) -> Iterator[S3Store]:
        """A fresh moto server logging into ``log_dir``, stopped at the end of the block."""
        reason = missing()
        if reason:
            raise SystemExit(f"--store s3 needs moto's S3 server: {reason}")
        log_dir.mkdir(parents=True, exist_ok=True)
        with servers.S3Server(log_dir) as server:
            yield cls(server)

    def url(self, name: str) -> str:
        return f"s3://{servers.BUCKET}/{self.prefix}/{name}"

    @property
    def beam_args(self) -> list[str]:
        """Beam's ``--s3_*`` options: the endpoint reaches the driver and every SDK worker through them."""
        return self.server.beam_args

    @property
    def env(self) -> dict[str, str]:
        """The credentials, without ``AWS_ENDPOINT_URL``: as in the object-store tests, the endpoint must come
        from the ``--s3_*`` options (a run that ignored them fails instead of reaching the server anyway)."""
        return {k: v for k, v in self.server.env.items() if k != "AWS_ENDPOINT_URL"}

    def mark(self) -> int:
        return self.server.log.mark()

    def requests(self, mark: int) -> Requests:
        """The requests logged since ``mark``."""
        by_kind: Counter[str] = Counter()
        spill_gets = 0
        for method, target, _ in self.server.log.lines_since(mark):
            kind = servers.request_kind(method, target)
            by_kind[kind] += 1
            spill_gets += kind == "GET" and SPILL_MARK in unquote(target)
        return Requests(by_kind, spill_gets)

    def read_text(self, url: str) -> str:
        """An object's text, read through s3fs (after a run's requests are counted: this one is not the run's)."""
        return self._fs().cat_file(url.split("://", 1)[1]).decode()

    def _fs(self) -> Any:
        import fsspec

        return fsspec.filesystem("s3", skip_instance_cache=True, **self.server.storage_options)


def manifest(store: S3Store | None, output: str) -> dict[str, Any]:
    """The manifest of a finished run, in the bucket or in a local directory."""
    if store is None:
        return json.loads((Path(output) / "manifest.json").read_text())
    return json.loads(store.read_text(f"{output}/manifest.json"))
