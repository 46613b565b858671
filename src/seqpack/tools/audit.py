"""``seqpack audit``: read every block of a finished dataset and count what is wrong with its examples.

The checks themselves are in :mod:`seqpack.audit`; this module reads the shards (every split, every generation,
through :mod:`seqpack.dataset`), counts findings per code, keeps the first few examples of each and decodes them
the way ``seqpack inspect`` does (masked text dim, or ``⟦…⟧`` in plain mode).

    audit = audit_dataset("out/")
    print("\\n".join(render_audit(audit, color=False)))
    sys.exit(audit.exit_code)     # 0: no findings, 1: some

Only the findings' examples are decoded, so a clean pair dataset needs no tokenizer; a chat dataset needs it
to know its end-of-turn tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from seqpack.audit import FINDINGS, AuditFacts, audit_block, end_of_turn_ids_of, for_sources
from seqpack.dataset import ShardSet, open_manifest
from seqpack.schemas import Manifest
from seqpack.schemas.columns import SOURCE_ID
from seqpack.tools.blocks import (
    ExampleView,
    LoadedTokenizer,
    NoSuchBlock,
    example_view,
    load_dataset_tokenizer,
    render_example,
)

SHOWN = 3
"""Examples kept and decoded per finding code."""


class NoSuchSplit(NoSuchBlock):
    """``--split`` names a split the dataset does not have: a usage error."""


@dataclass(frozen=True)
class Place:
    """Where an example lies: its split, its block (row in the split, as ``inspect --block`` counts), its index
    in the block (0 = first), and its tokens."""

    split: str
    block: int
    example: int
    ids: np.ndarray = field(compare=False, repr=False)
    labels: np.ndarray = field(compare=False, repr=False)

    def where(self) -> str:
        return f"split {self.split}, block {self.block}, example #{self.example + 1}"


@dataclass
class Audit:
    """Counts per finding code and the first examples of each, before rendering."""

    url: str
    examples: int = 0
    blocks: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[Place]] = field(default_factory=dict)
    views: dict[str, list[ExampleView]] = field(default_factory=dict)
    tokenizer_warning: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when nothing was found, 1 otherwise (a scheduler can stop before training)."""
        return 1 if self.counts else 0

    def add(self, code: str, place: Place) -> None:
        self.counts[code] += 1
        kept = self.samples.setdefault(code, [])
        if len(kept) < SHOWN:
            kept.append(place)


def audit_dataset(url: str, *, tokenizer: str | None = None, splits: Sequence[str] = ()) -> Audit:
    """Audit every example of ``splits`` (default: all) across all generations; decode the kept examples with
    the dataset's tokenizer (or ``tokenizer``). Raises ``DatasetFormatError`` for a bad dataset, ``NoSuchSplit``
    for a split it lacks and ``InspectError`` when there are findings to show but the tokenizer cannot be loaded."""
    manifest = open_manifest(url)
    loaded, turns = _chat_tokenizer(url, manifest, tokenizer)
    facts = AuditFacts.of(manifest, turns)
    by_source = for_sources(manifest, turns)  # a mixture: each example checked as its source was built
    audit = Audit(url)
    missing = [split for split in splits if split not in manifest.splits]
    if missing:
        raise NoSuchSplit(f"{url} has no split {', '.join(map(repr, missing))}; it has {', '.join(manifest.splits)}")
    for split in splits or list(manifest.splits):
        _audit_split(audit, facts, ShardSet.open(url, split=split), by_source)
    if audit.samples:
        loaded = loaded or load_dataset_tokenizer(url, manifest, tokenizer)
        audit.tokenizer_warning = loaded.warning
        audit.views = {
            code: [example_view(loaded.decode, place.ids, place.labels) for place in places]
            for code, places in audit.samples.items()
        }
    return audit


def _chat_tokenizer(url: str, manifest: Manifest, tokenizer: str | None) -> tuple[LoadedTokenizer | None, set[int]]:
    """For a chat dataset, its tokenizer and the ids of its end-of-turn tokens (the manifest does not list them);
    for a pair dataset, nothing (the tokenizer is loaded only if there are findings to show)."""
    templates = {(manifest.config or {}).get("template")} | {source.get("template") for source in manifest.sources}
    if "chat" not in templates:
        return None, set()
    loaded = load_dataset_tokenizer(url, manifest, tokenizer)
    return loaded, end_of_turn_ids_of(loaded.tokenizer.get_vocab())


def _audit_split(audit: Audit, facts: AuditFacts, shards: ShardSet, by_source: list[AuditFacts]) -> None:
    row = 0
    try:
        for unit in range(shards.num_units):
            table = shards.read_unit(unit)
            columns = {name: table.column(name).to_pylist() for name in table.column_names}
            for values in zip(*(columns[name] for name in columns), strict=True):
                block = dict(zip(columns, values, strict=True))
                audit.blocks += 1
                audit.examples += len(block["seq_lens"])
                _audit_row(audit, facts, shards.split, row, block, by_source)
                row += 1
    finally:
        shards.close()


def _audit_row(audit: Audit, facts: AuditFacts, split: str, row: int, block: dict[str, list[int]],
               by_source: list[AuditFacts]) -> None:
    arrays = {name: np.asarray(block[name], dtype=np.int64) for name in
              ("input_ids", "labels", "attention_mask", "position_ids", "seq_lens")}
    starts = np.concatenate([[0], np.cumsum(arrays["seq_lens"])])
    sources = np.asarray(block[SOURCE_ID]) if by_source and SOURCE_ID in block else None
    for finding in audit_block(facts, **arrays, source_ids=sources, by_source=by_source):
        start, end = int(starts[finding.example]), int(starts[finding.example + 1])
        place = Place(split, row, finding.example, arrays["input_ids"][start:end], arrays["labels"][start:end])
        audit.add(finding.code, place)


def render_audit(audit: Audit, *, color: bool) -> Iterator[str]:
    """A summary line, then one line per finding code (count and meaning), then each code's examples."""
    noun = "example" if audit.examples == 1 else "examples"
    yield f"{audit.url} · {audit.examples:,} {noun} in {audit.blocks:,} blocks audited"
    if not audit.counts:
        yield "no findings"
        return
    width = max(len(code) for code in audit.counts)
    for code in FINDINGS:
        if code in audit.counts:
            yield f"{code.ljust(width)}  {audit.counts[code]:>8,}  {FINDINGS[code]}"
    for code in FINDINGS:
        for place, view in zip(audit.samples.get(code, []), audit.views.get(code, []), strict=False):
            yield ""
            yield f"{code}: {place.where()}"
            yield render_example(place.example + 1, view, width=len(f"#{place.example + 1}") + 2, color=color)
