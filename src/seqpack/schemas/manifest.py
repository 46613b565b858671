"""``manifest.json``: written last, it marks a dataset as complete and lists every shard with its checksum.

A reader must refuse a directory without a manifest (an unfinished or foreign dataset), a manifest of an
unknown format version, and shard paths that would leave the dataset directory.

A dataset is a list of committed **generations** (format version 2): the first run commits generation 1, each
``seqpack run --append`` adds one with the inputs no earlier generation consumed, ``seqpack compact`` replaces
several with one. Each generation lists its own shards, files and consumed inputs; the manifest's top-level
``splits`` and ``files`` are their union, so a reader that ignores generations reads the whole dataset. A
version-1 manifest is read as a dataset of one generation whose inputs were not recorded.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from seqpack.schemas.columns import FORMAT_NAME, FORMAT_VERSION, READABLE_FORMAT_VERSIONS, shard_schema

MANIFEST_NAME = "manifest.json"
STATS_NAME = "stats.json"


class DatasetFormatError(ValueError):
    """A dataset directory or shard is missing, incomplete, corrupt or of another format."""


def safe_relative_path(path: str) -> str:
    """Return ``path`` if it is a relative POSIX path that stays inside the dataset, else raise.

    Manifests are data: a hostile one must not make a reader open ``/etc/passwd`` or ``../../secrets``.
    """
    if not path or path.startswith(("/", "\\")) or "://" in path or ":" in path.split("/")[0]:
        raise DatasetFormatError(f"shard path {path!r} in the manifest is not a relative path inside the dataset")
    normalized = posixpath.normpath(path)
    if normalized.startswith("..") or "\\" in path or normalized != path:
        raise DatasetFormatError(f"shard path {path!r} in the manifest leaves the dataset directory")
    return path


def schema_description(with_sources: bool = False) -> list[dict[str, str]]:
    """The block schema as plain JSON, recorded in the manifest so readers can check it without a shard (a
    mixture's has the ``source_id`` column)."""
    return [{"name": f.name, "type": str(f.type)} for f in shard_schema(with_sources)]


@dataclass(frozen=True)
class ShardInfo:
    path: str
    """Relative to the dataset directory, e.g. ``train/part-00000-of-00004.parquet``."""
    rows: int
    examples: int
    tokens: int
    """Real (non-padding) tokens."""
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    rows: int
    examples: int
    tokens: int
    shards: list[ShardInfo]

    @classmethod
    def of(cls, shards: list[ShardInfo]) -> SplitInfo:
        """A split of these shards, its totals their sums."""
        return cls(
            rows=sum(s.rows for s in shards),
            examples=sum(s.examples for s in shards),
            tokens=sum(s.tokens for s in shards),
            shards=shards,
        )


@dataclass(frozen=True)
class TokenizerInfo:
    name: str
    vocab_size: int
    pad_id: int
    bos_id: int | None
    eos_id: int | None
    fingerprint: str
    added_tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsumedInput:
    """One input file a generation read, identified by its content: a later ``--append`` skips it (under any
    name) and reports it if the file at ``path`` no longer has this content."""

    path: str
    """As the run resolved it: a local path or a URL (``gs://b/pairs/day1.jsonl``)."""
    size: int
    sha256: str
    """Of the file's bytes, computed by the job while it read them."""
    modified: float
    """The last-modified time the filesystem reported (seconds): with ``size``, the quick check that lets a
    later run skip hashing an unchanged file."""
    start: int = 0
    stop: int = -1
    """The byte range consumed, ``start:stop``; a generation consumes whole files, so ``0:size``."""


@dataclass(frozen=True)
class GenerationInfo:
    """One committed generation: its directory, shards, other files, and the inputs it consumed."""

    id: int
    """1, 2, ...: the number of its directory (``v000003`` is generation 3); ids only grow."""
    directory: str
    splits: dict[str, SplitInfo]
    files: list[str]
    """Its files besides the shards (``stats.json``, rejected records, dedup keys), relative to the dataset."""
    inputs: list[ConsumedInput]
    created_by: str
    committed_at: str = ""
    """UTC, ISO 8601: when its commit was prepared."""
    replaces: list[int] = field(default_factory=list)
    """For a generation written by ``seqpack compact``: the ids of the generations it replaced."""
    examples_digest: str = ""
    """For a compacted generation: the order-free digest of the examples of the generations it replaced, which
    ``seqpack verify`` recomputes from its shards (``dataset.verify``)."""

    def shard_paths(self) -> list[str]:
        return [shard.path for split in self.splits.values() for shard in split.shards]

    def path_of(self, name: str) -> str:
        """Where the generation keeps ``name`` (``stats.json``, ``rejected/rejected.jsonl``), relative to the
        dataset directory (a dataset in the older flat layout keeps it at the top)."""
        return f"{self.directory}/{name}" if self.directory else name

    @property
    def rows(self) -> int:
        return sum(split.rows for split in self.splits.values())

    @property
    def examples(self) -> int:
        return sum(split.examples for split in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(split.tokens for split in self.splits.values())


def merged_splits(generations: list[GenerationInfo]) -> dict[str, SplitInfo]:
    """The generations' splits as one: each split's shards in generation order, totals summed."""
    shards: dict[str, list[ShardInfo]] = {}
    for generation in generations:
        for name, split in generation.splits.items():
            shards.setdefault(name, []).extend(split.shards)
    return {name: SplitInfo.of(infos) for name, infos in sorted(shards.items())}


@dataclass(frozen=True)
class Manifest:
    max_length: int
    packing: str
    file_format: str
    """``parquet`` or ``arrow``."""
    tokenizer: TokenizerInfo
    splits: dict[str, SplitInfo]
    config: dict[str, Any]
    created_by: str
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    schema: list[dict[str, str]] = field(default_factory=schema_description)
    revision: int = 0
    """1 for a dataset's first commit, +1 for each ``--overwrite``; 0 in datasets written before revisions."""
    directory: str = ""
    """The revision's directory (``v000001``), which holds every file below; "" for the older flat layout."""
    files: list[str] = field(default_factory=list)
    """Every file of the revision besides the shards (stats, rejected records, tokenizer), relative to the
    dataset directory: with the shards, exactly the files a later commit may delete."""
    generations: list[GenerationInfo] = field(default_factory=list)
    """Oldest first. ``splits`` and ``files`` are their union; ``revision`` and ``directory`` are the newest's."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Format 3, a mixture only: its sources in id order, each ``{"id", "name", "weight", ...its options}`` (as
    ``RunConfig.sources``); the shards' ``source_id`` is an index into this list. Empty otherwise."""

    @property
    def source_names(self) -> list[str]:
        return [source["name"] for source in self.sources]

    def __post_init__(self) -> None:
        if not self.generations:  # a manifest built without generations is one generation (as a version-1 one)
            object.__setattr__(self, "generations", [_only_generation(self)])

    @property
    def inputs_recorded(self) -> bool:
        """Whether the dataset knows which inputs it consumed (format 2): only then can ``--append`` add to it."""
        return self.format_version >= 2

    def generation(self, generation_id: int) -> GenerationInfo:
        for generation in self.generations:
            if generation.id == generation_id:
                return generation
        raise DatasetFormatError(
            f"the dataset has no generation {generation_id}; it has {', '.join(str(g.id) for g in self.generations)}"
        )

    def restricted_to(self, generation_ids: list[int]) -> Manifest:
        """The same dataset reduced to some of its generations (their shards and files only)."""
        chosen = [self.generation(i) for i in sorted(set(generation_ids))]
        return replace(
            self,
            generations=chosen,
            splits=merged_splits(chosen),
            files=[path for generation in chosen for path in generation.files],
        )

    def path_of(self, name: str) -> str:
        """Where the revision keeps ``name`` (``stats.json``, ``tokenizer``), relative to the dataset directory."""
        return f"{self.directory}/{name}" if self.directory else name

    def shard_paths(self) -> list[str]:
        return [shard.path for split in self.splits.values() for shard in split.shards]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate a manifest; every problem is a ``DatasetFormatError`` naming ``where``."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(
                f"{where} is not valid JSON ({exc}); the dataset is incomplete or corrupt"
            ) from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{where} is not a seqpack manifest")
        version = raw.get("format_version")
        if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
            raise DatasetFormatError(
                f"{where} has format version {version!r}; this seqpack reads versions "
                f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))} (it writes {FORMAT_VERSION}). "
                "Upgrade seqpack or rebuild the dataset."
            )
        sources = _parse_sources(raw.get("sources", []), where)
        if raw.get("schema") != schema_description(bool(sources)):
            raise DatasetFormatError(f"{where} describes a schema that does not match this seqpack's block schema")
        try:
            splits = _parse_splits(raw["splits"])
            manifest = cls(
                max_length=raw["max_length"],
                packing=raw["packing"],
                file_format=raw["file_format"],
                tokenizer=TokenizerInfo(**raw["tokenizer"]),
                splits=splits,
                config=raw["config"],
                created_by=raw["created_by"],
                format=raw["format"],
                format_version=raw["format_version"],
                schema=raw["schema"],
                revision=raw.get("revision", 0),
                directory=raw.get("directory", ""),
                files=list(raw.get("files", [])),
                sources=sources,
            )
            if version >= 2:
                if not raw["generations"]:
                    raise DatasetFormatError(f"{where} lists no generation ({_FIX})")
                manifest = replace(manifest, generations=[_parse_generation(g) for g in raw["generations"]])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DatasetFormatError(f"{where} is missing or has a malformed field: {exc}") from exc
        check_listing(manifest, where)
        paths = [*manifest.shard_paths(), *manifest.files, *([manifest.directory] if manifest.directory else [])]
        for generation in manifest.generations:
            directory = [generation.directory] if generation.directory else []
            paths += [*generation.shard_paths(), *generation.files, *directory]
        for path in paths:
            safe_relative_path(path)
        check_generations(manifest, where)
        return manifest


