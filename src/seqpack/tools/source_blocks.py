"""``seqpack inspect --source NAME``: a mixture's blocks that hold examples of one source, showing only those.

Blocks keep their numbers in the split (``--block`` takes the same numbers as without ``--source``); ``--random``
picks among the blocks that hold the source, and without either the first such block is shown. Examples of other
sources in a shown block are left out of its view.

    inspection = inspect_source("out/", source="code", random_count=3, seed=0)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from seqpack.dataset import ShardSet
from seqpack.schemas import Manifest
from seqpack.schemas.columns import SOURCE_ID
from seqpack.tools.blocks import (
    InspectError,
    Inspection,
    NoSuchBlock,
    block_view,
    load_dataset_tokenizer,
    missing_blocks,
    read_rows,
)


def source_index(manifest: Manifest, name: str) -> int:
    """The id of source ``name``; ``InspectError`` naming the sources there are (or saying there are none)."""
    names = manifest.source_names
    if not names:
        raise InspectError(f"--source {name}: the dataset is not a mixture (its manifest lists no sources)")
    if name not in names:
        raise InspectError(f"--source {name}: the dataset has no such source; its sources are {', '.join(names)}")
    return names.index(name)


def rows_with_source(shards: ShardSet, source_id: int) -> list[int]:
    """The split's rows that hold at least one example of ``source_id`` (reads only the ``source_id`` column)."""
    rows, offset = [], 0
    for unit in range(shards.num_units):
        column = shards.read_unit(unit, columns=[SOURCE_ID]).column(SOURCE_ID).combine_chunks()
        holds = np.zeros(len(column), bool)
        values = np.asarray(column.values)
        if len(values):
            row_of = np.repeat(np.arange(len(column)), np.diff(np.asarray(column.offsets)))
            holds[row_of[values == source_id]] = True
        rows += (np.flatnonzero(holds) + offset).tolist()
        offset += len(column)
    return rows


def _choose(holding: list[int], num_rows: int, *, blocks: Sequence[int], random_count: int, seed: int | None,
            where: str) -> tuple[list[int], list[int]]:
    """Rows to show among ``holding``, and the asked-for blocks that do not exist or do not hold the source."""
    if not holding:
        raise NoSuchBlock(f"{where} has no blocks")
    if random_count:
        return sorted(random.Random(seed).sample(holding, min(random_count, len(holding)))), []
    if not blocks:
        return holding[:1], []
    held = set(holding)
    rows = [block + num_rows if block < 0 else block for block in blocks]
    chosen = [row for row in rows if row in held]
    missing = [block for block, row in zip(blocks, rows, strict=True) if row not in held]
    if not chosen:
        raise NoSuchBlock(missing_blocks(missing, num_rows, where))
    return chosen, missing


def inspect_source(url: str, *, source: str, split: str = "train", rows: Sequence[int] = (), random_count: int = 0,
                   seed: int | None = None, tokenizer: str | None = None) -> Inspection:
    """``inspect_blocks`` for one source of a mixture: blocks that hold it, only its examples shown."""
    shards = ShardSet.open(url, split=split)
    try:
        source_id = source_index(shards.manifest, source)
        holding = rows_with_source(shards, source_id)
        where = f"the split's blocks with source {source}"
        chosen, missing = _choose(holding, shards.num_rows, blocks=rows, random_count=random_count, seed=seed,
                                  where=where)
        loaded = load_dataset_tokenizer(url, shards.manifest, tokenizer)
        blocks = []
        for row, values in read_rows(shards, chosen):
            view = block_view(loaded.decode, input_ids=values["input_ids"], labels=values["labels"],
                              seq_lens=values["seq_lens"], split=split, index=row)
            mine = tuple(example for example, sid in zip(view.examples, values[SOURCE_ID], strict=True)
                         if sid == source_id)
            blocks.append(replace(view, examples=mine))
        num_rows = shards.num_rows
    finally:
        shards.close()
    return Inspection(url=f"{url} · source {source} ({len(holding):,} blocks hold it)", split=split,
                      num_rows=num_rows, tokenizer=loaded, blocks=blocks,
                      missing=missing_blocks(missing, num_rows, where) if missing else None)
