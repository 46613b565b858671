"""``seqpack verify``: every shard against the manifest, byte for byte, before a long training run trusts it.

A dataset is checked one generation after the other (``_verify_generation``), so each gets its line in the summary
and a check that concerns a whole generation has one place to go.

    summary = verify_dataset("gs://bucket/out")         # sha256 of every shard, names the bad one
    summary.generations[0].examples                      # what the oldest generation holds
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqpack.dataset.digest import generation_digest
from seqpack.dataset.footers import COLUMNS, IO_THREADS, open_shard, shard_errors
from seqpack.dataset.location import Location
from seqpack.dataset.manifest_io import choose_splits, read_manifest
from seqpack.schemas import MANIFEST_NAME, DatasetFormatError, Manifest, ShardInfo
from seqpack.schemas.columns import SOURCE_ID
from seqpack.schemas.manifest import GenerationInfo

_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`verify_dataset` checked in one generation (its shards of the splits asked for)."""

    id: int
    directory: str
    shards: int
    bytes: int
    rows: int
    examples: int
    tokens: int

    def line(self) -> str:
        """``generation 2  v000002  3 shards  41 rows  402 examples  12,345 tokens  OK``."""
        shards = f"{self.shards:,} shard{'s' * (self.shards != 1)}"
        return (
            f"generation {self.id}  {self.directory or '.'}  {shards}  {self.rows:,} rows  {self.examples:,} examples"
            f"  {self.tokens:,} tokens  OK"
        )


@dataclass(frozen=True)
class VerifySummary:
    """What :func:`verify_dataset` checked: the totals, and each generation's share (oldest first)."""

    splits: int
    shards: int
    bytes: int
    rows: int
    examples: int = 0
    tokens: int = 0
    generations: tuple[GenerationSummary, ...] = ()

    def __str__(self) -> str:
        return f"{self.shards} shards in {self.splits} splits, {self.bytes:,} bytes, {self.rows:,} rows checked"

    def lines(self, url: str) -> list[str]:
        """What ``seqpack verify`` prints: one OK line, then for a dataset of several generations one line per
        generation and their total."""
        lines = [f"{url}: OK ({self})"]
        if len(self.generations) > 1:
            lines += [f"  {generation.line()}" for generation in self.generations]
            lines.append(
                f"  total: {len(self.generations)} generations  {self.shards:,} shards  {self.rows:,} rows  "
                f"{self.examples:,} examples  {self.tokens:,} tokens  OK"
            )
        return lines


def verify_dataset(
    url: str, *, splits: list[str] | None = None, storage_options: dict[str, Any] | None = None
) -> VerifySummary:
    """Check every shard against the manifest: present, same size, same sha256, block schema, row count; one
    generation after the other.

    Raises one ``DatasetFormatError`` that names every bad file; prints nothing.
    """
    location = Location.of(url, storage_options)
    manifest = read_manifest(location)[0]
    chosen = choose_splits(manifest, splits, location)
    checked: list[GenerationSummary] = []
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        for generation in manifest.generations:
            summary, found = _verify_generation(location, manifest, generation, chosen, pool)
            checked.append(summary)
            problems += found
    shards = sum(g.shards for g in checked)
    if problems:
        raise DatasetFormatError(
            f"{len(problems)} of {shards} shards in {location.url} do not match {MANIFEST_NAME}:\n  "
            + "\n  ".join(problems)
            + "\nRe-copy these files from the original output, or rebuild the dataset."
        )
    if splits is None:  # a digest covers every split of its generation
        wrong = [p for g in manifest.generations if g.examples_digest
                 if (p := _check_examples_digest(location, manifest, g))]
        if wrong:
            raise DatasetFormatError(
                f"{location.url}: {len(wrong)} compacted generation{'s' * (len(wrong) != 1)} do not hold the "
                "examples they replaced:\n  " + "\n  ".join(wrong)
                + f"\n{MANIFEST_NAME} or the shards were edited: restore them from the original output, or rebuild"
            )
    return VerifySummary(
        splits=len(chosen),
        shards=shards,
        bytes=sum(g.bytes for g in checked),
        rows=sum(g.rows for g in checked),
        examples=sum(g.examples for g in checked),
        tokens=sum(g.tokens for g in checked),
        generations=tuple(checked),
    )


def _verify_generation(
    location: Location, manifest: Manifest, generation: GenerationInfo, splits: list[str], pool: Executor
) -> tuple[GenerationSummary, list[str]]:
    """Check one generation's shards of ``splits``: what was checked, and a line per problem found.

    Every check that concerns a generation as a whole belongs here, after its shards are checked."""
    shards = [shard for name in splits if name in generation.splits for shard in generation.splits[name].shards]
    problems = [p for p in pool.map(lambda s: _verify_shard(location, manifest, s), shards) if p]
    summary = GenerationSummary(
        id=generation.id,
        directory=generation.directory,
        shards=len(shards),
        bytes=sum(s.bytes for s in shards),
        rows=sum(s.rows for s in shards),
        examples=sum(s.examples for s in shards),
        tokens=sum(s.tokens for s in shards),
    )
    return summary, problems


