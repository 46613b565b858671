"""What ``seqpack run --append`` of 1 % new data costs next to a full run of the dataset.

    python benchmarks/appends.py                        # 1M pairs in 100 files, then 1 new file of 10k pairs
    python benchmarks/appends.py --pairs 100000         # a quicker run, same shape
    python benchmarks/appends.py --pairs 2000 --files 10 --in-process   # seconds (what the test runs)

The data: ``--pairs`` synthetic pairs (``datagen.py``, seeded) written as ``--files`` JSONL files of equal size in
one input directory, plus one more file of the same size written later (the new data: ``1 / --files`` of the
dataset). Every run is the ``seqpack`` command in a fresh process, timed from process start to exit (interpreter
start and imports included), in this order:

``startup``
    a process that imports ``seqpack.pipeline.run`` and loads the tokenizer (which imports transformers and
    torch): what every run pays before it looks at its inputs.
``tiny``
    a full run of a 10-pair file into a fresh output: the fixed cost of any run that starts a Beam job
    (tokenizer load, job construction, worker start-up, commit), with almost no data.
``full``
    the first run over the ``--files`` files: one generation.
``append_nothing``
    ``--append`` with no new file: prints "up to date". Start-up, tokenizer load, listing the inputs and
    planning against the manifest (no file is hashed: sizes and modification times match); no Beam job.
``append``
    the new file added to the input directory, then ``--append``: the planning above plus a Beam job over the
    new file only (which it also hashes), committed as generation 2.
``new_alone``
    the new file alone into a fresh output (no ``--append``): the same Beam job without the planning, to show
    what the append adds to a plain run of the same data.

The ratio printed is ``append / full``; the breakdown splits the append into the fixed cost (``tiny``) and the
rest. Then the benchmark checks what it timed: generation 2 consumed exactly the new file, and the examples of
the two generations add up to the pairs written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import PairGenerator  # noqa: E402

DEFAULT_WORK_DIR = HERE / ".work" / "appends"
TOKENIZER_SAMPLE_PAIRS = 100_000
IN_PROCESS = "--direct_running_mode=in_memory"


@dataclass(frozen=True)
class Timed:
    name: str
    seconds: float
    cpu_seconds: float
    """User + system CPU of the command's process tree (Beam's workers included): less sensitive than the wall
    time to other jobs on a shared machine."""
    load: float
    """The machine's 1-minute load average when the command ended."""
    stderr: str


