"""Which format a file holds, from its name: the suffixes seqpack reads, and the compressions it reads through.

    >>> detect_format("data/part-0.jsonl.gz")
    'jsonl'
"""

from __future__ import annotations

from seqpack.inputs.records import InputError

FORMATS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".jsonlines": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".csv": "csv",
    ".tsv": "tsv",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".lzma", ".deflate")
"""The suffixes Beam's ``CompressionTypes.AUTO`` decompresses."""
_SEEKABLE_FORMATS = ("parquet", "arrow")


def detect_format(path: str) -> str:
    """The format of ``path`` from its extension, looking through a compression suffix (``a.jsonl.gz``)."""
    name = path.lower()
    compression = next((s for s in COMPRESSION_SUFFIXES if name.endswith(s)), "")
    stem = name[: len(name) - len(compression)]
    fmt = next((f for ext, f in FORMATS.items() if stem.endswith(ext)), None)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(
            f"{path}: unsupported file type; seqpack reads {known} (optionally {'/'.join(COMPRESSION_SUFFIXES)}"
            "-compressed) and Hugging Face datasets directories saved with save_to_disk"
        )
    if compression and fmt in _SEEKABLE_FORMATS:
        raise InputError(
            f"{path}: {fmt} files need random access and cannot be read through {compression} compression; "
            f"decompress it (they compress their own pages)"
        )
    return fmt


def format_or_none(path: str) -> str | None:
    """``detect_format``, or None for a file of no format seqpack reads (a directory skips it)."""
    try:
        return detect_format(path)
    except InputError:
        if path.lower().endswith(tuple(FORMATS) + COMPRESSION_SUFFIXES):
            raise  # a known format that cannot be read (compressed Parquet): say so rather than skip it
        return None
