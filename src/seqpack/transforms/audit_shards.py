"""The audit inside every run: each shard writer checks the blocks it writes and adds what it found to the run's
statistics (``audit_by_code``, ``audit_places``, ``examples_audited`` in ``stats.json``).

Checking where the blocks are written, on the workers, costs the run a few numpy passes per bucket
(``seqpack.audit_columns``); checking afterwards on the driver would read the whole dataset back on one machine.
The facts the checks need (special ids, ``--train-on``, chat or not, packing, overlong) come from the driver's
tokenizer and settings (``audit.AuditFacts.of_settings``), in a small frozen ``ShardAudit``.

    stats = audit_stats(audit, blocks, split="train", shard="train/part-00000-of-00004.parquet", first_row=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seqpack.audit import FINDINGS, AuditFacts
from seqpack.audit_columns import audit_columns, example_rows
from seqpack.packing import PackedBlocks
from seqpack.schemas.stats import AUDIT_PLACES, PLACES_KEPT, place


@dataclass(frozen=True)
class ShardAudit:
    """What a shard writer needs to audit its blocks: the facts, and the revision directory (``v000002``) that
    places name shards under, as the manifest lists them."""

    facts: AuditFacts
    directory: str
    by_source: tuple[AuditFacts, ...] = ()
    """A mixture's facts by source id: each example is checked as its own source was built (a chat source's
    turns end with end-of-turn tokens, a pairs source's with EOS)."""


def audit_stats(audit: ShardAudit, blocks: PackedBlocks, *, split: str, shard: str, first_row: int = 0
                ) -> dict[str, Any]:
    """Partial statistics for ``blocks``, rows ``first_row`` onwards of shard file ``shard`` (relative to the
    revision directory): the examples checked, findings per code, and the first ``PLACES_KEPT`` places of each."""
    flagged = _flagged(audit, blocks)
    rows, index = example_rows(blocks) if flagged else (np.zeros(0, np.int64),) * 2
    path = f"{audit.directory}/{shard}"
    return {
        "examples_audited": blocks.examples,
        "audit_by_code": {code: len(found) for code, found in flagged.items()},
        AUDIT_PLACES: {
            code: [place(split, path, first_row + int(rows[i]), int(index[i])) for i in found[:PLACES_KEPT]]
            for code, found in flagged.items()
        },
    }


def _flagged(audit: ShardAudit, blocks: PackedBlocks) -> dict[str, np.ndarray]:
    """``audit_columns`` with the run's facts, or in a mixture with each source's facts for its own examples."""
    sources = getattr(blocks, "source_ids", None)
    if not audit.by_source or sources is None:
        return audit_columns(audit.facts, blocks)
    sources = np.asarray(sources)
    found: dict[str, np.ndarray] = {}
    for source_id, facts in enumerate(audit.by_source):
        if not (sources == source_id).any():
            continue
        for code, examples in audit_columns(facts, blocks).items():
            own = examples[sources[examples] == source_id]
            if len(own):
                found[code] = np.union1d(found.get(code, np.zeros(0, np.int64)), own).astype(np.int64)
    return {code: found[code] for code in FINDINGS if code in found}


def _flat(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A list column's offsets (from 0) and values, as numpy, without copying what need not be copied."""
    offsets = column.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], column.flatten().to_numpy(zero_copy_only=False)


def blocks_of_batch(batch: pa.RecordBatch) -> PackedBlocks:
    """The rows of a record batch of block columns as ``PackedBlocks`` (what ``table_of`` made of them)."""
    row_offsets, input_ids = _flat(batch.column("input_ids"))
    seq_len_offsets, seq_lens = _flat(batch.column("seq_lens"))
    return PackedBlocks(
        row_offsets=row_offsets,
        input_ids=input_ids,
        labels=_flat(batch.column("labels"))[1],
        attention_mask=_flat(batch.column("attention_mask"))[1],
        position_ids=_flat(batch.column("position_ids"))[1],
        seq_len_offsets=seq_len_offsets,
        seq_lens=seq_lens,
        source_ids=(_flat(batch.column("source_id"))[1] if "source_id" in batch.schema.names else None),
    )
