"""seqpack side by side with the bare tokenizer and the datasets + TRL path, on the same data, tokenizer and cores.

    python benchmarks/pipeline.py --pairs 100000                 # synthetic pairs (benchmarks/datagen.py)
    python benchmarks/pipeline.py --corpus gettext               # the system's gettext catalogs (corpus.py)
    python benchmarks/pipeline.py --corpus code --limit 100000 --max-length 4096   # docstring -> body (code_corpus.py)
    python benchmarks/pipeline.py --input pairs.jsonl --tokenizer path/to/tokenizer
    python benchmarks/pipeline.py --pairs 250000 --scale 1,2,4 --paths seqpack   # the scaling check

Four paths, each in a fresh process tree, one after the other:

``ceiling``
    The bare tokenizer over exactly the texts seqpack tokenizes (source + separator, and target), timed three
    ways, the fastest being the ceiling: one process per core each running the Rust backend's
    ``encode_batch_fast`` on one thread; the transformers fast tokenizer as users call it,
    ``tokenizer(texts, add_special_tokens=False)``, in one process with Rust threads on every core
    (TOKENIZERS_PARALLELISM=true); and ``backend.encode_batch_fast`` in that one process. Batches of
    ``--ceiling-batch`` texts; the ids of every text are extracted. Its time counts tokenization only: the JSONL
    is read and parsed first, untimed.
``datasets``
    What a user writes today: ``datasets.load_dataset("json")`` (fresh cache), ``.map(tokenize, batched=True,
    num_proc=<cores>)`` building ``input_ids`` (BOS + source + separator + target + EOS) and ``labels`` (-100 on
    BOS, source and separator), ``trl.pack_dataset(ds, max_length, strategy="bfd")`` and ``.to_parquet``.
``seqpack``
    ``seqpack run -i DATA -o OUT -t TOKENIZER --max-length L`` as a subprocess, default local runner (Beam's
    FnApiRunner, one worker process per core).
``readwrite``
    The read + write floor: the same ``seqpack run`` with every text's ids looked up in a table built beforehand,
    untimed (``token_table.py``; a ``sitecustomize`` hook patches the tokenize step in every process, no hook in
    seqpack itself): what everything but tokenizing costs. Its shards are the seqpack path's.

For each: wall seconds from process start until the work is done (interpreter start and imports included; the
ceiling's wall is its tokenization time), tokens/s (the same numerator for every path: the tokens of the source
and target texts, without special tokens, as the ceiling counts them), peak memory of the whole process tree
(sampled every 0.1 s: the sum of RSS, and the sum of PSS, which counts pages shared by forked workers once),
CPU seconds of the tree and the cores it used on average, the CPU that other processes on the machine used
meanwhile (a contention warning), and the fill of the blocks (real tokens / (blocks x max_length); for TRL,
computed from its output's ``seq_lengths``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_WORK_DIR = HERE / ".work"
PATHS = ("ceiling", "datasets", "seqpack", "readwrite")
SEPARATOR = " = "  # seqpack's plain template: source + " = " is the (masked) source text
TOKENIZER_SAMPLE_PAIRS = 100_000

# ----------------------------------------------------------------------------------------------------- workers
# Each runs in its own process: ``python pipeline.py _worker ceiling|datasets ...``. It writes a JSON result
# with ``done_at`` (time.time() when the work was done) and its own counts; measuring happens in the parent.

SEQPACK_MAIN = (
    "import sys\n"
    "try:\n    from seqpack.cli.main import console_main\n"
    "except ImportError:  # revisions from before the command's own exit (--seqpack-rev)\n"
    "    try:\n        from seqpack.cli.main import main\n"
    "    except ImportError:  # revisions from before the CLI moved\n"
    "        from seqpack.pipeline.cli import main\n"
    "    sys.exit(main())\n"
    "console_main()"
)
"""The ``seqpack`` command (the console script's ``console_main``) as a ``python -c`` program that works for old
and new revisions alike."""


def _read_texts(path: str) -> tuple[list[str], list[str]]:
    sources, targets = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            sources.append(pair["source"] + SEPARATOR)
            targets.append(pair["target"])
    return sources, targets


_POOL_TEXTS: list[str] = []
_POOL_TOKENIZER: Any = None


def _pool_init(tokenizer_json: str) -> None:
    global _POOL_TOKENIZER
    from tokenizers import Tokenizer

    _POOL_TOKENIZER = Tokenizer.from_file(tokenizer_json)


def _pool_encode(span: tuple[int, int]) -> tuple[int, float]:
    """Tokens of a span of texts, and the CPU seconds it took (one thread)."""
    cpu = time.process_time()
    texts = _POOL_TEXTS[span[0] : span[1]]
    tokens = sum(len(e.ids) for e in _POOL_TOKENIZER.encode_batch_fast(texts, add_special_tokens=False))
    return tokens, time.process_time() - cpu


def worker_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """Tokenize the texts three ways, each over every text once, and keep the fastest as the ceiling."""
    import multiprocessing

    from transformers import AutoTokenizer

    global _POOL_TEXTS
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    backend = tokenizer.backend_tokenizer
    t0 = time.time()
    sources, targets = _read_texts(args.data)
    read_s = time.time() - t0
    distinct = {"sources": len(set(sources)), "targets": len(set(targets))}  # untimed, like the reading
    texts = sources + targets
    batch = args.ceiling_batch
    spans = [(i, min(i + batch, len(texts))) for i in range(0, len(texts), batch)]
    result: dict[str, Any] = {"read_s": read_s, "pairs": len(sources), "methods_s": {}, "distinct": distinct}
    counts = {}

    # 1. one process per core, each the Rust backend on one thread (forked first, before any Rust thread exists)
    _POOL_TEXTS = texts
    start = time.time()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # in the forked children
    tokenizer_json = os.path.join(args.tokenizer, "tokenizer.json")
    with multiprocessing.get_context("fork").Pool(args.num_proc, _pool_init, (tokenizer_json,)) as pool:
        parts = list(pool.imap_unordered(_pool_encode, spans))
    counts["processes"] = sum(tokens for tokens, _ in parts)
    result["tokenizer_cpu_s"] = sum(cpu for _, cpu in parts)
    result["methods_s"][f"{args.num_proc} processes x backend.encode_batch_fast"] = time.time() - start
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    # 2. the transformers fast tokenizer as users call it, one process, Rust threads on every core
    start = time.time()
    counts["hf_call"] = 0
    for lo, hi in spans:
        counts["hf_call"] += sum(map(len, tokenizer(texts[lo:hi], add_special_tokens=False)["input_ids"]))
    result["methods_s"]["tokenizer(texts) (1 process, Rust threads)"] = time.time() - start
    # 3. the Rust backend directly, one process, Rust threads (no dicts of Python lists, ids still extracted)
    start = time.time()
    counts["backend"] = sum(
        sum(len(e.ids) for e in backend.encode_batch_fast(texts[lo:hi], add_special_tokens=False)) for lo, hi in spans
    )
    result["methods_s"]["backend.encode_batch_fast (1 process, Rust threads)"] = time.time() - start
    if len(set(counts.values())) != 1:
        raise SystemExit(f"token counts differ between methods: {counts}")
    result["text_tokens"] = counts["hf_call"]
    result["ceiling_method"], result["work_s"] = min(result["methods_s"].items(), key=lambda kv: kv[1])
    result["fast"] = _fast_ceiling(tokenizer_json, texts, spans, counts["backend"])
    result["done_at"] = time.time()
    return result


def _fast_ceiling(tokenizer_json: str, texts: list[str], spans: list[tuple[int, int]], tokens: int) -> dict[str, Any]:
    """The second ceiling: the bare throughput of the fast encoder seqpack's ``--tokenizer-backend auto`` uses where
    it is exact (fastokens' ``encode_batch_flat``, one process, Rust threads): each batch's ids in one flat buffer,
    as seqpack's workers take them (``fast_encoder.fast_encode_flat``), no object per text. Its token count is
    checked against the Hugging Face backend's. For comparison, the same with every text's ids cut out as a Python
    list (``lists_s``: what a caller who wants lists pays, most of it the lists)."""
    try:
        import fastokens
        import numpy as np
    except ImportError as error:
        return {"error": f"cannot import the fast encoder ({error})"}

    fast = fastokens.Tokenizer.from_file(tokenizer_json)
    fast.no_truncation()
    fast.no_padding()
    start = time.time()
    counted = 0
    for lo, hi in spans:
        ids, _offsets = fast.encode_batch_flat(texts[lo:hi], add_special_tokens=False)
        counted += np.frombuffer(ids, dtype=np.uint32).size
    seconds = time.time() - start
    if counted != tokens:
        return {"error": f"fastokens counted {counted:,} tokens, the Hugging Face backend {tokens:,}"}
    start = time.time()
    for lo, hi in spans:
        ids, offsets = fast.encode_batch_flat(texts[lo:hi], add_special_tokens=False)
        flat, cuts = np.frombuffer(ids, dtype=np.uint32).tolist(), np.frombuffer(offsets, dtype=np.uint64).tolist()
        _lists = [flat[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    return {"method": "fastokens encode_batch_flat (1 process, Rust threads, ids in one flat buffer per batch)",
            "work_s": seconds, "lists_s": time.time() - start}


def worker_datasets(args: argparse.Namespace) -> dict[str, Any]:
    import datasets
    import pyarrow.compute as pc
    from transformers import AutoTokenizer
    from trl.data_utils import pack_dataset

    stamps = {"imported": time.time()}
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        sources = tokenizer([s + SEPARATOR for s in batch["source"]], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        input_ids, labels = [], []
        for source, target in zip(sources, targets, strict=True):
            input_ids.append(bos + source + target + eos)
            labels.append([-100] * (len(bos) + len(source)) + target + eos)
        return {"input_ids": input_ids, "labels": labels}

    ds = datasets.load_dataset("json", data_files=args.data, split="train", cache_dir=args.cache_dir)
    stamps["loaded"] = time.time()
    tokenized = ds.map(tokenize, batched=True, num_proc=args.num_proc, remove_columns=ds.column_names)
    stamps["tokenized"] = time.time()
    packed = pack_dataset(tokenized, args.max_length, strategy="bfd")
    stamps["packed"] = time.time()
    packed.to_parquet(os.path.join(args.out, "train.parquet"))
    done = time.time()
    stamps["written"] = done
    # counts, after the timed part
    lengths = pc.list_value_length(tokenized.data.column("input_ids"))
    tokens_in = int(pc.sum(lengths).as_py())
    rows = len(tokenized)
    return {
        "done_at": done,
        "stages_s": {
            "load_json": stamps["loaded"] - stamps["imported"],
            "map_tokenize": stamps["tokenized"] - stamps["loaded"],
            "pack_bfd": stamps["packed"] - stamps["tokenized"],
            "to_parquet": stamps["written"] - stamps["packed"],
        },
        "started_work_at": stamps["imported"],
        "pairs": rows,
        "tokens_in": tokens_in,
        "text_tokens": tokens_in - rows * (len(bos) + len(eos)),
    }


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipeline.py _worker")
    parser.add_argument("path", choices=("ceiling", "datasets"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--cache-dir")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    parser.add_argument("--ceiling-batch", type=int, default=16384)
    args = parser.parse_args(argv)
    result = worker_ceiling(args) if args.path == "ceiling" else worker_datasets(args)
    Path(args.result).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------- measuring a tree


def _process_label(cmdline: list[str], root: bool) -> str:
    text = " ".join(cmdline)
    if root:
        return "main"
    if "sdk_worker_main" in text:
        return "shell" if cmdline[:1] == ["/bin/sh"] else "beam worker"
    return "child"


class TreeSampler(threading.Thread):
    """Sample a process and all its descendants every ``interval`` s: summed RSS and PSS, and CPU time."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.cpu_by_pid: dict[int, float] = {}
        self.wait_by_tid: dict[tuple[int, int], float] = {}
        self.peak_pss_by_pid: dict[int, tuple[float, str]] = {}
        self.stop_event = threading.Event()
        self.samples = 0

    def sample(self) -> None:
        psutil = self.psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    info = proc.memory_full_info()
                    times = proc.cpu_times()
            except psutil.Error:
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            peak, label = self.peak_pss_by_pid.get(proc.pid, (0.0, ""))
            if not label:
                with contextlib.suppress(psutil.Error):
                    label = _process_label(proc.cmdline(), proc.pid == self.root.pid)
            self.peak_pss_by_pid[proc.pid] = (max(peak, getattr(info, "pss", info.rss)), label)
            self.cpu_by_pid[proc.pid] = times.user + times.system
            if self.samples % 5 == 0:
                self.run_queue_waits(proc.pid)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_processes = max(self.peak_processes, len(procs))
        self.samples += 1

    def run_queue_waits(self, pid: int) -> None:
        """Per thread: nanoseconds spent runnable but waiting for a CPU (/proc/PID/task/TID/schedstat)."""
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                path = f"/proc/{pid}/task/{tid}/schedstat"
                with contextlib.suppress(OSError, ValueError, IndexError), open(path) as f:
                    self.wait_by_tid[(pid, int(tid))] = int(f.read().split()[1]) / 1e9

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def _busy_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measured:
    wall_s: float
    exit_code: int
    peak_rss_mb: float
    peak_pss_mb: float
    cpu_s: float
    background_cores: float
    processes: int
    run_queue_wait_s: float
    peak_pss_by_process: list[tuple[str, float]]


def run_measured(cmd: list[str], *, env: dict[str, str], log: Path, done_at: callable | None = None) -> Measured:
    """Run ``cmd`` with the sampler on its tree; wall ends at ``done_at()`` if given (a worker's own stamp)."""
    busy0, children0 = _busy_cpu_seconds(), _children_cpu_seconds()
    with open(log, "w") as log_file:  # noqa: SIM117 - the log stays open while the process runs
        start = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        end = time.time()
        sampler.stop()
    busy = _busy_cpu_seconds() - busy0
    ours = max(_children_cpu_seconds() - children0, sum(sampler.cpu_by_pid.values()))
    finished = done_at() if (done_at and code == 0) else None
    wall = (finished if finished else end) - start
    return Measured(
        wall_s=wall,
        exit_code=code,
        peak_rss_mb=sampler.peak_rss / 2**20,
        peak_pss_mb=sampler.peak_pss / 2**20,
        cpu_s=ours,
        background_cores=max(0.0, busy - ours) / (end - start),
        processes=sampler.peak_processes,
        run_queue_wait_s=sum(sampler.wait_by_tid.values()),
        peak_pss_by_process=sorted(((label, pss / 2**20) for pss, label in sampler.peak_pss_by_pid.values()
                                    if pss > 20 * 2**20), key=lambda x: -x[1]),
    )


def prioritize(nice: int) -> None:
    """Run this process and its descendants at niceness ``nice``, across sessions too.

    With the kernel's scheduler autogroups (``/proc/sys/kernel/sched_autogroup_enabled``), plain niceness only
    ranks processes within one session; the autogroup's own niceness ranks sessions. Needs root (or
    CAP_SYS_NICE) for negative values.
    """
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
        f.write(str(nice))


def wait_for_quiet(max_wait: float, threshold: float = 0.25, window: float = 3.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` cores; return their use."""
    deadline = time.time() + max_wait
    while True:
        busy0 = _busy_cpu_seconds()
        time.sleep(window)
        used = (_busy_cpu_seconds() - busy0) / window
        if used < threshold or time.time() >= deadline:
            return used
        print(f"    (waiting: other processes use {used:.2f} cores)", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ the paths


@dataclass
class Result:
    path: str
    scale: int
    pairs: int
    wall_s: float
    text_tokens: int = 0
    tokens_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    cpu_s: float = 0.0
    cores: float = 0.0
    background_cores: float = 0.0
    run_queue_wait_s: float = 0.0
    fill: float | None = None
    blocks: int | None = None
    tokens_out: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _worker_cmd(path: str, data: Path, tokenizer: Path, max_length: int, out: Path, result: Path,
                extra: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_worker", path, "--data", str(data), "--tokenizer",
            str(tokenizer), "--max-length", str(max_length), "--out", str(out), "--result", str(result), *extra]


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run_ceiling(data: Path, tokenizer: Path, args: argparse.Namespace, run_dir: Path) -> Result:
    result_file = run_dir / "ceiling.json"
    env = _base_env()
    env["TOKENIZERS_PARALLELISM"] = "true"
    cmd = _worker_cmd("ceiling", data, tokenizer, args.max_length, run_dir, result_file,
                      ["--ceiling-batch", str(args.ceiling_batch), "--num-proc", str(args.num_proc)])
    measured = run_measured(cmd, env=env, log=run_dir / "ceiling.log")
    _check(measured, run_dir / "ceiling.log")
    info = json.loads(result_file.read_text())
    # wall_s is the tokenization time; cores and CPU cover the whole worker process (loading, reading too)
    return Result(
        path="ceiling", scale=0, pairs=info["pairs"], wall_s=info["work_s"], text_tokens=info["text_tokens"],
        peak_rss_mb=measured.peak_rss_mb, peak_pss_mb=measured.peak_pss_mb, cpu_s=measured.cpu_s,
        cores=measured.cpu_s / measured.wall_s, background_cores=measured.background_cores,
        run_queue_wait_s=measured.run_queue_wait_s,  # over the process
        detail={"peak_pss_mb_by_process": measured.peak_pss_by_process,
                "process_wall_s": measured.wall_s, "read_jsonl_s": info["read_s"], "methods_s": info["methods_s"],
                "ceiling_method": info["ceiling_method"], "batch": args.ceiling_batch,
                "tokenizer_cpu_s": info["tokenizer_cpu_s"], "distinct": info["distinct"],
                "fast": info.get("fast", {})},
    )


def run_datasets(data: Path, tokenizer: Path, args: argparse.Namespace, run_dir: Path) -> Result:
    import pyarrow.parquet as pq

    out = run_dir / "datasets-out"
    out.mkdir()
    cache = run_dir / "hf-cache"
    result_file = run_dir / "datasets.json"
    cmd = _worker_cmd("datasets", data, tokenizer, args.max_length, out, result_file,
                      ["--cache-dir", str(cache), "--num-proc", str(args.num_proc)])
    env = _base_env()
    env["HF_DATASETS_CACHE"] = str(cache)

    def done_at() -> float:
        return json.loads(result_file.read_text())["done_at"]

    measured = run_measured(cmd, env=env, log=run_dir / "datasets.log", done_at=done_at)
    _check(measured, run_dir / "datasets.log")
    info = json.loads(result_file.read_text())
    parquet = pq.ParquetFile(out / "train.parquet")
    blocks = parquet.metadata.num_rows
    seq_lengths = parquet.read(columns=["seq_lengths"]).column("seq_lengths").combine_chunks()
    tokens_out = int(seq_lengths.flatten().to_numpy().sum())
    return Result(
        path="datasets", scale=0, pairs=info["pairs"], wall_s=measured.wall_s, text_tokens=info["text_tokens"],
        peak_rss_mb=measured.peak_rss_mb, peak_pss_mb=measured.peak_pss_mb, cpu_s=measured.cpu_s,
        cores=measured.cpu_s / measured.wall_s, background_cores=measured.background_cores,
        run_queue_wait_s=measured.run_queue_wait_s,
        fill=tokens_out / (blocks * args.max_length), blocks=blocks, tokens_out=tokens_out,
        detail={"peak_pss_mb_by_process": measured.peak_pss_by_process,
                "stages_s": info["stages_s"], "tokens_in": info["tokens_in"],
                "tokens_truncated": info["tokens_in"] - tokens_out,
                "startup_s": info["started_work_at"] - (info["done_at"] - measured.wall_s),
                "output_bytes": os.path.getsize(out / "train.parquet")},
    )


def _special_tokens_per_example(tokenizer: Path) -> int:
    """Special tokens seqpack adds to every example: what the tokenizer adds around a text (BOS ...), plus EOS
    unless that already ends it (seqpack.tokenizer.special_layout's rule, restated so as not to import seqpack)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    probe = "seqpack probe"
    bare = tok(probe, add_special_tokens=False)["input_ids"]
    full = tok(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            prefix, suffix = full[:start], full[start + len(bare) :]
            break
    else:
        prefix, suffix = [], []
    if not suffix or suffix[-1] != tok.eos_token_id:
        suffix = [*suffix, tok.eos_token_id]
    return len(prefix) + len(suffix)


def run_seqpack(data: Path, tokenizer: Path, args: argparse.Namespace, run_dir: Path, *,
                floor: bool = False) -> Result:
    """``seqpack run``; with ``floor``, the read + write floor: every text's ids looked up in a table built here
    beforehand (untimed) instead of tokenized (``token_table.py``)."""
    out = run_dir / "seqpack-out"
    # what the `seqpack` console script does; PYTHONPATH (set for --seqpack-rev) takes precedence over the install
    cmd = [sys.executable, "-c", SEQPACK_MAIN,
           "run", "-i", str(data), "-o", str(out), "-t", str(tokenizer), "--max-length", str(args.max_length),
           *args.seqpack_arg]
    env = _base_env()
    if args.seqpack_src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.seqpack_src, env.get("PYTHONPATH")]))
    if floor:
        sys.path.insert(0, str(HERE))
        import token_table

        table = token_table.build(data, tokenizer, Path(args.work_dir).resolve(), SEPARATOR)
        env = token_table.hook_env(env, table, run_dir / "table-report")
    measured = run_measured(cmd, env=env, log=run_dir / "seqpack.log")
    _check(measured, run_dir / "seqpack.log")
    manifest = json.loads((out / "manifest.json").read_text())
    revision = manifest.get("directory", "")  # "" before revisions
    stats = json.loads((out / revision / "stats.json").read_text())
    examples = sum(stats["example_length_hist"])
    text_tokens = stats["tokens_in"] - examples * _special_tokens_per_example(tokenizer)
    detail = {}
    if floor:
        detail["table"] = token_table.read_reports(run_dir / "table-report")
        if not detail["table"]["processes"]:
            raise SystemExit("readwrite: no process loaded the token table: benchmarks/table_hook/sitecustomize.py "
                             "no longer finds how seqpack.transforms.tokenize makes its encode caches; update it")
    return Result(
        path="readwrite" if floor else "seqpack", scale=0, pairs=stats["records_read"], wall_s=measured.wall_s,
        text_tokens=text_tokens,
        peak_rss_mb=measured.peak_rss_mb, peak_pss_mb=measured.peak_pss_mb, cpu_s=measured.cpu_s,
        cores=measured.cpu_s / measured.wall_s, background_cores=measured.background_cores,
        run_queue_wait_s=measured.run_queue_wait_s,
        fill=stats["fill"], blocks=stats["blocks"], tokens_out=stats["tokens_written"],
        detail={"peak_pss_mb_by_process": measured.peak_pss_by_process,
                "tokens_in": stats["tokens_in"], "tokens_truncated": stats["tokens_truncated"],
                "records_rejected": stats["records_rejected"], "peak_processes": measured.processes,
                "backend": manifest["tokenizer"].get("backend") or "hf (not recorded)",
                "texts_reencoded": stats.get("texts_reencoded", 0),
                "output_bytes": sum(p.stat().st_size for p in out.rglob("*.parquet")), **detail},
    )


def run_readwrite(data: Path, tokenizer: Path, args: argparse.Namespace, run_dir: Path) -> Result:
    return run_seqpack(data, tokenizer, args, run_dir, floor=True)


def _check(measured: Measured, log: Path) -> None:
    if measured.exit_code != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{log.name}: exit code {measured.exit_code}\n{tail}")


RUNNERS = {"ceiling": run_ceiling, "datasets": run_datasets, "seqpack": run_seqpack, "readwrite": run_readwrite}

# ------------------------------------------------------------------------------------------- data, tokenizer


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def prepare_data(args: argparse.Namespace, work: Path, scale: int) -> Path:
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.pairs:
        path = data_dir / f"synthetic-{args.pairs * scale}-seed{args.seed}.jsonl"
        if not path.exists():
            sys.path.insert(0, str(HERE))
            import datagen

            print(f"  generating {args.pairs * scale:,} synthetic pairs -> {path}", file=sys.stderr)
            datagen.write_jsonl(str(path) + ".tmp", args.pairs * scale, args.seed)
            os.replace(str(path) + ".tmp", path)
        return path
    if args.corpus == "code":
        limit = f"-{args.limit}" if args.limit else ""
        base = data_dir / f"code{limit}.jsonl"
        if not base.exists():
            sys.path.insert(0, str(HERE))
            import code_corpus

            print(f"  building the code corpus -> {base}", file=sys.stderr)
            stats = code_corpus.write_jsonl(str(base) + ".tmp", limit=args.limit)
            os.replace(str(base) + ".tmp", base)
            print(f"  {stats.summary()}", file=sys.stderr)
    elif args.corpus:
        suffix = "-links" if args.follow_symlinks else ""
        limit = f"-{args.limit}" if args.limit else ""
        base = data_dir / f"gettext{suffix}{limit}.jsonl"
        if not base.exists():
            sys.path.insert(0, str(HERE))
            import corpus

            print(f"  building the gettext corpus -> {base}", file=sys.stderr)
            stats = corpus.write_jsonl(str(base) + ".tmp", limit=args.limit, follow_symlinks=args.follow_symlinks)
            os.replace(str(base) + ".tmp", base)
            print(f"  {stats.summary()}", file=sys.stderr)
    else:
        base = Path(args.input).resolve()
    if scale == 1:
        return base
    path = data_dir / f"{base.stem}-x{scale}.jsonl"
    if not path.exists():
        with open(str(path) + ".tmp", "wb") as out:
            for _ in range(scale):
                with open(base, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        os.replace(str(path) + ".tmp", path)
    return path


def prepare_tokenizer(args: argparse.Namespace, work: Path, data: Path) -> Path:
    if args.tokenizer:
        return Path(args.tokenizer).resolve()
    digest = hashlib.sha256()
    texts = []
    with open(data, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= TOKENIZER_SAMPLE_PAIRS:
                break
            digest.update(line.encode())
            pair = json.loads(line)
            texts += [pair["source"], pair["target"]]
    path = work / "tokenizers" / f"bpe-{args.vocab_size}-{digest.hexdigest()[:16]}"
    if not (path / "tokenizer.json").exists():
        from seqpack.demo import build_tokenizer

        print(f"  training a {args.vocab_size:,}-token byte-level BPE tokenizer on {len(texts):,} texts -> {path}",
              file=sys.stderr)
        build_tokenizer(str(path) + ".tmp", texts, vocab_size=args.vocab_size, add_bos=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(str(path) + ".tmp", path)
    return path


# ---------------------------------------------------------------------------------------------- reporting


def snapshot_src(rev: str, work: Path) -> tuple[str, str]:
    """Export ``src/`` at git revision ``rev`` (read-only: git archive) to run seqpack from; return (dir, sha).

    ``rev`` ``worktree`` copies the working tree's ``src/`` as it is now (named by its content hash), which
    freezes it for a series of runs while the tree is being edited.
    """
    if (Path(rev) / "seqpack").is_dir():  # a src/ directory, e.g. an earlier snapshot
        return str(Path(rev).resolve()), f"dir:{Path(rev).resolve()}"
    if rev == "worktree":
        digest = _src_digest()
        target = work / "src-snapshots" / f"worktree-{digest}"
        if not (target / "src" / "seqpack").is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(REPO / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        return str(target / "src"), f"worktree-{digest}"
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    target = work / "src-snapshots" / sha[:12]
    if not (target / "src" / "seqpack").is_dir():
        tmp = Path(str(target) + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha, "src"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return str(target / "src"), sha


def _compile_seqpack(src: Path) -> str:
    """Compile seqpack's modules to bytecode before any timed run, as ``pip install`` does for an installed package
    (and has done for datasets, TRL and transformers): with ``PYTHONDONTWRITEBYTECODE=1`` set, or a fresh snapshot,
    every run would otherwise compile them again, in the driver and in the workers' server."""
    import compileall

    ok = compileall.compile_dir(str(src / "seqpack"), quiet=1, workers=1)
    return f"compiled under {src / 'seqpack'}" if ok else f"some modules under {src / 'seqpack'} did not compile"


def _src_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "src").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import psutil

    versions = {}
    for name in ("apache-beam", "datasets", "trl", "transformers", "tokenizers", "pyarrow", "numpy", "torch",
                 "seqpack"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "src_changed_files": len(git("status", "--porcelain", "--", "src").splitlines()),
        "src_sha256": _src_digest(),
    }


def _fmt_fill(fill: float | None) -> str:
    return "—" if fill is None else f"{fill:.2%}"


def table(results: list[Result]) -> str:
    lines = [
        "| path | scale | pairs | wall s | tokens/s | peak RSS MB | peak PSS MB | CPU s | cores | fill | blocks "
        "| other load | run-queue wait s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.path} | {r.scale}× | {r.pairs:,} | {r.wall_s:.1f} | {r.tokens_per_s:,.0f} | {r.peak_rss_mb:,.0f} "
            f"| {r.peak_pss_mb:,.0f} | {r.cpu_s:.1f} | {r.cores:.2f} | {_fmt_fill(r.fill)} "
            f"| {'—' if r.blocks is None else f'{r.blocks:,}'} | {r.background_cores:.2f} | {r.run_queue_wait_s:.1f} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> list[str]:
    lines = []
    for scale in sorted({r.scale for r in results}):
        by = {r.path: r for r in results if r.scale == scale}
        if "seqpack" not in by:
            continue
        s = by["seqpack"]
        parts = []
        if "ceiling" in by:
            parts.append(f"seqpack/ceiling = {s.tokens_per_s / by['ceiling'].tokens_per_s:.1%} of the bare "
                         "tokenizer's throughput")
            fast = by["ceiling"].detail.get("fast", {})
            if "work_s" in fast:
                parts.append(f"seqpack/fast-ceiling = {fast['work_s'] / s.wall_s:.1%} of the fast encoder's")
        if "datasets" in by:
            parts.append(f"seqpack/datasets-path = {s.tokens_per_s / by['datasets'].tokens_per_s:.2f}× its "
                         "throughput")
            parts.append(f"peak PSS seqpack/datasets = {s.peak_pss_mb / by['datasets'].peak_pss_mb:.2f}")
        if "readwrite" in by:
            floor = by["readwrite"]
            parts.append(f"read + write floor = {floor.wall_s:.1f} s, {floor.cpu_s:.1f} CPU s: tokenizing and what "
                         f"goes with it costs seqpack {s.wall_s - floor.wall_s:.1f} s, "
                         f"{s.cpu_s - floor.cpu_s:.1f} CPU s")
        if parts:
            lines.append(f"{scale}×: " + "; ".join(parts))
    return lines


def scaling(results: list[Result]) -> list[str]:
    lines = []
    for path in PATHS:
        runs = sorted((r for r in results if r.path == path), key=lambda r: r.scale)
        if len(runs) < 2:
            continue
        steps = [f"{b.scale}×/{a.scale}× = {b.wall_s / a.wall_s:.2f} (data ×{b.pairs / a.pairs:.2f})"
                 for a, b in zip(runs, runs[1:], strict=False)]
        lines.append(f"{path}: " + ", ".join(steps))
    return lines


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--pairs", type=int, help="synthetic pairs (benchmarks/datagen.py, seeded)")
    data.add_argument("--input", help="a JSONL file of {source, target} pairs")
    data.add_argument("--corpus", choices=("gettext", "code"),
                      help="a real corpus: gettext (benchmarks/corpus.py) or code, docstring -> function body pairs "
                      "from the installed packages (benchmarks/code_corpus.py; use --limit 100000)")
    parser.add_argument("--limit", type=int, help="--corpus: at most this many pairs")
    parser.add_argument("--follow-symlinks", action="store_true",
                        help="--corpus gettext: read symlinked catalogs too (duplicate pairs)")
    parser.add_argument("--seed", type=int, default=0, help="--pairs: generator seed")
    parser.add_argument("--tokenizer", help="HF tokenizer dir (default: train a BPE on a sample of the data, cached)")
    parser.add_argument("--vocab-size", type=int, default=32000, help="vocabulary of the trained tokenizer")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--scale", default="1", help="data multiples to run, e.g. 1,2,4 (the scaling check)")
    parser.add_argument("--repeat", type=int, default=1, help="run each path this many times; keep the fastest")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count(),
                        help="processes for the datasets path's map(num_proc=...) and the ceiling's process pool")
    parser.add_argument("--ceiling-batch", type=int, default=16384, help="texts per tokenizer call (ceiling)")
    parser.add_argument("--seqpack-arg", action="append", default=[],
                        help="extra argument for `seqpack run` (repeatable), e.g. --seqpack-arg=--packing=wrap")
    parser.add_argument("--seqpack-rev", metavar="REV",
                        help="run seqpack from src/ at this git revision (exported with git archive), 'worktree' for "
                        "a frozen copy of the working tree's src/ (a stable subject while the tree is being edited), "
                        "or a src/ directory such as an earlier copy")
    parser.add_argument("--nice", type=int, default=0,
                        help="run everything at this niceness (process and scheduler autogroup, in a session of its "
                        "own), e.g. -15 as root on a machine shared with other jobs; they slow down meanwhile")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each run wait up to S seconds for other processes to go quiet")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="data, tokenizers and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the outputs of every run")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown path(s) {sorted(unknown)}; choose from {PATHS}")
    args.scale = [int(s) for s in args.scale.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.nice:
        if not os.environ.get("SEQPACK_BENCH_SESSION") and shutil.which("setsid"):
            # A session of its own, so that it gets its own scheduler autogroup, whose niceness we can set.
            env = dict(os.environ, SEQPACK_BENCH_SESSION="1")
            return subprocess.run(["setsid", "-w", sys.executable, str(Path(__file__).resolve()), *argv],
                                  env=env).returncode
        prioritize(args.nice)
    args.seqpack_src = None
    env_info = environment()
    if args.seqpack_rev:
        args.seqpack_src, sha = snapshot_src(args.seqpack_rev, work)
        env_info["seqpack_rev"] = sha
        print(f"seqpack runs from {args.seqpack_rev} = {sha} (a copy in {args.seqpack_src})")
    compiled = _compile_seqpack(Path(args.seqpack_src) if args.seqpack_src else REPO / "src")
    print(f"machine: {env_info['cpu']}, {env_info['cores']} cores, {env_info['ram_gb']} GiB; python "
          f"{env_info['python']}; " + ", ".join(f"{k} {v}" for k, v in env_info["versions"].items()))
    print(f"seqpack src: commit {env_info['git_commit']}, {env_info['src_changed_files']} changed/untracked file(s) "
          f"under src/, src sha256 {env_info['src_sha256']}")
    print(f"seqpack bytecode: {compiled}")
    niceness = ""
    if args.nice:
        with contextlib.suppress(OSError):
            group = Path("/proc/self/autogroup").read_text().strip()
            niceness = f"  ({group}, process nice {os.getpriority(os.PRIO_PROCESS, 0)})"
    print("command: python benchmarks/pipeline.py " + " ".join(argv) + niceness)

    datas = {scale: prepare_data(args, work, scale) for scale in args.scale}
    tokenizer = prepare_tokenizer(args, work, datas[min(args.scale)])
    print(f"tokenizer: {tokenizer}")
    results: list[Result] = []
    for scale in args.scale:
        data = datas[scale]
        with open(data, "rb") as f:  # warm the page cache: every path reads the file from memory
            while f.read(1 << 24):
                pass
        print(f"data ({scale}×): {data} ({data.stat().st_size / 1e6:,.0f} MB, {_count_lines(data):,} lines)")
        text_tokens = None
        for path in args.paths:
            best: Result | None = None
            for attempt in range(args.repeat):
                if args.wait_quiet:
                    wait_for_quiet(args.wait_quiet)
                run_dir = work / "runs" / f"{path}-x{scale}-{os.getpid()}-{attempt}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                run_dir.mkdir(parents=True)
                print(f"  {path} ({scale}×, try {attempt + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                result = RUNNERS[path](data, tokenizer, args, run_dir)
                result.scale = scale
                print(f"    {result.wall_s:.1f} s, peak PSS {result.peak_pss_mb:,.0f} MB, cores {result.cores:.2f}, "
                      f"other load {result.background_cores:.2f}, fill {_fmt_fill(result.fill)}", file=sys.stderr)
                if not args.keep:
                    shutil.rmtree(run_dir)
                # The datasets path writes GBs of cache: let the kernel finish writing back before the next path
                # runs, or that path pays for it (seen: seqpack 75 s alone, 84-93 s right after datasets).
                os.sync()
                if best is None or result.wall_s < best.wall_s:
                    best = result
            assert best is not None
            if path == "ceiling":
                text_tokens = best.text_tokens
            elif text_tokens is not None and best.text_tokens != text_tokens:
                print(f"  note: {path} counted {best.text_tokens:,} text tokens, the ceiling {text_tokens:,}",
                      file=sys.stderr)
            results.append(best)
        for r in results:
            if r.scale == scale:
                r.tokens_per_s = (text_tokens or r.text_tokens) / r.wall_s
    print()
    print(table(results))
    print()
    for r in results:
        if r.path == "ceiling":
            d = r.detail
            methods = ", ".join(f"{name} {sec:.1f} s" for name, sec in d["methods_s"].items())
            print(f"ceiling {r.scale}×: {methods} (batches of {d['batch']:,} texts; the fastest is the ceiling); "
                  f"tokenizing every text once costs {d['tokenizer_cpu_s']:.1f} CPU s on one thread; reading+parsing "
                  f"the JSONL first took {d['read_jsonl_s']:.1f} s (not counted)")
            fast = d.get("fast", {})
            if "work_s" in fast:
                lists = f"; {fast['lists_s']:.1f} s with every text's ids as a list" if "lists_s" in fast else ""
                print(f"fast ceiling {r.scale}×: {fast['method']} {fast['work_s']:.2f} s, "
                      f"{r.text_tokens / fast['work_s']:,.0f} tokens/s ({r.wall_s / fast['work_s']:.1f}× the "
                      f"ceiling above; the same token count){lists}")
            else:
                print(f"fast ceiling {r.scale}×: not measured: {fast.get('error', 'an older result')}")
            print(f"ceiling {r.scale}×: distinct texts: {d['distinct']['sources']:,} sources and "
                  f"{d['distinct']['targets']:,} targets in {r.pairs:,} pairs (the ceiling tokenizes every text; "
                  "seqpack tokenizes a text once per worker while its cache keeps it)")
        elif r.path == "datasets":
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in r.detail["stages_s"].items())
            print(f"datasets {r.scale}×: {stages}; startup+imports {r.detail['startup_s']:.1f} s; "
                  f"{r.detail['tokens_truncated']:,} tokens cut by truncation")
        elif r.path == "readwrite":
            table_info = r.detail["table"]
            print(f"readwrite {r.scale}×: seqpack with every text's ids looked up in a table built beforehand (the "
                  f"floor of everything but tokenizing); {table_info['processes']} processes loaded the table in "
                  f"{table_info['load_cpu_s']:.1f} CPU s (counted), {table_info['misses']:,} texts not in it were "
                  "tokenized")
        elif r.path == "seqpack":
            print(f"seqpack {r.scale}×: {r.detail['tokens_truncated']:,} tokens cut by truncation, "
                  f"{r.detail['records_rejected']:,} records rejected, up to {r.detail['peak_processes']} processes; "
                  f"ids written by the {r.detail['backend']} backend ({r.detail['texts_reencoded']:,} texts "
                  "re-encoded by Hugging Face)")
    for r in results:
        peaks = ", ".join(f"{label} {mb:,.0f}" for label, mb in r.detail["peak_pss_mb_by_process"][:4])
        print(f"{r.path} {r.scale}× peak PSS by process (MB, each at its own peak): {peaks}")
    for line in ratios(results):
        print(line)
    for line in scaling(results):
        print("scaling " + line)
    print("other load: cores used by other processes during the run (they may just fill idle cores); run-queue "
          "wait: seconds the run's threads were ready but waited for a CPU (other processes' and its own threads)")
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env_info, "argv": argv,
                                               "results": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
