"""Host→GPU tokens/s through ``PackedDataLoader`` and a real training step on a seqpack dataset (CUDA).

    PYTHONPATH=src python benchmarks/gpu_loader.py --data OUT --out gpu.json
    PYTHONPATH=src python benchmarks/gpu_loader.py --data OUT --unpacked OUT_NONE --out gpu.json
    python benchmarks/gpu_loader.py --data OUT --out /tmp/smoke.json --device cpu --smoke   # CPU check

1. **h2d**: ``PackedDataLoader(PackedDataset(DATA, batch_size, seed=0), num_workers, collate_fn, pin_memory)``,
   every batch's tensors copied with ``.to(device, non_blocking=True)``, one synchronize at the end; real
   (non-padding) tokens/s for padding-free vs padded collates, pinned vs pageable, and whether the tensors the
   loop receives are pinned. **copy**: the same copies of batches already in memory, to isolate the transfer.
2. **loss check**: on the first rows of the dataset, the loss of a randomly initialised Llama with SDPA
   attention for ``collate_padding_free`` (no attention mask: transformers finds the packed examples from the
   restarting ``position_ids``), ``collate_4d_mask`` and ``collate_padded``, against a reference where every
   example is its own padded row; in fp32 (the equivalence) and bf16.
3. **train**: bf16 model, fused AdamW, ``--warmup`` + ``--steps`` steps per collate with the loader running
   (pinned, ``--train-workers`` workers), then the same number of steps on one batch already on the device
   (compute only); tokens/s, padding share, peak memory.

Writes one JSON summary to ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from seqpack import IGNORE_INDEX
from seqpack.loader import (
    PackedDataLoader,
    PackedDataset,
    collate_4d_mask,
    collate_padded,
    collate_padding_free,
)

Batch = dict[str, Any]
Collate = Callable[[Sequence[Mapping[str, Any]]], Batch]
_ROW_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids")


def counted(samples: Sequence[Mapping[str, Any]], *, collate: Collate) -> tuple[Batch, int, int]:
    """Collate, and count real tokens (the examples' lengths) and token slots (``input_ids`` elements)."""
    batch = collate(samples)
    real = sum(int(sample["seq_lens"].sum()) for sample in samples)
    return batch, real, batch["input_ids"].numel()


def collates(dtype: torch.dtype) -> dict[str, Collate]:
    """The loader's collates by name; the 4D mask in the model's dtype, as SDPA needs."""
    return {
        "padding_free": collate_padding_free,
        "padded_2d": collate_padded,
        "mask_4d": partial(collate_4d_mask, dtype=dtype),
    }


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Copy every tensor with ``non_blocking=True`` (asynchronous from pinned memory); keep other values."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader(data: str, batch_size: int, collate: Collate, workers: int, pin: bool) -> PackedDataLoader:
    dataset = PackedDataset(data, batch_size=batch_size, seed=0)
    return PackedDataLoader(dataset, num_workers=workers, collate_fn=partial(counted, collate=collate), pin_memory=pin)


# ------------------------------------------------------------------------------------------ host → GPU


def h2d(
    data: str,
    name: str,
    collate: Collate,
    *,
    batch_size: int,
    workers: int,
    pin: bool,
    device: torch.device,
    max_batches: int,
) -> dict[str, Any]:
    """Loader + copy to the device: tokens/s from creating the loader to the last copy finishing."""
    start = time.perf_counter()
    first = 0.0
    real_total = slots = batches = first_real = pinned = tensors = 0
    kept: Batch = {}
    for batch, real, slot in loader(data, batch_size, collate, workers, pin):
        if batches == 0:
            first, first_real = time.perf_counter(), real
        if device.type == "cuda":
            host = [v for v in batch.values() if isinstance(v, torch.Tensor)]
            pinned += sum(t.is_pinned() for t in host)
            tensors += len(host)
        kept = to_device(batch, device)
        real_total += real
        slots += slot
        batches += 1
        if batches >= max_batches:
            break
    sync(device)
    end = time.perf_counter()
    del kept
    return {
        "collate": name,
        "pin_memory": pin,
        "workers": workers,
        "batches": batches,
        "real_tokens": real_total,
        "token_slots": slots,
        "seconds": round(end - start, 4),
        "first_batch_s": round(first - start, 4),
        "tokens_per_s": round(real_total / (end - start)),
        "steady_tokens_per_s": round((real_total - first_real) / max(end - first, 1e-9)),
        "pinned_tensors": f"{pinned}/{tensors}" if device.type == "cuda" else "n/a (no CUDA)",
        "all_pinned": (pinned == tensors > 0) if device.type == "cuda" else None,
    }


def copy_only(
    data: str, name: str, collate: Collate, *, batch_size: int, device: torch.device, batches: int, repeats: int
) -> list[dict[str, Any]]:
    """Copy batches already in host memory, pageable then pinned: the transfer alone."""
    host: list[list[torch.Tensor]] = []
    real = 0
    for batch, tokens, _ in loader(data, batch_size, collate, 0, False):
        host.append([v for v in batch.values() if isinstance(v, torch.Tensor)])
        real += tokens
        if len(host) >= batches:
            break
    nbytes = sum(t.numel() * t.element_size() for row in host for t in row)
    results = []
    for pinned in (False, True) if device.type == "cuda" else (False,):
        source = [[t.pin_memory() for t in row] for row in host] if pinned else host
        for row in source:  # warm-up: allocator and first-copy costs
            [t.to(device, non_blocking=True) for t in row]
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            for row in source:
                [t.to(device, non_blocking=True) for t in row]
        sync(device)
        seconds = time.perf_counter() - start
        results.append(
            {
                "collate": name,
                "pinned": pinned,
                "batches": len(host) * repeats,
                "MB_per_batch": round(nbytes / len(host) / 1e6, 3),
                "GB_per_s": round(nbytes * repeats / seconds / 1e9, 2),
                "tokens_per_s": round(real * repeats / seconds),
            }
        )
    return results


# ------------------------------------------------------------------------------------------------- model


def build_model(vocab: int, max_length: int, args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """A randomly initialised Llama (fp32, SDPA attention), the same weights for a given seed."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64 or args.hidden * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max_length,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"asked for sdpa, got {model.config._attn_implementation}")
    return model.to(device)


def split_examples(samples: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Every example of every packed row as its own row (the examples are a prefix of the row)."""
    rows = []
    for sample in samples:
        start = 0
        for length in sample["seq_lens"].tolist():
            row = {name: sample[name][start : start + length] for name in _ROW_COLUMNS}
            rows.append({**row, "seq_lens": torch.tensor([length], dtype=torch.int32)})
            start += length
    return rows


@torch.no_grad()
def token_losses(model: torch.nn.Module, batch: Batch, device: torch.device) -> tuple[torch.Tensor, float]:
    """(fp32 cross-entropy of every target token in row-major order, the model's own ``.loss``)."""
    inputs = to_device(batch, device)
    out = model(**inputs)
    labels = inputs["labels"][:, 1:]
    valid = labels != IGNORE_INDEX
    losses = F.cross_entropy(out.logits[:, :-1][valid].float(), labels[valid], reduction="none")
    return losses, float(out.loss)


def loss_check(
    model: torch.nn.Module, data: str, rows: int, dtype: torch.dtype, device: torch.device, chunk: int
) -> dict[str, Any]:
    """Losses of the collates on the same packed rows against every example in its own padded row."""
    dataset = PackedDataset(data, batch_size=1, seed=0)
    samples = [sample for _, sample in zip(range(rows), iter(dataset), strict=False)]
    examples = split_examples(samples)
    reference = torch.cat(
        [
            token_losses(model, collate_padded(examples[i : i + chunk]), device)[0]
            for i in range(0, len(examples), chunk)
        ]
    )
    ref_mean = float(reference.double().mean())
    result: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "rows": len(samples),
        "examples": len(examples),
        "target_tokens": int(reference.numel()),
        "reference_loss": ref_mean,
    }
    for name, collate in collates(dtype).items():
        losses, hf_loss = token_losses(model, collate(samples), device)
        if losses.shape != reference.shape:
            raise RuntimeError(f"{name}: {losses.numel()} targets, reference has {reference.numel()}")
        diff = (losses - reference).abs()
        result[name] = {
            "loss": hf_loss,
            "loss_minus_reference": hf_loss - ref_mean,
            "max_abs_token_diff": float(diff.max()),
            "mean_abs_token_diff": float(diff.double().mean()),
        }
    return result


# ---------------------------------------------------------------------------------------------- training


def train(
    model: torch.nn.Module,
    init: dict[str, torch.Tensor],
    data: str,
    name: str,
    collate: Collate,
    *,
    batch_size: int,
    workers: int,
    warmup: int,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    """``warmup`` + ``steps`` optimizer steps fed by the loader, then ``steps`` more on one resident batch."""
    model.load_state_dict(init)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(batch: Batch) -> torch.Tensor:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    batches: Iterator[tuple[Batch, int, int]] = iter(loader(data, batch_size, collate, workers, device.type == "cuda"))
    losses: list[torch.Tensor] = []
    real = slots = 0
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            real = slots = 0
            start = time.perf_counter()
        host, tokens, slot = next(batches)
        batch = to_device(host, device)
        losses.append(step(batch))
        real += tokens
        slots += slot
    sync(device)
    fed = time.perf_counter() - start
    del batches
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    sync(device)
    resident = time.perf_counter() - start
    values = torch.stack(losses).float().tolist()
    result = {
        "batch_size": batch_size,
        "workers": workers,
        "steps": steps,
        "real_tokens_per_step": round(real / steps),
        "token_slots_per_step": round(slots / steps),
        "padding_share": round(1 - real / slots, 4),
        "step_ms": round(fed / steps * 1e3, 2),
        "tokens_per_s": round(real / fed),
        "compute_only_step_ms": round(resident / steps * 1e3, 2),
        "compute_only_tokens_per_s": round(tokens * steps / resident),
        "loss_first": round(values[0], 4),
        "loss_last": round(values[-1], 4),
    }
    if device.type == "cuda":
        result["peak_allocated_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        result["peak_reserved_GiB"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    return result


# ------------------------------------------------------------------------------------------------ main


def environment(device: torch.device) -> dict[str, Any]:
    import transformers
    from transformers.utils import is_flash_attn_2_available

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "flash_attn_package": importlib.util.find_spec("flash_attn") is not None,
        "flash_attention_2_available": bool(is_flash_attn_2_available()),
        "attn_implementation": "sdpa",
    }
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    if os.path.isdir("/dev/shm"):
        env["dev_shm_GiB"] = round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
    return env


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="seqpack dataset dir (packed, e.g. --packing bfd)")
    p.add_argument("--unpacked", help="optional seqpack dataset dir built with --packing none: padded vs padding-free")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=8, help="packed rows per batch")
    p.add_argument("--unpacked-batch-size", type=int, default=256, help="examples per batch for --unpacked")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8], help="num_workers values for h2d")
    p.add_argument("--h2d-batches", type=int, default=10**9, help="at most this many batches per h2d run")
    p.add_argument("--copy-batches", type=int, default=64)
    p.add_argument("--copy-repeats", type=int, default=5)
    p.add_argument("--check-rows", type=int, default=2, help="packed rows in the loss check")
    p.add_argument("--check-chunk", type=int, default=64, help="examples per reference forward")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--train-workers", type=int, default=4)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = p.parse_args(argv)
    if args.smoke:
        args.__dict__.update(
            workers=[0],
            h2d_batches=3,
            copy_batches=2,
            copy_repeats=1,
            check_rows=1,
            hidden=64,
            layers=2,
            heads=2,
            warmup=1,
            steps=1,
            train_workers=0,
            unpacked_batch_size=16,
            batch_size=1,
        )
    return args


