"""Peak memory of a local ``seqpack run`` as the input grows, and what ``--bucket-tokens`` does to it.

    python benchmarks/memory.py                                   # 20k, 40k, 80k pairs; two bucket sizes
    python benchmarks/memory.py --pairs 50000 --scales 1 2 4 --bucket-tokens 4194304 262144 --workers 2

Each run is a fresh ``seqpack run`` process (Beam's FnApiRunner, ``--workers`` SDK worker processes) on
synthetic pairs from the demo grammar (several sentences per pair, numbered so no two are alike) with the demo
tokenizer. A sampler walks the process tree every ``--interval`` seconds and records:

- ``tree``: the sum of PSS over the driver and every worker (shared pages counted once), at its peak;
- ``driver``: the RSS of the ``seqpack run`` process itself, which in the local runner also holds the shuffle;
- ``worker``: the largest RSS of any one SDK worker process (what a Dataflow worker would need per bucket).

It prints a Markdown table (docs/dataflow.md quotes one) and writes it to ``--out``/memory.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - psutil comes with the dask extra
    sys.exit("benchmarks/memory.py needs psutil: pip install psutil (or 'seqpack[dask]')")

from seqpack.demo import build_demo_tokenizer, make_pairs

MIB = 1 << 20


@dataclass(frozen=True)
class Peak:
    tree_pss: int
    driver_rss: int
    worker_rss: int
    seconds: float


def write_pairs(path: Path, count: int, sentences: int) -> int:
    """``count`` distinct pairs of ``sentences`` demo sentences each; returns the file's size in bytes."""
    base = make_pairs()
    with open(path, "w", encoding="utf-8") as out:
        for n in range(count):
            picked = [base[(n * 7 + k * 131) % len(base)] for k in range(sentences)]
            source = " ".join(p["source"] for p in picked) + f" ({n})"
            target = " ".join(p["target"] for p in picked) + f" ({n})"
            out.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _sample(root: psutil.Process) -> tuple[int, int, int]:
    """(sum of PSS over the tree, RSS of the driver, largest RSS among the other processes)."""
    pss = driver = worker = 0
    for process in _tree(root):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += info.pss
        if process.pid == root.pid:
            driver = info.rss
        else:
            worker = max(worker, info.rss)
    return pss, driver, worker


def measure(command: list[str], interval: float) -> Peak:
    """Run ``command`` and follow its process tree until it exits; fail loudly if it fails."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    tree = driver = worker = 0
    while process.poll() is None:
        sample = _sample(root)
        tree, driver, worker = max(tree, sample[0]), max(driver, sample[1]), max(worker, sample[2])
        time.sleep(interval)
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return Peak(tree, driver, worker, time.monotonic() - start)


def run_command(
    data: Path, out: Path, tokenizer: Path, bucket_tokens: int, workers: int, shard_bytes: int | None = None
) -> list[str]:
    return [
        sys.executable, "-m", "seqpack.cli", "run", "--quiet", "--overwrite",
        "--input", str(data), "--output", str(out), "--tokenizer", str(tokenizer),
        "--max-length", "2048", "--bucket-tokens", str(bucket_tokens),
        *([] if shard_bytes is None else ["--shard-bytes", str(shard_bytes)]),
        "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="pairs at scale 1 (default 20000)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--sentences", type=int, default=4, help="demo sentences per pair (default 4)")
    parser.add_argument("--bucket-tokens", type=int, nargs="+", default=[4_194_304, 262_144])
    parser.add_argument("--workers", type=int, default=2, help="SDK worker processes (default 2)")
    parser.add_argument("--shard-bytes", type=int, default=None,
                        help="seqpack's --shard-bytes (default: seqpack's); 1 writes one shard per bucket")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/memory"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_demo_tokenizer(args.out / "tokenizer")
    rows = ["| pairs | input MiB | tokens | --bucket-tokens | shards | tree PSS MiB | driver RSS MiB "
            "| largest worker RSS MiB | seconds |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scale in args.scales:
        count = args.pairs * scale
        data = args.out / f"pairs-{count}.jsonl"
        size = write_pairs(data, count, args.sentences)
        for bucket_tokens in args.bucket_tokens:
            dataset = args.out / f"ds-{count}-{bucket_tokens}"
            command = run_command(data, dataset, tokenizer, bucket_tokens, args.workers, args.shard_bytes)
            peak = measure(command, args.interval)
            manifest = json.loads((dataset / "manifest.json").read_text())
            train = manifest["splits"]["train"]
            rows.append(
                f"| {count:,} | {size / MIB:.1f} | {train['tokens']:,} | {bucket_tokens:,} | {len(train['shards'])} "
                f"| {peak.tree_pss / MIB:,.0f} | {peak.driver_rss / MIB:,.0f} | {peak.worker_rss / MIB:,.0f} "
                f"| {peak.seconds:.0f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    (args.out / "memory.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
