"""Read the same Parquet shards three ways and compare tokens/s and peak memory at 1× and 4× the data.

    python benchmarks/loader.py                      # writes synthetic data under a temporary directory
    python benchmarks/loader.py --rows 8192 --workers 0 2

1. ``seqpack``: ``PackedDataset`` + ``PackedDataLoader`` + ``collate_padding_free`` (shuffled, as in training).
2. ``datasets``: ``load_dataset("parquet", streaming=True)`` on the same files through a torch DataLoader with
   the same collate (numpy format, the fastest of its formats here).
3. ``pyarrow``: a plain sequential read of every row group, turned into the same padding-free tensors with
   whole-row-group numpy operations and no per-sample work: the ceiling.

Each (method, data size, workers) runs in a fresh process, so its peak RSS is its own; tokens/s counts the
real (non-padding) tokens delivered to the loop per second, including opening the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def batches_seqpack(root: str, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    from seqpack.loader import PackedDataLoader, PackedDataset, collate_padding_free

    dataset = PackedDataset(root, batch_size=batch_size, seed=0)
    yield from PackedDataLoader(dataset, num_workers=workers, collate_fn=collate_padding_free)


def batches_datasets(root: str, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    import datasets
    from torch.utils.data import DataLoader

    from seqpack.loader import collate_padding_free

    stream = datasets.load_dataset("parquet", data_files=shard_files(root), split="train", streaming=True)
    stream = stream.with_format(os.environ.get("BENCH_DATASETS_FORMAT", "numpy"))
    yield from DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate_padding_free)


def batches_pyarrow(root: str, batch_size: int, workers: int) -> Iterator[dict[str, Any]]:
    """Whole row groups in file order, made into padding-free batches with array operations only."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    del workers  # one process: the ceiling of a plain sequential read
    for path in shard_files(root):
        parquet = pq.ParquetFile(path)
        for index in range(parquet.num_row_groups):
            group = parquet.read_row_group(index)
            real = group.column("attention_mask").combine_chunks().values.to_numpy().astype(bool)
            lens = group.column("seq_lens").combine_chunks()
            lens_offsets, lens_values = lens.offsets.to_numpy(), lens.values.to_numpy()
            columns = {
                name: group.column(name).combine_chunks().values.to_numpy()[real]
                for name in ("input_ids", "labels", "position_ids")
            }
            example_ends = np.cumsum(lens_values)
            row_ends = np.concatenate([[0], example_ends[lens_offsets[1:] - 1]])
            for first in range(0, group.num_rows, batch_size):
                last = min(first + batch_size, group.num_rows)
                tokens = slice(row_ends[first], row_ends[last])
                seq_lens = lens_values[lens_offsets[first] : lens_offsets[last]]
                cu = np.zeros(len(seq_lens) + 1, dtype=np.int32)
                np.cumsum(seq_lens, out=cu[1:])
                batch = {name: torch.from_numpy(v[tokens].astype(np.int64))[None] for name, v in columns.items()}
                batch["labels"][0, cu[:-1]] = -100
                batch.update(cu_seq_lens_q=torch.from_numpy(cu), max_length_q=int(seq_lens.max()))
                yield batch


def shard_files(root: str) -> list[str]:
    return sorted(os.path.join(root, "train", name) for name in os.listdir(os.path.join(root, "train")))


METHODS = {"seqpack": batches_seqpack, "datasets": batches_datasets, "pyarrow": batches_pyarrow}
IMPORTS = {"seqpack": ["seqpack.loader"], "datasets": ["datasets", "seqpack.loader"], "pyarrow": ["pyarrow.parquet"]}


def measure(method: str, root: str, batch_size: int, workers: int) -> dict[str, Any]:
    """Run one method to the end in this process; tokens/s and peak RSS (this process and its workers).

    Imports happen before the clock starts; opening the dataset and every batch are timed.
    """
    import importlib

    import pandas  # noqa: F401  (pyarrow's to_numpy imports it on first use; not a cost of any method)
    import torch  # noqa: F401

    for module in IMPORTS[method]:
        importlib.import_module(module)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    tokens = batches = 0
    for batch in METHODS[method](root, batch_size, workers):
        tokens += batch["input_ids"].shape[1]
        batches += 1
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    return {
        "method": method,
        "workers": workers,
        "tokens": tokens,
        "batches": batches,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "cpu_seconds": cpu,
        "tokens_per_cpu_s": tokens / cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024,
        "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers): robust on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_isolated(method: str, root: str, batch_size: int, workers: int, repeats: int) -> dict[str, Any]:
    """Best of ``repeats`` fresh processes (the machine may be shared); memory is the worst seen."""
    command = [sys.executable, __file__, "--measure", method, "--data", root, "--batch-size", str(batch_size)]
    command += ["--workers", str(workers)]
    runs = []
    for _ in range(repeats):
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    best = max(runs, key=lambda r: r["tokens_per_s"])
    for key in ("peak_rss_mib", "rss_growth_mib", "worker_peak_rss_mib"):
        best[key] = max(r[key] for r in runs)
    return best


def report(results: list[dict[str, Any]], scale: str) -> None:
    print(f"\n### {scale} data\n")
    print(
        "| method | workers | wall s | tokens/s | × datasets | × pyarrow | CPU s | tokens/CPU-s | × datasets "
        "| × pyarrow | peak RSS MiB (main / worker) | main RSS growth MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ceiling = next(r for r in results if r["method"] == "pyarrow")
    for r in results:
        same = next((d for d in results if d["method"] == "datasets" and d["workers"] == r["workers"]), None)
        cells = [r["method"], str(r["workers"]), f"{r['seconds']:.2f}"]
        for key in ("tokens_per_s", "tokens_per_cpu_s"):
            if key == "tokens_per_cpu_s":
                cells.append(f"{r['cpu_seconds']:.2f}")
            cells.append(f"{r[key] / 1e6:.1f} M")
            cells.append(f"{r[key] / same[key]:.1f}" if same else "–")
            cells.append(f"{r[key] / ceiling[key]:.2f}")
        worker = f"{r['worker_peak_rss_mib']:.0f}" if r["workers"] else "–"
        cells += [f"{r['peak_rss_mib']:.0f} / {worker}", f"{r['rss_growth_mib']:.0f}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192, help="rows (blocks) of the 1× dataset")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per measurement; the best is kept")
    parser.add_argument("--dir", help="where to write the data (default: a temporary directory)")
    parser.add_argument("--measure", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data, args.batch_size, args.workers[0])))
        return

    sys.path.insert(0, HERE)
    from synthetic import write_synthetic

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, batch_size {args.batch_size}, "
              f"max_length {args.max_length}")
        for scale in (1, 4):
            root = os.path.join(scratch, f"{scale}x")
            manifest = write_synthetic(root, rows=args.rows * scale, max_length=args.max_length)
            split = manifest.splits["train"]
            size = sum(s.bytes for s in split.shards) / 2**20
            print(f"\n{scale}×: {split.rows:,} rows, {split.tokens:,} real tokens, {size:.0f} MiB of Parquet")
            results = [run_isolated("pyarrow", root, args.batch_size, 0, args.repeats)]
            for workers in args.workers:
                for method in ("seqpack", "datasets"):
                    results.append(run_isolated(method, root, args.batch_size, workers, args.repeats))
            report(results, f"{scale}×")


if __name__ == "__main__":
    main()