def attempt(summary: dict[str, Any], section: str, out: str, label: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Run one measurement; on failure record the error and go on. Rewrite ``out`` after each one."""
    try:
        result = fn()
    except Exception as exc:  # a failed configuration must not lose the others' figures
        result = {**label, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    rows = result if isinstance(result, list) else [result]
    summary.setdefault(section, []).extend(rows)
    print(json.dumps(rows), flush=True)
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device = torch.device(args.device)
    began = time.perf_counter()
    probe = PackedDataset(args.data, batch_size=args.batch_size, seed=0)
    train_split = probe.manifest.splits["train"]
    summary: dict[str, Any] = {
        "env": environment(device),
        "data": {
            "path": args.data,
            "packing": probe.manifest.packing,
            "rows": train_split.rows,
            "examples": train_split.examples,
            "tokens": train_split.tokens,
            "max_length": probe.max_length,
            "vocab_size": probe.vocab_size,
            "batch_size": args.batch_size,
        },
    }
    print(json.dumps(summary, indent=1), flush=True)
    named = collates(torch.bfloat16)

    for workers in args.workers:
        for name in ("padding_free", "padded_2d"):
            for pin in (False, True):
                label = {"collate": name, "pin_memory": pin, "workers": workers}
                run = partial(
                    h2d,
                    args.data,
                    name,
                    named[name],
                    batch_size=args.batch_size,
                    workers=workers,
                    pin=pin,
                    device=device,
                    max_batches=args.h2d_batches,
                )
                attempt(summary, "h2d", args.out, label, run)
    for name in ("padding_free", "padded_2d"):
        run = partial(
            copy_only,
            args.data,
            name,
            named[name],
            batch_size=args.batch_size,
            device=device,
            batches=args.copy_batches,
            repeats=args.copy_repeats,
        )
        attempt(summary, "copy", args.out, {"collate": name}, run)

    model = build_model(probe.vocab_size, probe.max_length, args, device)
    summary["model"] = {
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hidden": args.hidden,
        "layers": args.layers,
        "heads": args.heads,
        "intermediate": model.config.intermediate_size,
        "vocab": model.config.vocab_size,
        "attn_implementation": model.config._attn_implementation,
    }
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        run = partial(loss_check, model, args.data, args.check_rows, dtype, device, args.check_chunk)
        attempt(summary, "loss_check", args.out, {"dtype": str(dtype)}, run)

    init = copy.deepcopy(model.state_dict())
    runs = [(args.data, args.batch_size, name) for name in ("padding_free", "mask_4d", "padded_2d")]
    if args.unpacked:
        runs += [(args.unpacked, args.unpacked_batch_size, name) for name in ("padding_free", "padded_2d")]
    for data, batch_size, name in runs:
        label = {"data": os.path.basename(os.path.normpath(data)), "mode": name}
        run = partial(
            train,
            model,
            init,
            data,
            name,
            named[name],
            batch_size=batch_size,
            workers=args.train_workers,
            warmup=args.warmup,
            steps=args.steps,
            device=device,
        )
        attempt(summary, "train", args.out, label, lambda run=run, label=label: {**label, **run()})
    summary["total_seconds"] = round(time.perf_counter() - began, 1)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
