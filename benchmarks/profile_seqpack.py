"""Where `seqpack run` spends its time: sample every process of a real run with py-spy, attribute each sample
to a pipeline stage, print a table.

    python benchmarks/profile_seqpack.py --input benchmarks/.work/data/synthetic-100000-seed0.jsonl \
        --tokenizer benchmarks/.work/tokenizers/bpe-32000-...
    python benchmarks/profile_seqpack.py --raw profile.txt          # re-attribute a saved py-spy raw profile
    python benchmarks/profile_seqpack.py ... --cprofile              # one process (in_memory runner), cProfile

py-spy (``pip install py-spy``) samples the driver and the Beam worker processes (``--subprocesses``) at
``--rate`` Hz and writes collapsed stacks. Each sample is attributed by its stack:

1. waiting threads (condition waits, gRPC polling, ``Popen.wait`` ...) are *idle* and left out of the shares;
2. anything under an ``import`` is *startup: imports*;
3. otherwise the innermost frame from seqpack's own code names the stage (reading, render, the tokenizer call,
   per-example Python in the tokenize DoFn, packing, writing ...);
4. samples with no seqpack frame are Beam's own work, split into coders (encoding/decoding and pickling
   elements between stages), the runner's shuffle/GroupByKey and orchestration (in the driver process),
   and per-element dispatch in the workers.

A sample is one thread at one instant, so the shares are of *busy thread time* (close to CPU time for Python
code; the Rust tokenizer's extra threads are not sampled, so its share is of the time Python waits for it).
Sampling costs CPU on a 2-core machine, so the profiled run is slower than an unprofiled one; the shares are
what matters.
"""

from __future__ import annotations

import argparse
import collections
import functools
import linecache
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_LEAVES = (
    "Condition.wait", "Event.wait", "_serve (grpc", "channel_spin", "Popen._try_wait", "Popen.wait",
    "_wait_for_tstate_lock", "Thread.join", "select (selectors", "poll (selectors", "Queue.get", "SimpleQueue.get",
    "sleep", "_worker (concurrent/futures", "_next (grpc", "result (concurrent", "_blocking", "wait (threading",
    "_run_channel_spin_thread", "accept (socket", "_recv", "consume_request_iterator", "_wait_once",
    "_SignalWatcher._watch",  # blocked in socket.recv (a C call: no frame of its own)
)

STAGES = [  # (stage, predicate on the innermost seqpack frame's file and function, the stack text)
    ("read: open/parse JSONL (seqpack.inputs)", lambda f, s: f.startswith("inputs/") or f == "transforms/read.py"),
    ("render template", lambda f, s: f in ("transforms/render.py", "templates.py")),
    # the Rust call has no Python frame of its own: it shows as the seqpack line that calls it
    ("tokenize: Python thread in the tokenizer call (encode_batch, ids to lists)",
     lambda f, s: f == "transforms/tokenize.py" and (
         "tokenization_utils" in s or "encode" in s.split(";")[0].split(" (")[0].lower())),
    ("tokenize: fast encoder call (fastokens encode_batch_flat, ids to lists)", lambda f, s: f == "fast_encoder.py"),
    ("tokenize DoFn: encode cache lookups (seqpack.encode_cache)", lambda f, s: f == "encode_cache.py"),
    ("tokenize DoFn: build_example (masking)", lambda f, s: f == "masking.py"),
    ("tokenize DoFn: example key hash", lambda f, s: f == "keys.py" and "example_key" in s),
    ("tokenize DoFn: other per-example Python", lambda f, s: f == "transforms/tokenize.py"),
    ("stats bookkeeping", lambda f, s: f in ("transforms/bundle_stats.py", "schemas/stats.py")),
    ("pack: sort + bfd + blocks (seqpack.packing)", lambda f, s: f in ("transforms/pack.py", "packing.py")),
    ("write: parquet + sha256 (seqpack.write)", lambda f, s: f in ("transforms/write.py",) or f.startswith("schemas/")),
    ("load tokenizer", lambda f, s: f == "tokenizer.py"),
    ("rejected records", lambda f, s: f == "transforms/rejected.py"),
]

PROCESS = re.compile(r'process \d+:"[^"]*"(;|$)')
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")

from pipeline import SEQPACK_MAIN  # noqa: E402 - the harness next door (benchmarks/ is on sys.path)


def seqpack_file(path: str) -> str | None:
    marker = "seqpack/"
    index = path.rfind(marker)
    if index < 0 or "apache_beam" in path:
        return None
    rel = path[index + len(marker):]
    return rel


@functools.cache
def source_line(frame: str) -> str:
    """The source text of a frame's line, for frames in installed packages (Cython calls hide below them)."""
    m = FRAME.match(frame)
    if not m:
        return ""
    path = m.group("file")
    if not os.path.isabs(path):
        for base in sys.path:
            candidate = os.path.join(base, path)
            if os.path.exists(candidate):
                path = candidate
                break
    return linecache.getline(path, int(m.group("line"))).strip()


CODER_CALL = re.compile(r"\b(decode|encode)\w*\(|\b(loads|dumps)\(")


