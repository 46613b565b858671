"""``manifest.json``: written last, it marks a dataset as complete and lists every shard with its checksum.

A reader must refuse a directory without a manifest (an unfinished or foreign dataset), a manifest of an
unknown format version, and shard paths that would leave the dataset directory.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any

from seqpack.schemas.columns import BLOCK_SCHEMA, FORMAT_NAME, FORMAT_VERSION

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


def schema_description() -> list[dict[str, str]]:
    """The block schema as plain JSON, recorded in the manifest so readers can check it without a shard."""
    return [{"name": f.name, "type": str(f.type)} for f in BLOCK_SCHEMA]


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
        if version != FORMAT_VERSION:
            raise DatasetFormatError(
                f"{where} has format version {version!r}; this seqpack reads version {FORMAT_VERSION}. "
                "Upgrade seqpack or rebuild the dataset."
            )
        if raw.get("schema") != schema_description():
            raise DatasetFormatError(f"{where} describes a schema that does not match this seqpack's block schema")
        try:
            splits = {
                name: SplitInfo(
                    rows=s["rows"],
                    examples=s["examples"],
                    tokens=s["tokens"],
                    shards=[ShardInfo(**shard) for shard in s["shards"]],
                )
                for name, s in raw["splits"].items()
            }
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
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DatasetFormatError(f"{where} is missing or has a malformed field: {exc}") from exc
        check_listing(manifest, where)
        for path in [*manifest.shard_paths(), *manifest.files, *([manifest.directory] if manifest.directory else [])]:
            safe_relative_path(path)
        return manifest


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