def _parse_sources(raw: Any, where: str) -> list[dict[str, Any]]:
    """A manifest's ``sources``: a list of mappings whose ids are their positions and names distinct strings."""
    if not isinstance(raw, list) or not all(isinstance(source, dict) for source in raw):
        raise DatasetFormatError(f"{where}: sources is not a list of mappings ({_FIX})")
    names = [source.get("name") for source in raw]
    if [source.get("id") for source in raw] != list(range(len(raw))) or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise DatasetFormatError(f"{where}: sources must have ids 0, 1, ... and distinct names ({_FIX})")
    return [dict(source) for source in raw]


def _parse_splits(raw: dict[str, Any]) -> dict[str, SplitInfo]:
    return {
        name: SplitInfo(
            rows=s["rows"],
            examples=s["examples"],
            tokens=s["tokens"],
            shards=[ShardInfo(**shard) for shard in s["shards"]],
        )
        for name, s in raw.items()
    }


def _parse_generation(raw: dict[str, Any]) -> GenerationInfo:
    fields = {**raw, "splits": _parse_splits(raw["splits"]), "inputs": [ConsumedInput(**i) for i in raw["inputs"]]}
    return GenerationInfo(**fields)


def _only_generation(manifest: Manifest) -> GenerationInfo:
    """A version-1 dataset is one generation whose inputs were not recorded."""
    return GenerationInfo(
        id=manifest.revision, directory=manifest.directory, splits=manifest.splits, files=list(manifest.files),
        inputs=[], created_by=manifest.created_by,
    )