def is_coder_line(code: str) -> bool:
    """Whether a line of Beam's Python code calls into a (compiled) coder, rather than on to the next operation."""
    return bool(CODER_CALL.search(code)) and "self.output(" not in code


def classify(frames: list[str], process: str) -> str:
    if not frames:
        return "no Python frame (native thread, interpreter start/exit)"
    leaf = frames[-1]
    stack = ";".join(frames)
    if any(leaf.startswith(idle) or idle in leaf for idle in IDLE_LEAVES):
        return "idle"
    if "_find_and_load" in stack or "_call_with_frames_removed" in stack:
        return "startup: imports"
    # innermost seqpack frame, skipping the driver's pipeline/ frames (the runner works under them)
    for frame in reversed(frames):
        m = FRAME.match(frame)
        if not m:
            continue
        rel = seqpack_file(m.group("file"))
        if rel is None or rel.startswith("pipeline/") or rel == "seqpack":
            continue
        below = ";".join(frames[frames.index(frame):])
        for stage, predicate in STAGES:
            if predicate(rel, below):
                return stage
        return f"seqpack other ({rel})"
    if process == "driver":
        if "fn_api_runner" in stack or "portability" in stack:
            if "coders" in leaf or "pickle" in leaf or is_coder_line(source_line(leaf)):
                return "Beam runner (driver): coders in shuffle/GBK"
            return "Beam runner (driver): shuffle/GBK buffers, bundle orchestration"
        if "data_plane" in stack or "grpc" in stack:
            return "Beam runner (driver): data plane (gRPC to and from the workers)"
        if "seqpack/pipeline/commit" in stack:
            return "driver: commit (manifest, sha256 checks)"
        if "seqpack/pipeline" in stack or "seqpack/" in stack:
            return "driver: pipeline setup, up-front checks"
        return "driver: other"
    tail = ";".join(frames[-4:])
    if leaf.startswith("Thread.run ("):
        return "threads in native code (gRPC)"
    if "apache_beam" in leaf and is_coder_line(source_line(leaf)):
        return "Beam worker: coders (encode/decode, pickle elements)"
    if "coders" in tail or "pickle" in tail or "dill" in tail or "cloudpickle" in tail:
        return "Beam worker: coders (encode/decode, pickle elements)"
    if "transforms/util.py" in stack:
        return "Beam worker: BatchElements / Reshuffle (windowed values per element)"
    if "data_plane" in tail or "grpc" in tail:
        return "Beam worker: data plane (gRPC)"
    if "apache_beam" in stack:
        return "Beam worker: per-element dispatch (operations, DoFn runner, receivers)"
    return "worker: other"


def parse_raw(path: Path) -> list[tuple[str, list[str], int]]:
    """py-spy raw output: 'frame;frame;... count' lines; with --subprocesses the root frames name processes."""
    samples = []
    pending = ""
    for part in path.read_text(errors="replace").splitlines():
        # a process's command line may hold newlines (``python -c PROGRAM``): a record ends with its count
        line = pending + part
        if not line.strip():
            continue
        if not line.rpartition(" ")[2].isdigit():
            pending = line + "\n"
            continue
        pending = ""
        stack, _, count = line.rpartition(" ")
        process = "driver"
        while True:  # the root frames name the processes (their command lines may hold ';')
            m = PROCESS.match(stack)
            if not m:
                break
            if "sdk_worker_main" in m.group(0):
                process = "worker"
            stack = stack[m.end():]
        frames = stack.split(";") if stack else []
        samples.append((process, frames, int(count)))
    return samples


def report(samples: list[tuple[str, list[str], int]], rate: float, top: int = 25) -> str:
    by_stage: collections.Counter[str] = collections.Counter()
    by_stage_process: collections.Counter[tuple[str, str]] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    idle = 0
    for process, frames, count in samples:
        stage = classify(frames, process)
        if stage == "idle":
            idle += count
            continue
        by_stage[stage] += count
        by_stage_process[(stage, process)] += count
        leaves[f"{frames[-1] if frames else '?'} [{stage}]"] += count
    busy = sum(by_stage.values())
    lines = [
        f"busy samples: {busy:,} ({busy / rate:,.1f} thread-seconds at {rate:g} Hz); idle (waiting) samples left out: "
        f"{idle:,}",
        "",
        "| stage | busy s | share | in driver | in workers |",
        "|---|---|---|---|---|",
    ]
    for stage, count in by_stage.most_common():
        lines.append(
            f"| {stage} | {count / rate:,.1f} | {count / busy:.1%} | {by_stage_process[(stage, 'driver')] / rate:,.1f} "
            f"| {by_stage_process[(stage, 'worker')] / rate:,.1f} |"
        )
    lines += ["", f"top {top} leaf functions (self time):", ""]
    for leaf, count in leaves.most_common(top):
        lines.append(f"  {count / busy:6.1%}  {leaf}")
    return "\n".join(lines)