def write_files(directory: Path, pairs: int, files: int, seed: int) -> tuple[list[Path], Path]:
    """``files`` JSONL files of ``pairs // files`` pairs each (the dataset), and one more of the same size (the new
    data), all from one seeded stream: the new file's pairs are distinct from the dataset's."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = pairs // files
    if per_file < 1:
        raise SystemExit(f"--pairs {pairs} is fewer than --files {files}: every file needs a pair")
    stream = PairGenerator(seed).pairs(per_file * (files + 1))
    paths = [directory / f"day-{i:03d}.jsonl" for i in range(files + 1)]
    for path in paths:
        with open(path, "w", encoding="utf-8") as out:
            for _ in range(per_file):
                source, target = next(stream)
                out.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")
    return paths[:-1], paths[-1]


def prepare_tokenizer(work: Path, sample: list[Path], vocab_size: int) -> Path:
    """A byte-level BPE trained on the first pairs of the data (as ``pipeline.py`` does), cached in ``work``."""
    path = work / f"tokenizer-{vocab_size}"
    if (path / "tokenizer.json").exists():
        return path
    from seqpack.demo import build_tokenizer

    texts: list[str] = []
    for file in sample:
        with open(file, encoding="utf-8") as f:
            for line in f:
                pair = json.loads(line)
                texts += [pair["source"], pair["target"]]
        if len(texts) >= 2 * TOKENIZER_SAMPLE_PAIRS:
            break
    build_tokenizer(str(path) + ".tmp", texts, vocab_size=vocab_size, add_bos=True)
    os.replace(str(path) + ".tmp", path)
    return path


def _tree_cpu(process: subprocess.Popen) -> float:
    """Wait for ``process``; the CPU seconds of its whole tree, Beam's worker processes included, sampled every
    0.1 s (each process's last sample: up to 0.1 s of a process that exits between samples is missed). Without
    psutil, the CPU of the waited-for children only (``getrusage``), which misses workers that were not reaped."""
    try:
        import psutil
    except ImportError:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        process.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    root = psutil.Process(process.pid)
    last: dict[tuple[int, float], float] = {}
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for member in tree:
            try:
                with member.oneshot():
                    times = member.cpu_times()
                    last[member.pid, member.create_time()] = times.user + times.system
            except psutil.Error:
                continue
        time.sleep(0.1)
    return sum(last.values())


def timed(name: str, command: list[str]) -> Timed:
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        reader = threading.Thread(target=lambda: setattr(process, "err_text", process.stderr.read()))
        reader.start()
        cpu = _tree_cpu(process)
        reader.join()
    seconds = time.perf_counter() - start
    done = subprocess.CompletedProcess(command, process.returncode, "", process.err_text)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    load = os.getloadavg()[0]
    print(f"  {name:<15} {seconds:8.1f} s wall {cpu:8.1f} s CPU  (load {load:.1f})", file=sys.stderr, flush=True)
    return Timed(name, seconds, cpu, load, done.stderr)


def seqpack_run(inputs: Path, output: Path, tokenizer: Path, args: argparse.Namespace, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "seqpack.cli", "run", "-i", str(inputs), "-o", str(output), "-t", str(tokenizer),
               "--max-length", str(args.max_length), *extra]
    return command + ([IN_PROCESS] if args.in_process else [])


def check_generations(output: Path, new_file: Path, pairs_written: int) -> dict:
    """What the append committed: generation 2 consumed exactly the new file, and nothing was lost."""
    manifest = json.loads((output / "manifest.json").read_text())
    generations = manifest["generations"]
    consumed = [[Path(i["path"]).name for i in g["inputs"]] for g in generations]
    if len(generations) != 2 or consumed[1] != [new_file.name]:
        raise SystemExit(f"expected 2 generations, the second consuming {new_file.name}; got {consumed}")
    read = 0
    for generation in generations:
        stats = json.loads((output / generation["directory"] / "stats.json").read_text())
        read += stats["records_read"]
    if read != pairs_written:
        raise SystemExit(f"the generations read {read:,} records; {pairs_written:,} pairs were written")
    return {"generations": len(generations), "inputs": [len(c) for c in consumed], "records_read": read}


def measure(args: argparse.Namespace) -> dict:
    work = Path(args.work_dir).resolve()
    data = work / f"data-{args.pairs}-{args.files}"
    inputs, later = data / "inputs", data / "later"
    if not inputs.is_dir() or args.regenerate:
        shutil.rmtree(data, ignore_errors=True)
        print(f"writing {args.pairs:,} pairs in {args.files} files (+1 file of new data) to {data}", file=sys.stderr)
        dataset_files, new_file = write_files(data / "staging", args.pairs, args.files, args.seed)
        later.mkdir(parents=True)
        os.replace(new_file, later / new_file.name)
        os.replace(data / "staging", inputs)
    new_file = next(later.glob("*.jsonl"), None) or next(inputs.glob(f"day-{args.files:03d}.jsonl"))
    if new_file.parent == inputs:  # a previous run was interrupted after adding it
        os.replace(new_file, later / new_file.name)
        new_file = later / new_file.name
    tokenizer = Path(args.tokenizer) if args.tokenizer else prepare_tokenizer(
        work, sorted(inputs.glob("*.jsonl")), args.vocab_size)
    tiny = data / "tiny.jsonl"
    with open(new_file, encoding="utf-8") as src:
        tiny.write_text("".join(line for _, line in zip(range(10), src, strict=False)), encoding="utf-8")
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    per_file = args.pairs // args.files
    print(f"timing (each run a fresh process; {os.cpu_count()} cores):", file=sys.stderr)
    runs: dict[str, Timed] = {}
    load = f"from seqpack.tokenizer import load_tokenizer; load_tokenizer({str(tokenizer)!r})"
    runs["startup"] = timed("startup", [sys.executable, "-c", "import seqpack.pipeline.run; " + load])
    runs["tiny"] = timed("tiny", seqpack_run(tiny, out / "tiny", tokenizer, args))
    dataset = out / "dataset"
    runs["full"] = timed("full", seqpack_run(inputs, dataset, tokenizer, args))
    manifest_before = (dataset / "manifest.json").read_bytes()
    runs["append_nothing"] = timed("append_nothing", seqpack_run(inputs, dataset, tokenizer, args, "--append"))
    if "up to date" not in runs["append_nothing"].stderr or (dataset / "manifest.json").read_bytes() != manifest_before:
        raise SystemExit(f"an --append with nothing new should say 'up to date' and change nothing:\n"
                         f"{runs['append_nothing'].stderr}")
    os.replace(new_file, inputs / new_file.name)
    try:
        runs["append"] = timed("append", seqpack_run(inputs, dataset, tokenizer, args, "--append"))
        checked = check_generations(dataset, new_file, per_file * (args.files + 1))
        runs["new_alone"] = timed("new_alone", seqpack_run(inputs / new_file.name, out / "new-alone", tokenizer, args))
    finally:
        os.replace(inputs / new_file.name, new_file)  # the data directory is ready for the next benchmark run
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "pairs": args.pairs, "files": args.files, "new_pairs": per_file, "cores": os.cpu_count(),
        "in_process": args.in_process, "seconds": {name: round(t.seconds, 2) for name, t in runs.items()},
        "cpu_seconds": {name: round(t.cpu_seconds, 2) for name, t in runs.items()},
        "load": {name: round(t.load, 1) for name, t in runs.items()},
        "ratio": runs["append"].seconds / runs["full"].seconds, "checked": checked,
    }


ROWS = (
    ("full", "full run", "all files but the new one: generation 1"),
    ("append", "`--append`, 1 new file", "planning + a Beam job over the new file: generation 2"),
    ("append_nothing", "`--append`, nothing new", "start-up, tokenizer, listing, planning: 'up to date', no Beam job"),
    ("new_alone", "new file alone, fresh output", "the append's Beam job without the planning"),
    ("tiny", "tiny run (10 pairs)", "the fixed cost of any run with a Beam job"),
    ("startup", "start-up", "interpreter, imports (Beam, transformers, torch), tokenizer load"),
)


def report(result: dict) -> str:
    s, c, load = result["seconds"], result["cpu_seconds"], result["load"]
    lines = [
        f"{result['pairs']:,} pairs in {result['files']} files; append of 1 file ({result['new_pairs']:,} pairs, "
        f"{result['new_pairs'] / result['pairs']:.1%} of the data); {result['cores']} cores"
        + (", in-process runner" if result["in_process"] else ", default local runner"),
        "",
        "| run | wall s | CPU s | load | what it is |",
        "|---|---|---|---|---|",
        *(f"| {label} | {s[name]:.1f} | {c[name]:.1f} | {load[name]:.1f} | {what} |" for name, label, what in ROWS),
        "",
        f"append / full = {result['ratio']:.1%} wall, {c['append'] / c['full']:.1%} CPU (the new data is "
        f"{result['new_pairs'] / result['pairs']:.1%})",
        *(_breakdown(result, figures, unit) for figures, unit in ((s, "wall"), (c, "CPU"))),
    ]
    return "\n".join(lines)


def _breakdown(result: dict, t: dict, unit: str) -> str:
    """The append split into the fixed cost of a run (the tiny run) and the rest, next to the full run's rest."""
    fixed, append, full = t["tiny"], t["append"], t["full"]
    return (
        f"{unit}: the fixed cost of a run (tiny run) is {fixed:.1f} s, {fixed / append:.0%} of the append and "
        f"{fixed / full:.1%} of the full run; beyond it the append costs {append - fixed:.1f} s, the full run "
        f"{full - fixed:.1f} s ({(append - fixed) / max(full - fixed, 1e-9):.1%}); an 'up to date' append costs "
        f"{t['append_nothing']:.1f} s, {t['append_nothing'] - t['startup']:.1f} s beyond start-up "
        f"(listing and planning {result['files']} consumed files)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000, help="pairs in the dataset (default 1M)")
    parser.add_argument("--files", type=int, default=100, help="files the dataset's pairs are split over; the new "
                        "data is one more file of the same size (default 100: 1 %%)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--tokenizer", help="tokenizer directory (default: a BPE trained on the data, cached)")
    parser.add_argument("--vocab-size", type=int, default=32_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR))
    parser.add_argument("--in-process", action="store_true",
                        help=f"runs use Beam's local runner in one process ({IN_PROCESS}): for tiny sizes")
    parser.add_argument("--regenerate", action="store_true", help="write the data again even if it exists")
    parser.add_argument("--keep", action="store_true", help="keep the datasets written (in --work-dir/out)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    result = measure(args)
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
