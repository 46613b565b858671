"""``seqpack status``: what a growing dataset holds, and what its inputs hold that it does not (yet).

A dataset grown with ``seqpack run --append`` records, per generation, every input file it consumed (path, size,
sha256). ``status`` lists the generations and their total, then sorts every input file as the next ``--append``
would (``seqpack.generations.plan_inputs``): consumed (by which generation), *new* (the backlog the next append
reads), a copy of consumed content (skipped), *changed* since a generation consumed it (never read again:
``--rebuild`` starts over), or consumed but missing. No Beam: files are listed and hashed through fsspec, local
paths keep the form the run recorded (``glob``, as Beam's local filesystem writes them), so a relative pattern
is read from the current directory, as ``--append`` reads it.

    status = dataset_status("out/")                          # the inputs the newest generation's run named
    status = dataset_status("out/", inputs=["in/*.jsonl"], rehash=True)
    print("\\n".join(status.lines())); exit(status.exit_code)  # 1 when a consumed input changed
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

import fsspec

from seqpack.dataset import open_manifest
from seqpack.generations import FoundFile, InputPlan, plan_inputs
from seqpack.inputs.records import InputError
from seqpack.inputs.resolve import expand_inputs
from seqpack.schemas import Manifest

CHANGED, MISSING, NEW, COPY, CONSUMED, UNLISTED = "changed", "missing", "new", "copy", "consumed", "unlisted"
EMPTY = "empty"
STATES = (CHANGED, MISSING, NEW, EMPTY, COPY, CONSUMED, UNLISTED)
"""Most urgent first: the order ``status`` lists the inputs in."""
EXIT_CHANGED = 1
"""``seqpack status`` exits with this when a consumed input changed since, so a scheduler can alert."""
_CHUNK = 8 << 20


@dataclass(frozen=True)
class InputState:
    """One input file and what the dataset knows of it."""

    path: str
    state: str
    """One of ``STATES``."""
    detail: str = ""


@dataclass
class DatasetStatus:
    """Everything ``seqpack status`` prints, before it is rendered."""

    url: str
    manifest: Manifest
    patterns: list[str]
    given: bool
    """Whether the patterns were passed (``--input``) rather than read from the manifest."""
    inputs: list[InputState] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Patterns that match nothing or cannot be listed: said, not fatal (the dataset is still described)."""

    def count(self, state: str) -> int:
        return sum(1 for entry in self.inputs if entry.state == state)

    @property
    def exit_code(self) -> int:
        return EXIT_CHANGED if self.count(CHANGED) else 0

    def lines(self) -> list[str]:
        return [*generation_lines(self.url, self.manifest), *self._input_lines()]

    def _input_lines(self) -> list[str]:
        if not self.manifest.inputs_recorded:
            return [f"inputs: not recorded (format version {self.manifest.format_version}): this dataset cannot tell "
                    "which inputs it consumed; `seqpack run --rebuild` writes one that can"]
        if not self.patterns:
            return ["inputs: none recorded in the manifest: pass --input GLOB to compare some with the dataset"]
        source = "given" if self.given else "the newest generation's --input"
        relative = any("://" not in p and not os.path.isabs(p) for p in self.patterns)
        where = f" (relative to {os.getcwd()}, as --append reads them)" if relative else ""
        lines = [f"inputs ({source}): {' '.join(self.patterns)}{where}"]
        lines += [f"  {problem}" for problem in self.problems]
        width = max((len(entry.state) for entry in self.inputs), default=0)
        for entry in self.inputs:
            detail = f"  ({entry.detail})" if entry.detail else ""
            lines.append(f"  {entry.state.ljust(width)}  {entry.path}{detail}")
        counts = [f"{self.count(state):,} {state}" for state in STATES if self.count(state)]
        lines.append(f"  {', '.join(counts) or 'no input file found'}")
        if self.count(NEW):
            lines.append(f"  {self.count(NEW):,} new: the next `seqpack run --append` reads them")
        if self.count(CHANGED):
            lines.append(
                f"  {self.count(CHANGED):,} changed after a generation consumed them: --append never reads a consumed "
                "path again; restore the file, give new content a new name, or start over with --rebuild"
            )
        return lines


