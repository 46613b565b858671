"""What the readers hand out: a ``Record`` or a ``Rejected`` per input record, and the ``InputFile`` they read.

Every record of every file comes out as exactly one ``Record`` (parsed fields and where they came from) or one
``Rejected`` (a reason code from ``seqpack.schemas.REASONS``, the raw bytes and a human detail), so that bad input
is counted and kept, never lost and never a crash.

    >>> Record({"source": "Hello", "target": "Bonjour"}, "pairs.jsonl:1")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

DEFAULT_MAX_RECORD_BYTES = 64 << 20
"""Records (lines, CSV rows, JSON array elements) above this size are rejected without being parsed."""
BATCH_ROWS = 1024
"""Records handed on per list by the readers that go a record at a time (and Parquet/Arrow rows turned into
Python dicts at a time); JSON lines come a block of lines per list."""


class InputError(ValueError):
    """The inputs cannot be read at all (nothing matches, an unsupported format): stop before any work."""


class NoInputFound(InputError):
    """An input pattern matches no file seqpack reads (yet): an error for a run, a wait for ``seqpack watch``."""


@dataclass(slots=True)
class Record:
    """One parsed input record. ``origin`` is ``path:N`` (N: 1-based line for JSONL/CSV, row for
    Parquet/Arrow, element for a JSON array), unique and stable across runs, so it can order output.

    Not frozen: one is made per input record, and a frozen dataclass takes twice as long to build."""

    fields: dict[str, Any]
    origin: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record (or a whole file) that could not be read, kept raw so it can be fixed and replayed."""

    reason: str
    origin: str
    raw: bytes
    detail: str = ""


@dataclass(frozen=True)
class InputFile:
    """A file to read, resolved before the pipeline starts; ``label`` prefixes the origins of its records."""

    path: str
    fmt: str
    label: str
    split: str | None = None
    """The split name for a file of a saved Hugging Face ``DatasetDict``."""
    start: int = 0
    stop: int | None = None
    """Read only bytes ``start:stop`` (JSON lines only; see ``seqpack.inputs.ranges``); ``start`` begins a line."""
    first_line: int = 1
    """The line number of the line at ``start``, so that origins stay ``file:line``."""
    part: tuple[int, int] = (0, 1)
    """(index, count) of this byte range among its file's ranges."""

    def __post_init__(self) -> None:
        # The label ends up in origins, which Beam encodes as UTF-8 and rejected.jsonl writes as JSON.
        object.__setattr__(self, "label", printable_path(self.label))

    @property
    def is_range(self) -> bool:
        return self.stop is not None


Item = Record | Rejected
OpenBinary = Callable[[str], BinaryIO]
"""Opens a file for reading, decompressing it by suffix (Beam's ``FileSystems.open`` in a pipeline)."""
Match = Callable[[str], Sequence[str]]
"""Lists the files a glob matches (Beam's ``FileSystems.match`` in a pipeline)."""


def printable_path(path: str) -> str:
    """``path`` as valid UTF-8 text, for origins and messages: a byte of a file name that is not UTF-8 (which
    Python keeps as a surrogate escape, so the file still opens) is written ``\\xNN``, the same on every run.

        >>> printable_path(os.fsdecode(b"bad\\xffname.jsonl"))
        'bad\\\\xffname.jsonl'
    """
    if path.isascii():
        return path
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to (e.g. from JSON metadata)
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