def check_generations(manifest: Manifest, where: str) -> None:
    """The generations must be what the top-level listing says: ids growing, the newest naming ``revision`` and
    ``directory``, and their shards and files, in order, exactly the top-level ones."""
    generations = manifest.generations
    if not generations:
        raise DatasetFormatError(f"{where} lists no generation ({_FIX})")
    ids = [g.id for g in generations]
    if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids) or ids != sorted(set(ids)):
        raise DatasetFormatError(f"{where}: generation ids {ids} are not distinct growing integers ({_FIX})")
    newest = generations[-1]
    if (newest.id, newest.directory) != (manifest.revision, manifest.directory):
        raise DatasetFormatError(
            f"{where}: the newest generation is {newest.id} in {newest.directory!r}, but the manifest names "
            f"revision {manifest.revision} in {manifest.directory!r} ({_FIX})"
        )
    merged = merged_splits(generations)
    listed = {name: split.shards for name, split in manifest.splits.items() if split.shards}
    if {n: split.shards for n, split in merged.items() if split.shards} != listed:
        raise DatasetFormatError(f"{where}: the generations' shards are not the shards the manifest lists ({_FIX})")
    if [path for g in generations for path in g.files] != list(manifest.files):
        raise DatasetFormatError(f"{where}: the generations' files are not the files the manifest lists ({_FIX})")
    for generation in generations:
        for consumed in generation.inputs:
            _count(consumed.size, f"{where}: generation {generation.id} input {consumed.path!r} size")


