"""How the shuffle's requests grow with the data: ``--shuffle spill`` against ``--shuffle runner``.

    python benchmarks/scale.py                      # 1x, 4x, 16x; local runner and a Dask cluster
    python benchmarks/scale.py --quick              # 1x and 4x, local runner only: about a minute
    python benchmarks/scale.py --latency-ms 20      # each spill-file open waits 20 ms, as a cloud bucket would
    python benchmarks/scale.py --store s3           # the output in a real S3 bucket (moto's server), local runner

Every run is a fresh ``seqpack run`` process on synthetic one-sentence pairs (the demo grammar, numbered so
that none repeat) with the demo tokenizer, forced into many small spill files (``--spill-tokens``, through
``SEQPACK_SPILL_TOKENS``, and reading 16 records per batch) and many buckets (a small ``--bucket-tokens``), so
that at 16x both pass 1,000. Every process of the run (the driver, Beam's SDK workers, the Dask workers) counts
its spill-file requests with ``benchmarks/countio.py``, installed at start-up by
``benchmarks/scale_hook/sitecustomize.py``.

Per run the table gives: tokens written, spill files, buckets (shards), spill-file opens (per 1,000 tokens),
bytes read from spill files per token, bytes moved through the runner's shuffle per token (``runner`` only),
the driver's and the largest worker's peak RSS, and the wall time. The spill path's opens are *buckets × spill
files*: per token they grow with the data; the runner path opens each spill file once: per token they are flat.

With ``--store s3`` the run's output (staging with its spill files, shards, manifest) lies in a bucket of moto's
S3 server on 127.0.0.1 (``s3_requests.py``; inputs and tokenizer stay local), and the server's request log adds
the object-store requests of each run, by kind, and the GETs of spill files (per 1,000 tokens). Its defaults:
500 pairs, 1x and 4x of both paths and 16x of the runner path only, on the local runner in memory (one process:
the worker RSS column is 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - psutil comes with the bench and dask extras
    sys.exit("benchmarks/scale.py needs psutil: pip install psutil (or 'seqpack[bench]')")

import countio
from memory import write_pairs
from s3_requests import Requests, S3Store, manifest

from seqpack.demo import build_demo_tokenizer

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
SHUFFLES = ("spill", "runner")
RECORDS_PER_BATCH = 16
"""Read batches of 16 one-sentence pairs (about 500 tokens): a worker spills at most once per batch."""
S3_SPILL_MAX_SCALE = 4
"""With ``--store s3`` the spill path runs up to 4x only: every spill-file open is HTTP round trips to the server
(about 300,000 opens at 16x of 2,000 pairs), and its growth per token already shows at 4x."""


@dataclass(frozen=True)
class Scale:
    """What a run of one size and one shuffle cost."""

    runner: str
    shuffle: str
    scale: int
    tokens: int
    buckets: int
    counts: Counter[str]
    driver_rss: int = 0
    worker_rss: int = 0
    seconds: float = 0.0
    requests: Requests | None = None
    """The object store's requests of the run (``--store s3``), from the server's log."""

    @property
    def opens_per_1k_tokens(self) -> float:
        return 1000 * self.counts["open"] / self.tokens

    @property
    def spill_gets_per_1k_tokens(self) -> float:
        return 1000 * self.requests.spill_gets / self.tokens if self.requests else 0.0

    def row(self) -> str:
        c, t = self.counts, self.tokens
        row = (f"| {self.runner} | {self.shuffle} | {self.scale}x | {t:,} | {c['create']:,} | {self.buckets:,} "
               f"| {c['open']:,} | {self.opens_per_1k_tokens:.1f} | {c['read_bytes'] / t:.1f} "
               f"| {c['chunk_bytes'] / t:.1f} | {self.driver_rss / MIB:,.0f} | {self.worker_rss / MIB:,.0f} "
               f"| {self.seconds:.1f} |")
        if self.requests is None:
            return row
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(self.requests.by_kind.items()))
        return (f"{row} {self.requests.total:,} | {kinds} | {self.requests.spill_gets:,} "
                f"| {self.spill_gets_per_1k_tokens:.1f} |")


HEADER = ("| runner | shuffle | data | tokens | spill files | buckets | opens | opens / 1k tokens | bytes read / token "
          "| bytes shuffled / token | driver peak RSS MiB | worker peak RSS MiB | seconds |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
S3_HEADER = ("| runner | shuffle | data | tokens | spill files | buckets | opens | opens / 1k tokens "
             "| bytes read / token | bytes shuffled / token | driver peak RSS MiB | worker peak RSS MiB | seconds "
             "| S3 requests | by kind | spill-file GETs | spill-file GETs / 1k tokens |\n"
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")


def _written(dataset: str, store: S3Store | None = None) -> tuple[int, int]:
    """(tokens, shards) of every split of a dataset, in the bucket or a local directory."""
    splits = manifest(store, dataset)["splits"].values()
    return sum(s["tokens"] for s in splits), sum(len(s["shards"]) for s in splits)


class _Peaks(threading.Thread):
    """Samples the RSS of the driver and of the worker processes every ``interval`` seconds."""

    def __init__(self, driver: int, workers: Callable[[], list[int]], interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.driver, self.workers, self.interval = driver, workers, interval
        self.driver_rss = self.worker_rss = 0
        self.done = threading.Event()

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            return psutil.Process(pid).memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0

    def run(self) -> None:
        while not self.done.is_set():
            self.driver_rss = max(self.driver_rss, self._rss(self.driver))
            self.worker_rss = max([self.worker_rss, *map(self._rss, self.workers())])
            time.sleep(self.interval)


def _children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _hook_env(count_dir: Path, spill_tokens: int, latency_ms: float) -> dict[str, str]:
    """The environment that makes a Python process count its shuffle I/O (``scale_hook/sitecustomize.py``)."""
    path = os.pathsep.join(filter(None, [str(HERE / "scale_hook"), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path, "SEQPACK_COUNT_DIR": str(count_dir),
            "SEQPACK_SPILL_TOKENS": str(spill_tokens), "SEQPACK_RECORDS_PER_BATCH": str(RECORDS_PER_BATCH),
            "SEQPACK_OPEN_LATENCY_MS": str(latency_ms)}


def run_measured(args: argparse.Namespace, data: Path, work: Path, runner: str, shuffle: str, scale: int,
                 store: S3Store | None = None) -> Scale:
    """One ``seqpack run`` subprocess, its spill-file requests counted in every process (and, with a ``store``,
    by the server), its memory sampled."""
    count_dir = Path(tempfile.mkdtemp(prefix="counts-", dir=work))
    env = _hook_env(count_dir, args.spill_tokens, args.latency_ms)
    if store:  # the credentials; the endpoint reaches the run through the --s3_* options only
        env = {**{k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}, **store.env}
    name = f"ds-{runner}-{shuffle}-{scale}"
    dataset = store.url(name) if store else str(work / name)
    command = [sys.executable, "-m", "seqpack.cli", "run", "--quiet", "--overwrite", "--input", str(data),
               "--output", dataset, "--tokenizer", str(args.tokenizer), "--max-length", str(args.max_length),
               "--bucket-tokens", str(args.bucket_tokens), "--shuffle", shuffle,
               "--shard-bytes", "1",  # one bucket per shard: the table's shard count is the bucket count
               *(store.beam_args if store else [])]
    cluster = None
    if runner == "dask":
        import dask.distributed as distributed

        saved = dict(os.environ)
        os.environ.update(env)  # the Dask worker processes count too: they inherit this environment
        try:
            cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        with distributed.Client(cluster) as client:
            worker_pids = list(client.run(os.getpid).values())
        command += ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
    elif store:  # one process: with multi_processing the SDK workers hung here against moto (not diagnosed yet)
        command += ["--direct_running_mode=in_memory"]
    else:
        command += ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    mark = store.mark() if store else 0
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = _Peaks(process.pid, (lambda: worker_pids) if cluster else (lambda: _children(process.pid)))
    peaks.start()
    _, stderr = process.communicate()
    seconds = time.monotonic() - start
    peaks.done.set()
    peaks.join()
    if cluster is not None:
        cluster.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    requests = store.requests(mark) if store else None  # before reading the manifest: that GET is not the run's
    tokens, buckets = _written(dataset, store)
    return Scale(runner, shuffle, scale, tokens, buckets, countio.totals(count_dir), peaks.driver_rss,
                 peaks.worker_rss, seconds, requests)


def count_in_process(data: Path, out: Path, tokenizer: Path, *, shuffle: str, scale: int = 1,
                     bucket_tokens: int, spill_tokens: int, max_length: int = 64,
                     store: S3Store | None = None) -> Scale:
    """A run on the in-memory local runner in this process, its requests counted (for tests: no timings). With a
    ``store`` the output goes to ``store.url(out.name)`` and the server counts the run's requests too."""
    from seqpack.config import RunConfig
    from seqpack.pipeline.run import run

    count_dir = out.parent / f"{out.name}-counts"
    output = store.url(out.name) if store else str(out)
    mark = store.mark() if store else 0
    with countio.counting(str(count_dir), spill_tokens=spill_tokens, records_per_batch=RECORDS_PER_BATCH):
        run(RunConfig(inputs=[str(data)], output=output, tokenizer=str(tokenizer), max_length=max_length,
                      bucket_tokens=bucket_tokens, shard_bytes=1, shuffle=shuffle),  # a shard per bucket
            ["--direct_running_mode=in_memory", *(store.beam_args if store else [])])
    requests = store.requests(mark) if store else None
    tokens, buckets = _written(output, store)
    return Scale("local", shuffle, scale, tokens, buckets, countio.totals(count_dir), requests=requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1x and 4x of 500 pairs, local runner only")
    parser.add_argument("--pairs", type=int, help="pairs at 1x (default 2000, about 66k tokens; 500 with s3)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--runners", nargs="+", choices=("local", "dask"),
                        help="default: local and dask; local with --store s3")
    parser.add_argument("--store", choices=("local", "s3"), default="local",
                        help="where the output goes: a local directory, or a bucket of moto's S3 server")
    parser.add_argument("--bucket-tokens", type=int, default=1024, help="small, for many buckets (default 1024)")
    parser.add_argument("--spill-tokens", type=int, default=1024, help="small, for many spill files (default 1024)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="SDK worker or Dask worker processes (default 2)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep per spill-file open (default 0)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/scale"))
    args = parser.parse_args(argv)
    s3 = args.store == "s3"
    args.pairs = args.pairs or (500 if s3 or args.quick else 2_000)
    args.runners = args.runners or (["local"] if s3 or args.quick else ["local", "dask"])
    if args.quick:
        args.scales = [1, 4]

    args.out.mkdir(parents=True, exist_ok=True)
    args.tokenizer = build_demo_tokenizer(args.out / "tokenizer")
    if not s3:
        return _table(args, HEADER, None)
    with S3Store.start(args.out / "s3-logs") as store:
        return _table(args, S3_HEADER, store)


def _runs(args: argparse.Namespace, s3: bool) -> list[tuple[int, str, str]]:
    """(scale, runner, shuffle) of each run; with s3 the spill path stops at ``S3_SPILL_MAX_SCALE``."""
    return [(scale, runner, shuffle) for scale in args.scales for runner in args.runners for shuffle in SHUFFLES
            if not (s3 and shuffle == "spill" and scale > S3_SPILL_MAX_SCALE)]


def _table(args: argparse.Namespace, header: str, store: S3Store | None) -> int:
    """Run every size and shuffle, printing each row as it comes; the table also goes to ``<out>/scale.md``."""
    rows = [header]
    print(header, flush=True)
    for scale, runner, shuffle in _runs(args, store is not None):
        data = args.out / f"pairs-{args.pairs * scale}.jsonl"
        if not data.exists():
            write_pairs(data, args.pairs * scale, 1)
        rows.append(run_measured(args, data, args.out, runner, shuffle, scale, store).row())
        print(rows[-1], flush=True)
    skipped = sorted({scale for scale in args.scales if store and scale > S3_SPILL_MAX_SCALE})
    if skipped:
        rows.append(f"\n`--shuffle spill` is not run at {', '.join(f'{s}x' for s in skipped)} against S3: its "
                    f"spill-file GETs per token already grow from 1x to {S3_SPILL_MAX_SCALE}x (the point of the "
                    "table), and its buckets x spill files requests, each an HTTP round trip, would take too long.")
        print(rows[-1], flush=True)
    (args.out / "scale.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