def generation_lines(url: str, manifest: Manifest) -> list[str]:
    """The generations, oldest first, and their total, as aligned columns."""
    rows = [
        [f"generation {g.id}", g.directory or ".", g.committed_at or "-", _files(len(g.inputs)),
         f"{g.examples:,} examples", f"{g.tokens:,} tokens"]
        for g in manifest.generations
    ]
    generations = manifest.generations
    rows.append(["total", f"{len(generations)} generation{'s' * (len(generations) != 1)}", "",
                 _files(sum(len(g.inputs) for g in generations)), f"{sum(g.examples for g in generations):,} examples",
                 f"{sum(g.tokens for g in generations):,} tokens"])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    counts = {3, 4, 5}  # right-aligned
    table = [
        "  ".join(c.rjust(w) if i in counts else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    return [f"{url}:", *(f"  {line.rstrip()}" for line in table)]


def _files(count: int) -> str:
    return f"{count:,} file{'s' * (count != 1)} consumed"


# ------------------------------------------------------------------------------------------ the inputs


def dataset_status(url: str, *, inputs: Sequence[str] = (), rehash: bool = False) -> DatasetStatus:
    """Describe the dataset at ``url`` and sort the files of ``inputs`` (default: the patterns the newest
    generation's run was given) against what its generations consumed. ``rehash`` hashes every consumed file
    rather than trusting an unchanged size and modification time. Raises ``DatasetFormatError`` for a bad
    dataset; inputs that cannot be listed are reported in ``problems``."""
    manifest = open_manifest(url)
    patterns = list(inputs) or [str(p) for p in manifest.config.get("inputs") or []]
    status = DatasetStatus(url, manifest, patterns, given=bool(inputs))
    if not manifest.inputs_recorded or not patterns:
        return status
    found = []
    for path in _list_inputs(patterns, status.problems):
        try:
            found.append(FoundFile(path, *metadata(path)))
        except FileNotFoundError:  # deleted since it was listed: as if never listed
            continue
    plan = plan_inputs(found, manifest.generations, sha256_of=sha256_of, rehash=rehash)
    status.inputs = _states(plan, manifest)
    return status


def _list_inputs(patterns: Sequence[str], problems: list[str]) -> list[str]:
    """The input files the patterns name, as ``seqpack run`` resolves them; a pattern that fails is noted."""
    paths: set[str] = set()
    for pattern in patterns:
        try:
            paths |= {f.path for f in expand_inputs([pattern], match=match, open_binary=open_binary)}
        except InputError as error:
            problems.append(f"{pattern}: {error}")
    return sorted(paths)


def _states(plan: InputPlan, manifest: Manifest) -> list[InputState]:
    consumed_by = {c.path: g.id for g in manifest.generations for c in g.inputs}
    entries = [InputState(f.path, CONSUMED, f"generation {consumed_by[f.path]}") for f in plan.consumed]
    entries += [InputState(f.path, NEW) for f in plan.new]
    entries += [InputState(f.path, EMPTY, "not read until it has content") for f in plan.empty]
    entries += [
        InputState(f.path, COPY, f"same content as {original}, generation {consumed_by[original]}: not read again")
        for f, original in plan.copies
    ]
    entries += [
        InputState(c.path, CHANGED, f"generation {c.generation} consumed {c.consumed.size:,} bytes, sha256 "
                   f"{c.consumed.sha256[:12]}…; now {c.size:,} bytes, sha256 {c.sha256[:12]}…")
        for c in plan.changed
    ]
    for consumed in plan.missing:
        gone = not _exists(consumed.path)
        detail = "no longer there" if gone else "still there, but not matched by these inputs"
        entries.append(InputState(consumed.path, MISSING if gone else UNLISTED,
                                  f"consumed by generation {consumed_by[consumed.path]}; {detail}"))
    return sorted(entries, key=lambda entry: (STATES.index(entry.state), entry.path))


# ------------------------------------------------------------------------ files through fsspec (no Beam)


def match(pattern: str) -> list[str]:
    """The files (or the directory) a glob or path names. Local paths keep the pattern's form (relative stays
    relative), as ``seqpack run`` recorded them; ``gs://``/``s3://`` ones keep their scheme."""
    if "://" not in pattern:
        return glob.glob(pattern, recursive=True, include_hidden=True)
    scheme = pattern.split("://", 1)[0]
    fs, _ = fsspec.core.url_to_fs(pattern)
    return [f"{scheme}://{path.split('://', 1)[-1]}" for path in fs.glob(pattern)]


def open_binary(path: str) -> IO[bytes]:
    return cast(IO[bytes], fsspec.open(path, "rb").open())


def metadata(path: str) -> tuple[int, float]:
    """Size and modification time as ``seqpack run`` recorded them (``os.stat`` locally); where a store's time
    cannot be read, NaN, which never equals a recorded time, so the file is hashed instead."""
    if "://" not in path:
        status = os.stat(path)
        return status.st_size, status.st_mtime
    fs, plain = fsspec.core.url_to_fs(path)
    info: dict[str, Any] = fs.info(plain)
    try:
        modified = fs.modified(plain).timestamp()
    except (NotImplementedError, AttributeError, OSError, ValueError):
        modified = math.nan
    return int(info["size"]), modified


def sha256_of(path: str) -> str:
    """The sha256 of a file's bytes as stored (a compressed file is not decompressed), as the run computed it."""
    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _exists(path: str) -> bool:
    if "://" not in path:
        return os.path.isfile(path)
    fs, plain = fsspec.core.url_to_fs(path)
    return bool(fs.exists(plain))