# --------------------------------------------------------------------------------- listing and counts

_MAX_COUNT = 2**63 - 1
"""Counts are int64 for every reader (numpy, Arrow); a larger one is not a count."""
_FIX = "the manifest was edited or is corrupt: restore manifest.json from the original output, or rebuild"


def check_listing(manifest: Manifest, where: str) -> None:
    """Refuse a manifest whose files or counts cannot be true, before any reader trusts them.

    Every file is listed once; counts are integers from 0 to 2**63 - 1; a split's totals are the sums over
    its shards; and in every shard rows <= examples <= tokens <= rows * max_length (a row holds at least one
    example, an example at least one token, a row at most max_length tokens).
    """
    max_length = _count(manifest.max_length, f"{where}: max_length")
    if max_length < 1:
        raise DatasetFormatError(f"{where}: max_length is {max_length}; it must be at least 1 ({_FIX})")
    seen: set[str] = set()
    for path in [*manifest.shard_paths(), *manifest.files]:
        if not isinstance(path, str):
            raise DatasetFormatError(f"{where} lists a file path that is not a string: {path!r} ({_FIX})")
        if path in seen:
            raise DatasetFormatError(f"{where} lists {path} twice; every file must be listed once ({_FIX})")
        seen.add(path)
    for name, split in manifest.splits.items():
        for shard in split.shards:
            _check_shard(shard, max_length, f"{where}: shard {shard.path}")
        for total in ("rows", "examples", "tokens"):
            listed = _count(getattr(split, total), f"{where}: split {name!r} {total}")
            added = sum(getattr(shard, total) for shard in split.shards)
            if listed != added:
                raise DatasetFormatError(
                    f"{where}: split {name!r} says {listed:,} {total} but its {len(split.shards)} shards add up to "
                    f"{added:,} ({_FIX})"
                )


def _check_shard(shard: ShardInfo, max_length: int, what: str) -> None:
    rows, examples, tokens = (_count(getattr(shard, f), f"{what} {f}") for f in ("rows", "examples", "tokens"))
    _count(shard.bytes, f"{what} bytes")
    if not rows <= examples <= tokens <= rows * max_length:
        raise DatasetFormatError(
            f"{what} has {rows:,} rows, {examples:,} examples and {tokens:,} tokens; it must be rows <= examples "
            f"<= tokens <= rows * max_length ({rows * max_length:,}) ({_FIX})"
        )
    if not isinstance(shard.sha256, str) or len(shard.sha256) != 64 or shard.sha256.strip("0123456789abcdef"):
        raise DatasetFormatError(f"{what} sha256 is {shard.sha256!r}, not 64 lowercase hex digits ({_FIX})")


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise DatasetFormatError(f"{what} is {value!r}; it must be an integer from 0 to 2**63 - 1 ({_FIX})")
    return value
