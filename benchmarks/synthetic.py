"""Write a synthetic seqpack dataset of any size, fast, for benchmarks (no tokenizer, no Beam).

    python benchmarks/synthetic.py /tmp/bench-1x --rows 4096

Rows look like real packed blocks: examples with log-normal lengths packed next-fit into ``max_length``,
labels -100 on a source prefix and each example's first token, padding at the end, the same Parquet
options as the writer (zstd, row groups of 256 rows).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os

import numpy as np
import pyarrow.parquet as pq

from seqpack import IGNORE_INDEX
from seqpack.schemas import MANIFEST_NAME, Manifest, ShardInfo, SplitInfo, TokenizerInfo, blocks_to_table

PAD_ID = 0


def row_seq_lens(rng: np.random.Generator, rows: int, max_length: int) -> list[np.ndarray]:
    """Example lengths for each row: next-fit of log-normal lengths (median ~300 tokens)."""
    lengths = np.clip(rng.lognormal(mean=5.7, sigma=0.8, size=rows * max_length // 64), 8, max_length)
    lengths = lengths.astype(np.int64)
    out, current, used, i = [], [], 0, 0
    while len(out) < rows:
        length = int(lengths[i % len(lengths)])
        i += 1
        if used + length > max_length:
            out.append(np.array(current))
            current, used = [], 0
        current.append(length)
        used += length
    return out


def shard_table(rng: np.random.Generator, rows: int, max_length: int, vocab_size: int):  # type: ignore[no-untyped-def]
    """One shard's table, built with numpy only (vectorized over tokens)."""
    seq_lens = row_seq_lens(rng, rows, max_length)
    flat_lens = np.concatenate(seq_lens)
    real = np.array([int(s.sum()) for s in seq_lens])
    total = rows * max_length
    row_start = np.repeat(np.arange(rows) * max_length, real)
    token_in_row = np.arange(real.sum()) - np.repeat(np.cumsum(real) - real, real)
    real_index = row_start + token_in_row
    example_start = np.repeat(np.cumsum(flat_lens) - flat_lens, flat_lens)
    position = np.arange(flat_lens.sum()) - example_start
    source = np.repeat((flat_lens * rng.uniform(0.2, 0.6, len(flat_lens))).astype(np.int64), flat_lens)

    input_ids = np.full(total, PAD_ID, dtype=np.int32)
    input_ids[real_index] = rng.integers(1, vocab_size, size=len(real_index), dtype=np.int32)
    labels = np.full(total, IGNORE_INDEX, dtype=np.int32)
    trained = (position >= np.maximum(source, 1))
    labels[real_index[trained]] = input_ids[real_index[trained]]
    attention_mask = np.zeros(total, dtype=np.int8)
    attention_mask[real_index] = 1
    position_ids = np.zeros(total, dtype=np.int32)
    position_ids[real_index] = position
    table = blocks_to_table(
        row_offsets=np.arange(rows + 1) * max_length,
        input_ids=input_ids,
        labels=labels,
        attention_mask=attention_mask,
        position_ids=position_ids,
        seq_len_offsets=np.concatenate([[0], np.cumsum([len(s) for s in seq_lens])]),
        seq_lens=flat_lens,
    )
    return table, len(flat_lens), int(real.sum())


def write_synthetic(
    root: str,
    *,
    rows: int,
    max_length: int = 2048,
    rows_per_shard: int = 1024,
    row_group_size: int = 256,
    vocab_size: int = 32_000,
    seed: int = 0,
) -> Manifest:
    """Write ``rows`` packed blocks as Parquet shards plus a manifest under the local directory ``root``."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    count = -(-rows // rows_per_shard)
    shards = []
    for index in range(count):
        shard_rows = min(rows_per_shard, rows - index * rows_per_shard)
        table, examples, tokens = shard_table(rng, shard_rows, max_length, vocab_size)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", row_group_size=row_group_size, use_dictionary=False)
        data = buffer.getvalue()
        path = f"train/part-{index:05d}-of-{count:05d}.parquet"
        with open(os.path.join(root, path), "wb") as out:
            out.write(data)
        shards.append(ShardInfo(path, shard_rows, examples, tokens, len(data), hashlib.sha256(data).hexdigest()))
    manifest = Manifest(
        max_length=max_length,
        packing="wrap",
        file_format="parquet",
        tokenizer=TokenizerInfo("synthetic", vocab_size, PAD_ID, None, None, "sha256:synthetic"),
        splits={
            "train": SplitInfo(
                rows=rows,
                examples=sum(s.examples for s in shards),
                tokens=sum(s.tokens for s in shards),
                shards=shards,
            )
        },
        config={"row_group_size": row_group_size, "synthetic_seed": seed},
        created_by="benchmarks/synthetic.py",
    )
    with open(os.path.join(root, MANIFEST_NAME), "w") as out:
        out.write(manifest.to_json())
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = write_synthetic(args.root, rows=args.rows, max_length=args.max_length, seed=args.seed)
    split = manifest.splits["train"]
    print(f"wrote {split.rows} rows, {split.examples} examples, {split.tokens} tokens in {len(split.shards)} shards")


if __name__ == "__main__":
    main()
