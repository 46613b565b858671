"""Write small seqpack datasets for tests, without the Beam pipeline: examples in, shards and manifest out.

    examples = make_examples(40, seed=1)
    manifest = write_dataset(tmp_path, {"train": examples}, max_length=64, row_group_size=4)

Blocks follow the format's rules: labels -100 on source tokens, on padding and on each example's first
token; position ids restart per example; real tokens first, padding after.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa

from seqpack import IGNORE_INDEX
from seqpack.schemas import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    SplitInfo,
    TokenizerInfo,
    blocks_to_table,
    revision_dir,
    serialize_shard,
)
from seqpack.schemas.manifest import GenerationInfo

PAD_ID = 0


@dataclass(frozen=True)
class Example:
    ids: np.ndarray
    source_len: int
    label_ids: np.ndarray | None = None
    """Labels as given, instead of the rule's (tests of faulty datasets)."""
    positions: np.ndarray | None = None
    """Position ids as given, instead of 0, 1, 2, ..."""

    def key(self) -> bytes:
        """Identity of the example for exactly-once checks."""
        return self.ids.astype(np.int32).tobytes()

    def labels(self) -> np.ndarray:
        if self.label_ids is not None:
            return np.asarray(self.label_ids, dtype=np.int64)
        labels = self.ids.astype(np.int64).copy()
        labels[: max(self.source_len, 1)] = IGNORE_INDEX
        return labels


def make_examples(
    count: int, *, seed: int = 0, min_len: int = 2, max_len: int = 24, vocab_size: int = 1 << 20
) -> list[Example]:
    """Random examples; when the vocabulary allows, token 0 of example ``i`` is ``i + 1`` so all differ."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(1, vocab_size, size=length).astype(np.int32)
        if vocab_size > count + 1:
            ids[0] = i + 1
        examples.append(Example(ids=ids, source_len=int(rng.integers(0, length))))
    return examples


def pack(examples: list[Example], max_length: int, packing: str = "wrap") -> list[list[Example]]:
    """Next-fit packing in order (``packing="none"``: one example per row)."""
    if packing == "none":
        return [[example] for example in examples]
    blocks: list[list[Example]] = []
    used = max_length
    for example in examples:
        if len(example.ids) > max_length:
            raise ValueError("example longer than max_length")
        if used + len(example.ids) > max_length:
            blocks.append([])
            used = 0
        blocks[-1].append(example)
        used += len(example.ids)
    return blocks


def blocks_table(blocks: list[list[Example]], max_length: int, padded: bool = True) -> pa.Table:
    """A shard table for ``blocks``, built the way the writer lays rows out."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("ids", "labels", "mask", "pos")}
    lens: list[np.ndarray] = []
    row_lengths = []
    for block in blocks:
        ids = np.concatenate([e.ids for e in block]).astype(np.int32)
        labels = np.concatenate([e.labels() for e in block])
        pos = np.concatenate([np.arange(len(e.ids)) if e.positions is None else e.positions for e in block])
        pad = max_length - len(ids) if padded else 0
        columns["ids"].append(np.concatenate([ids, np.full(pad, PAD_ID)]))
        columns["labels"].append(np.concatenate([labels, np.full(pad, IGNORE_INDEX)]))
        columns["mask"].append(np.concatenate([np.ones(len(ids)), np.zeros(pad)]))
        columns["pos"].append(np.concatenate([pos, np.zeros(pad)]))
        lens.append(np.array([len(e.ids) for e in block]))
        row_lengths.append(len(ids) + pad)
    return blocks_to_table(
        row_offsets=np.concatenate([[0], np.cumsum(row_lengths)]),
        input_ids=_flat(columns["ids"]),
        labels=_flat(columns["labels"]),
        attention_mask=_flat(columns["mask"]),
        position_ids=_flat(columns["pos"]),
        seq_len_offsets=np.concatenate([[0], np.cumsum([len(x) for x in lens])]),
        seq_lens=_flat(lens),
    )


def _flat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def tokenizer_info(vocab_size: int = 1 << 20, added_tokens: dict[str, int] | None = None) -> TokenizerInfo:
    return TokenizerInfo(
        name="test",
        vocab_size=vocab_size,
        pad_id=PAD_ID,
        bos_id=None,
        eos_id=None,
        fingerprint="sha256:test",
        added_tokens=added_tokens or {},
    )


def write_dataset(
    url: str,
    splits: dict[str, list[Example]],
    *,
    max_length: int = 64,
    rows_per_shard: int = 10,
    row_group_size: int = 4,
    file_format: str = "parquet",
    packing: str = "wrap",
    vocab_size: int = 1 << 20,
    added_tokens: dict[str, int] | None = None,
    revision: int = 0,
) -> Manifest:
    """Pack each split, write it as shards under ``url`` (any fsspec URL), manifest last; return the manifest.

    With ``revision`` (1, 2, ...) the shards go into that revision's directory (``v000002/train/...``), as a
    commit writes them; without, into the older flat layout.
    """
    fs, root = fsspec.core.url_to_fs(str(url))
    directory = revision_dir(revision) if revision else ""
    infos = {}
    for split, examples in splits.items():
        blocks = pack(examples, max_length, packing)
        chunks = [blocks[i : i + rows_per_shard] for i in range(0, len(blocks), rows_per_shard)]
        shards = []
        for index, chunk in enumerate(chunks):
            path = f"{directory}/{split}" if directory else split
            path = f"{path}/part-{index:05d}-of-{len(chunks):05d}.{file_format}"
            table = blocks_table(chunk, max_length, padded=packing != "none")
            data = serialize_shard(table, file_format, row_group_size)
            fs.makedirs(f"{root}/{path.rsplit('/', 1)[0]}", exist_ok=True)
            with fs.open(f"{root}/{path}", "wb") as out:
                out.write(data)
            shards.append(
                ShardInfo(
                    path=path,
                    rows=len(chunk),
                    examples=sum(len(b) for b in chunk),
                    tokens=sum(len(e.ids) for b in chunk for e in b),
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        infos[split] = SplitInfo(
            rows=sum(s.rows for s in shards),
            examples=sum(s.examples for s in shards),
            tokens=sum(s.tokens for s in shards),
            shards=shards,
        )
    manifest = Manifest(
        max_length=max_length,
        packing=packing,
        file_format=file_format,
        tokenizer=tokenizer_info(vocab_size, added_tokens),
        splits=infos,
        config={"row_group_size": row_group_size},
        created_by="tests/shardgen.py",
        revision=revision,
        directory=directory,
        generations=[
            GenerationInfo(
                id=revision, directory=directory, splits=infos, files=[], inputs=[], created_by="tests/shardgen.py"
            )
        ],
    )
    with fs.open(f"{root}/{MANIFEST_NAME}", "w") as out:
        out.write(manifest.to_json())
    return manifest


def examples_in(sample: dict) -> list[bytes]:
    """Cut a loaded sample (dict of arrays/tensors) back into example keys, using ``seq_lens``."""
    ids = np.asarray(sample["input_ids"]).astype(np.int32)
    keys, start = [], 0
    for length in np.asarray(sample["seq_lens"]).tolist():
        keys.append(ids[start : start + length].tobytes())
        start += length
    return keys