def cprofile_report(path: Path, top: int = 40) -> str:
    """Group a cProfile's self time by area (file), and list the top functions."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    areas: collections.Counter[str] = collections.Counter()
    functions = []
    for (file, line, func), (_, ncalls, tottime, _cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rel = seqpack_file(file)
        if rel is not None:
            area = f"seqpack/{rel}"
        elif "apache_beam" in file:
            area = "apache_beam/" + file.split("apache_beam/", 1)[1].rsplit("/", 1)[0]
        elif file == "~":
            area = f"builtin: {func}" if any(k in func for k in ("encode_batch", "pickle", "json", "sort", "sha",
                                                                  "blake2", "zstd", "write")) else "builtins (other)"
        elif "json" in file:
            area = "json"
        elif "transformers" in file or "tokenizers" in file:
            area = "transformers/tokenizers (Python side)"
        elif "pyarrow" in file:
            area = "pyarrow"
        elif "numpy" in file:
            area = "numpy"
        else:
            area = file.rsplit("/", 2)[-2] if "/" in file else file
        areas[area] += tottime
        functions.append((tottime, ncalls, f"{func} ({file}:{line})"))
    lines = [f"total self time: {total:,.1f} s", "", "| area | self s | share |", "|---|---|---|"]
    for area, seconds in areas.most_common(30):
        lines.append(f"| {area} | {seconds:,.1f} | {seconds / total:.1%} |")
    lines += ["", f"top {top} functions by self time:", ""]
    for tottime, ncalls, name in sorted(functions, reverse=True)[:top]:
        lines.append(f"  {tottime:8.2f} s  {ncalls:>10,} calls  {name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="pairs to run seqpack on")
    parser.add_argument("--tokenizer", help="tokenizer directory")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--rate", type=float, default=50, help="py-spy samples per second")
    parser.add_argument("--raw", help="attribute this saved py-spy raw profile instead of running")
    parser.add_argument("--save", help="keep the py-spy raw profile (or the cProfile stats) here")
    parser.add_argument("--cprofile", action="store_true",
                        help="run in one process (--direct_running_mode=in_memory) under cProfile instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--seqpack-rev", metavar="REV",
                        help="profile seqpack from src/ at this git revision, or 'worktree' (a frozen copy), as in "
                        "pipeline.py")
    parser.add_argument("--nice", type=int, default=0, help="niceness, as in pipeline.py (e.g. -15 as root)")
    parser.add_argument("--work-dir", default=str(Path(__file__).resolve().parent / ".work"))
    parser.add_argument("seqpack_args", nargs="*", help="extra `seqpack run` arguments (after --)")
    args = parser.parse_args(argv)
    if args.raw:
        print(report(parse_raw(Path(args.raw)), args.rate, args.top))
        return 0
    if not (args.input and args.tokenizer):
        parser.error("--input and --tokenizer are required unless --raw")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pipeline

    if args.nice:
        if not os.environ.get("SEQPACK_BENCH_SESSION") and shutil.which("setsid"):
            env = dict(os.environ, SEQPACK_BENCH_SESSION="1")
            argv = sys.argv[1:] if argv is None else argv
            return subprocess.run(["setsid", "-w", sys.executable, str(Path(__file__).resolve()), *argv],
                                  env=env).returncode
        pipeline.prioritize(args.nice)
    if args.seqpack_rev:
        src, name = pipeline.snapshot_src(args.seqpack_rev, Path(args.work_dir).resolve())
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
        print(f"seqpack from {args.seqpack_rev} = {name} ({src})", file=sys.stderr)
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="seqpack-profile-") as tmp:
        out = os.path.join(tmp, "out")
        # what the `seqpack` console script does (so that PYTHONPATH takes precedence over the install)
        run = [sys.executable, "-c", SEQPACK_MAIN,
               "run", "-i", args.input, "-o", out, "-t", args.tokenizer,
               "--max-length", str(args.max_length), "-q", *args.seqpack_args]
        if args.cprofile:
            stats_path = Path(args.save or os.path.join(tmp, "profile.pstats"))
            script = os.path.join(tmp, "seqpack_main.py")
            Path(script).write_text(run[2] + "\n")
            cmd = [sys.executable, "-m", "cProfile", "-o", str(stats_path), script, *run[3:],
                   "--direct_running_mode=in_memory"]
        else:
            py_spy = shutil.which("py-spy", path=str(bin_dir)) or shutil.which("py-spy")
            if not py_spy:
                raise SystemExit("py-spy is not installed: pip install py-spy (or pip install -e '.[bench]')")
            raw_path = Path(args.save or os.path.join(tmp, "profile.txt"))
            cmd = [py_spy, "record", "--subprocesses", "--format", "raw", "--rate", f"{args.rate:g}",
                   "--output", str(raw_path), "--", *run]
        print("$ " + " ".join(cmd), file=sys.stderr)
        start = time.time()
        subprocess.run(cmd, check=True)
        print(f"profiled run: {time.time() - start:.1f} s wall", file=sys.stderr)
        if args.cprofile:
            print(cprofile_report(stats_path, args.top))
        else:
            print(report(parse_raw(raw_path), args.rate, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