def _verify_shard(location: Location, manifest: Manifest, shard: ShardInfo) -> str | None:
    """One line describing what is wrong with ``shard``, or None when it matches the manifest."""
    name = location.name(shard.path)
    path = location.path(shard.path)
    if not location.fs.exists(path):
        return f"{name}: missing"
    size = location.fs.size(path)
    if size != shard.bytes:
        return f"{name}: {size} bytes, the manifest says {shard.bytes} (truncated or replaced)"
    digest = hashlib.sha256()
    with location.fs.open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != shard.sha256:
        return f"{name}: sha256 {digest.hexdigest()} does not match the manifest's {shard.sha256} (corrupt)"
    try:
        units = open_shard(location, manifest.file_format, shard).unit_rows
        examples, tokens = _shard_counts(location, manifest.file_format, shard)
    except DatasetFormatError as exc:
        return str(exc)
    if sum(units) != shard.rows:
        return f"{name}: {sum(units)} rows, the manifest says {shard.rows}"
    if (examples, tokens) != (shard.examples, shard.tokens):
        return (
            f"{name}: {examples:,} examples and {tokens:,} tokens, the manifest says {shard.examples:,} and "
            f"{shard.tokens:,}"
        )
    if manifest.sources:
        return _source_problem(location, manifest, shard)
    return None


def _source_problem(location: Location, manifest: Manifest, shard: ShardInfo) -> str | None:
    """A mixture's shard (format 3) has a ``source_id`` per example, each an id of the manifest's sources."""
    name = location.name(shard.path)
    path = location.path(shard.path)
    with shard_errors(location, manifest.file_format, shard), location.fs.open(path, "rb") as handle:
        if manifest.file_format == "parquet":
            file = pq.ParquetFile(handle, page_checksum_verification=True)
            if SOURCE_ID not in file.schema_arrow.names:
                return f"{name}: no {SOURCE_ID} column, though the manifest lists sources"
            table = file.read(columns=["seq_lens", SOURCE_ID])
        else:
            table = pa.ipc.open_file(handle).read_all()
            if SOURCE_ID not in table.column_names:
                return f"{name}: no {SOURCE_ID} column, though the manifest lists sources"
    if not pc.list_value_length(table.column(SOURCE_ID)).equals(pc.list_value_length(table.column("seq_lens"))):
        return f"{name}: rows of {SOURCE_ID} and seq_lens differ in length"
    ids = pc.list_flatten(table.column(SOURCE_ID))
    if len(ids) and not 0 <= pc.min(ids).as_py() <= pc.max(ids).as_py() < len(manifest.sources):
        return f"{name}: a {SOURCE_ID} is not one of the manifest's {len(manifest.sources)} sources"
    return None


def _check_examples_digest(location: Location, manifest: Manifest, generation: GenerationInfo) -> str | None:
    """One line if ``generation``'s shards do not hold the examples its ``examples_digest`` records (a compacted
    generation: the examples of the generations it replaced, ``seqpack compact``), else None."""
    try:
        found = str(generation_digest(location, manifest, generation))
    except DatasetFormatError as error:
        return f"generation {generation.id}: {error}"
    except ValueError as error:  # blocks whose seq_lens do not fit their rows
        return f"generation {generation.id}: its shards cannot be cut into examples ({error})"
    if found != generation.examples_digest:
        replaced = ", ".join(map(str, generation.replaces)) or "it replaced"
        return (
            f"generation {generation.id} ({generation.directory}): its examples digest is {found}, but it records "
            f"{generation.examples_digest} for the examples of generations {replaced}: its shards do not hold "
            "exactly those examples"
        )
    return None


def _shard_counts(location: Location, file_format: str, shard: ShardInfo) -> tuple[int, int]:
    """Examples and real tokens in a shard, from its small ``seq_lens`` column (one length per example)."""
    with shard_errors(location, file_format, shard):
        with location.fs.open(location.path(shard.path), "rb") as handle:
            if file_format == "parquet":
                table = pq.ParquetFile(handle, page_checksum_verification=True).read(columns=["seq_lens"])
            else:
                fields = [COLUMNS.index("seq_lens")]
                table = pa.ipc.open_file(handle, options=pa.ipc.IpcReadOptions(included_fields=fields)).read_all()
        lengths = pc.list_flatten(table.column("seq_lens"))
        return len(lengths), int(pc.sum(lengths, min_count=0).as_py())
