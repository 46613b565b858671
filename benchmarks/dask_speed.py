"""Wall time of the same job on the local runner and on a Dask cluster of worker processes, same machine.

    python benchmarks/dask_speed.py --pairs 20000 --workers 2

Both runners get ``--workers`` processes. The Dask cluster (``processes=True``, one thread per worker, on
127.0.0.1) is started before the clock; its first job also pays the workers' imports (Beam, transformers), so
the job runs twice and both times are printed. Besides wall time, the CPU seconds of the whole process tree
(driver, workers, Dask scheduler) are measured: on a shared machine they are the fairer comparison. The
outputs are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from pathlib import Path

import psutil
from memory import write_pairs

from seqpack.config import RunConfig
from seqpack.demo import build_demo_tokenizer
from seqpack.pipeline.run import run


def shard_digests(dataset: Path) -> dict[str, str]:
    return {
        str(p.relative_to(dataset)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset.rglob("*.parquet"))
    }


def cpu_seconds() -> float:
    """CPU time of this process, its finished children and its live descendants (Dask's workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def timed(config: RunConfig, beam_args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one job."""
    wall, cpu = time.monotonic(), cpu_seconds()
    run(config, beam_args)
    return time.monotonic() - wall, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    import dask.distributed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--sentences", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bucket-tokens", type=int, default=262_144)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/dask-speed"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"pairs-{args.pairs}.jsonl"
    write_pairs(data, args.pairs, args.sentences)
    common = {"inputs": [str(data)], "tokenizer": str(build_demo_tokenizer(args.out / "tokenizer")),
              "bucket_tokens": args.bucket_tokens, "overwrite": True}
    local = RunConfig(output=str(args.out / "local"), **common)
    on_dask = RunConfig(output=str(args.out / "dask"), **common)
    times = {"local": [timed(local, [f"--direct_num_workers={args.workers}"]) for _ in range(2)]}
    with dask.distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None) as cluster:
        dask_args = ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
        times["dask"] = [timed(on_dask, dask_args) for _ in range(2)]
    same = shard_digests(args.out / "local") == shard_digests(args.out / "dask")
    for name, runs in times.items():
        print(f"{name}: " + "; ".join(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU" for i, (wall, cpu) in
                                     enumerate(runs)))
    print(f"{args.pairs:,} pairs, {args.workers} worker processes each; identical shards: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
