"""``seqpack inspect``: look at blocks the way the model will see them, decoded, masked text dim, trained text
highlighted.

``seqpack inspect OUT`` prints blocks of a finished dataset in the terminal; ``seqpack report`` renders the same
views as HTML. No Beam and no torch: the dataset is read through :mod:`seqpack.dataset` (any fsspec filesystem)
and decoded with the tokenizer the manifest names.

    views = inspect_blocks("out/", split="train", rows=[0, 7])
    print("\\n".join(render_block(views.blocks[0], color=False)))

Plain mode (pipes, ``--plain``/``--no-color``) marks text with characters rather than colours:
``⟦…⟧`` wraps text that takes no loss (label -100: the source, and each example's first token), text outside the
brackets is trained on, and every example starts on its own line with ``#N``. A newline inside the data shows as
``↵`` followed by a real line break; other control characters are escaped (``\\x1b``), so data cannot drive the
terminal.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqpack import IGNORE_INDEX
from seqpack.dataset import Location, ShardSet
from seqpack.schemas import TOKENIZER_DIR, Manifest
from seqpack.tokenizer import TokenizerError, fingerprint, load_tokenizer

MASK_OPEN, MASK_CLOSE = "⟦", "⟧"
NEWLINE_MARK = "↵"

# ANSI SGR sequences: dim for masked text, bold green for trained text, cyan example numbers.
_ANSI = {"masked": "\x1b[2m", "trained": "\x1b[1;32m", "number": "\x1b[36m", "header": "\x1b[1m"}
_RESET = "\x1b[0m"

_BIDI_CONTROLS = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), *range(0x7F, 0xA0), *_BIDI_CONTROLS]
    if code != 0x0A
}
_ESCAPES[0x09] = "\\t"
_ESCAPES[0x0D] = "\\r"

Decode = Callable[[Sequence[int]], str]


class InspectError(ValueError):
    """The blocks cannot be shown: for instance the tokenizer cannot be loaded."""


class NoSuchBlock(InspectError):
    """A block number outside the split: a usage error."""


class NoSuchGeneration(NoSuchBlock):
    """A generation the dataset does not have: a usage error."""


# ------------------------------------------------------------------------------------------------ the views


@dataclass(frozen=True)
class Span:
    """A run of tokens of one example that all take loss (``trained``) or all do not."""

    trained: bool
    text: str
    tokens: int


@dataclass(frozen=True)
class ExampleView:
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class BlockView:
    """One row of a shard, decoded: its examples in order, and how full it is."""

    split: str
    index: int
    """Row number in the split, counting across shards in manifest order (what ``--block`` takes); with
    ``generation``, counting from that generation's first row."""
    examples: tuple[ExampleView, ...]
    real_tokens: int
    length: int
    """Tokens in the row, padding included."""
    generation: int | None = None
    """Set when the block was picked among one generation's blocks (``inspect --generation``)."""

    @property
    def fill(self) -> float:
        return self.real_tokens / self.length if self.length else 0.0

    def summary(self) -> str:
        """The block's one-line summary: ``block 3 (train): 11 examples, 245 of 256 tokens real, fill 95.7%``."""
        count = len(self.examples)
        noun = "example" if count == 1 else "examples"
        where = self.split if self.generation is None else f"{self.split}, generation {self.generation}"
        return (
            f"block {self.index} ({where}): {count} {noun}, {self.real_tokens:,} of {self.length:,} "
            f"tokens real, fill {self.fill:.1%}"
        )


def decode_runs(decode: Decode, ids: Sequence[int], cuts: Sequence[int]) -> list[str]:
    """Decode ``ids[cuts[i]:cuts[i+1]]`` for every i, each run as a whole, never token by token.

    A run's text is taken as the growth of the decoded prefix (``decode(ids[:end])`` minus ``decode(ids[:start])``),
    so tokenizers that drop a leading space when decoding from the middle (SentencePiece) and characters whose bytes
    span several tokens come out as they are in the example. When the prefix does not extend cleanly (a cut through
    a multi-byte character), the run is decoded on its own.
    """
    texts: list[str] = []
    previous = ""
    for start, end in zip(cuts, cuts[1:], strict=False):
        whole = decode(ids[:end])
        if whole.startswith(previous) and not previous.endswith("\ufffd"):
            texts.append(whole[len(previous) :])
        else:
            texts.append(decode(ids[start:end]))
        previous = whole
    return texts


def example_view(decode: Decode, ids: np.ndarray, labels: np.ndarray) -> ExampleView:
    """Cut one example into runs of equal loss status and decode each run."""
    trained = labels != IGNORE_INDEX
    changes = np.flatnonzero(trained[1:] != trained[:-1]) + 1
    cuts = [0, *changes.tolist(), len(ids)]
    texts = decode_runs(decode, ids.tolist(), cuts)
    spans = tuple(
        Span(trained=bool(trained[start]), text=text, tokens=end - start)
        for start, end, text in zip(cuts, cuts[1:], texts, strict=False)
    )
    return ExampleView(spans)


def block_view(
    decode: Decode,
    *,
    input_ids: Sequence[int],
    labels: Sequence[int],
    seq_lens: Sequence[int],
    split: str,
    index: int,
    generation: int | None = None,
) -> BlockView:
    """Decode one block row: its examples are cut by ``seq_lens``; what follows them is padding."""
    ids = np.asarray(input_ids, dtype=np.int64)
    labs = np.asarray(labels, dtype=np.int64)
    examples, start = [], 0
    for length in seq_lens:
        end = start + int(length)
        examples.append(example_view(decode, ids[start:end], labs[start:end]))
        start = end
    return BlockView(split=split, index=index, examples=tuple(examples), real_tokens=start, length=len(ids),
                     generation=generation)


# ---------------------------------------------------------------------------------------------- rendering


def escape_text(text: str) -> str:
    """Make data safe to print: control characters (escape sequences, carriage returns) and bidi overrides are
    written as escapes, so a record cannot move the cursor, recolour the terminal or reorder what is shown."""
    return text.translate(_ESCAPES)


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_ANSI[style]}{text}{_RESET}" if color and text else text


def _span_text(span: Span, indent: str, color: bool) -> str:
    lines = escape_text(span.text).split("\n")
    style = "trained" if span.trained else "masked"
    # Colours are reset before each line break so a pager or a wrapped line never carries them on.
    painted = [_paint(line, style, color) for line in lines]
    body = (NEWLINE_MARK + "\n" + indent).join(painted)
    if color or span.trained:
        return body
    return f"{MASK_OPEN}{body}{MASK_CLOSE}"


def render_example(number: int, example: ExampleView, *, width: int, color: bool) -> str:
    """``  #3 ⟦source⟧target``: one example, starting on its own line, continuation lines indented."""
    label = f"#{number}".rjust(width)
    indent = " " * (width + 1)
    text = "".join(_span_text(span, indent, color) for span in example.spans)
    return f"{_paint(label, 'number', color)} {text}"


def render_block(block: BlockView, *, color: bool) -> list[str]:
    """The block's summary line, then one entry per example."""
    width = len(f"#{len(block.examples)}") + 2
    lines = [_paint(block.summary(), "header", color)]
    lines += [
        render_example(number, example, width=width, color=color)
        for number, example in enumerate(block.examples, start=1)
    ]
    return lines


def legend(*, color: bool) -> str:
    """What the markings mean, printed once above the blocks."""
    if color:
        return (
            f"{_paint('dim', 'masked', True)}: no loss (label -100: source, example starts) · "
            f"{_paint('green', 'trained', True)}: trained · {_paint('#N', 'number', True)} starts example N"
        )
    return (
        f"{MASK_OPEN}…{MASK_CLOSE}: no loss (label -100: source, example starts) · other text: trained · "
        f"#N starts example N · {NEWLINE_MARK} newline in the data"
    )


def use_color(*, force: bool | None, stream: Any = None) -> bool:
    """Colours when asked (``--color``), never when refused (``--plain``) or ``NO_COLOR`` is set, else when the
    output is a terminal."""
    if force is not None:
        return force
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


# ------------------------------------------------------------------------------------------ dataset access


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenizer: Any
    spec: str
    """Where it came from, for messages."""
    warning: str | None
    """Set when its fingerprint differs from the manifest's: decoded text may be wrong."""

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def tokenizer_spec(url: str, manifest: Manifest, override: str | None = None) -> str:
    """``--tokenizer`` if given, else the dataset's own ``tokenizer/`` directory, else the manifest's name."""
    if override:
        return override
    location = Location.of(url)
    relative = manifest.path_of(TOKENIZER_DIR)
    if location.fs.isdir(location.path(relative)):
        return location.name(relative)
    return manifest.tokenizer.name


def load_dataset_tokenizer(url: str, manifest: Manifest, override: str | None = None) -> LoadedTokenizer:
    """Load the tokenizer that made the dataset; warn (do not fail) when its fingerprint differs."""
    spec = tokenizer_spec(url, manifest, override)
    try:
        tokenizer = load_tokenizer(spec)
    except TokenizerError as error:
        hint = "" if override else f" (pass --tokenizer PATH to decode with a copy of {manifest.tokenizer.name!r})"
        raise InspectError(f"the dataset's tokenizer cannot be loaded{hint}: {error}") from error
    warning = None
    if fingerprint(tokenizer) != manifest.tokenizer.fingerprint:
        warning = (
            f"tokenizer {spec!r} is not the one that made this dataset (fingerprint "
            f"{fingerprint(tokenizer)[:19]}…, the manifest says {manifest.tokenizer.fingerprint[:19]}…): "
            "the decoded text may be wrong"
        )
    return LoadedTokenizer(tokenizer, spec, warning)


def choose_rows(
    num_rows: int, *, blocks: Sequence[int] = (), random_count: int = 0, seed: int | None = None,
    where: str = "the split",
) -> tuple[list[int], list[int]]:
    """Which rows to show: the ones asked for (negative counts from the end), ``random_count`` distinct random
    ones (sorted, so shards are read in order), or the first one; and the blocks asked for that do not exist.

    A block past the end does not stop the others from being shown: ``inspect`` prints them, then one error
    line (``missing_blocks``). Raises ``NoSuchBlock`` only when there is nothing at all to show. ``where`` names
    what the rows are of, in messages ("the split", "generation 2 in split train")."""
    if num_rows == 0:
        raise NoSuchBlock(f"{where} has no blocks to show")
    if random_count:
        return sorted(random.Random(seed).sample(range(num_rows), min(random_count, num_rows))), []
    rows, missing = [], []
    for block in blocks or [0]:
        row = block + num_rows if block < 0 else block
        if 0 <= row < num_rows:
            rows.append(row)
        else:
            missing.append(block)
    if not rows:
        raise NoSuchBlock(missing_blocks(missing, num_rows, where))
    return rows, missing


def missing_blocks(missing: Sequence[int], num_rows: int, where: str = "the split") -> str:
    """One line for the blocks that do not exist: ``blocks 500, -900 do not exist: the split has 120 blocks
    (0 to 119)``."""
    which = f"block {missing[0]} does" if len(missing) == 1 else f"blocks {', '.join(map(str, missing))} do"
    return f"{which} not exist: {where} has {num_rows:,} blocks (0 to {num_rows - 1:,}, or -1 to -{num_rows:,})"


@dataclass(frozen=True)
class GenerationRows:
    """One generation's part of a split: rows ``offset`` to ``offset + rows - 1`` of the split, since a split
    lists its generations' shards oldest first."""

    id: int
    directory: str
    offset: int
    rows: int


def generation_rows(manifest: Manifest, split: str) -> list[GenerationRows]:
    """Where each generation's blocks lie in ``split``, oldest first (a generation without the split has none)."""
    parts, offset = [], 0
    for generation in manifest.generations:
        rows = generation.splits[split].rows if split in generation.splits else 0
        parts.append(GenerationRows(generation.id, generation.directory, offset, rows))
        offset += rows
    return parts


def read_rows(
    shards: ShardSet, rows: Iterable[int], offset: int = 0
) -> Iterator[tuple[int, dict[str, list[int]]]]:
    """``(row, columns)`` for each row asked for (row ``offset + row`` of the split), reading each row group at
    most once in a row."""
    ends = np.cumsum(shards.unit_rows)
    cached: tuple[int, Any] | None = None
    for asked in rows:
        row = asked + offset
        unit = int(np.searchsorted(ends, row, side="right"))
        if cached is None or cached[0] != unit:
            cached = (unit, shards.read_unit(unit))
        within = row - (int(ends[unit - 1]) if unit else 0)
        values = cached[1].slice(within, 1).to_pylist()[0]
        yield asked, values


def decoded_blocks(
    shards: ShardSet, rows: Iterable[int], decode: Decode, *, generation: GenerationRows | None = None
) -> Iterator[BlockView]:
    """The blocks at ``rows`` of the split, or of one generation's part of it, decoded."""
    offset = generation.offset if generation else 0
    for row, values in read_rows(shards, rows, offset):
        yield block_view(
            decode,
            input_ids=values["input_ids"],
            labels=values["labels"],
            seq_lens=values["seq_lens"],
            split=shards.split,
            index=row,
            generation=generation.id if generation else None,
        )


@dataclass(frozen=True)
class Inspection:
    """Everything ``seqpack inspect`` prints, before it is rendered."""

    url: str
    split: str
    num_rows: int
    tokenizer: LoadedTokenizer
    blocks: list[BlockView]
    missing: str | None = None
    """An error line for requested blocks that do not exist, printed after the blocks that do."""
    generations: tuple[GenerationRows, ...] = ()
    """Each generation's blocks in the split."""
    generation: GenerationRows | None = None
    """The generation shown (``--generation``): ``num_rows`` and block numbers are then its own."""

    def header(self) -> str:
        """``out · split train · 43 blocks in 3 generations (1: 10, 2: 20, 3: 13) · tokenizer tok/``; a dataset of
        one generation leaves the generations out, one generation shown says which and how many blocks in all."""
        blocks = f"{self.num_rows:,} block{'s' * (self.num_rows != 1)}"
        total = sum(part.rows for part in self.generations)
        if self.generation is not None:
            where = f"generation {self.generation.id} ({self.generation.directory or '.'}) of {len(self.generations)}"
            blocks = f"{where} · split {self.split} · {blocks} of {total:,}"
            return f"{self.url} · {blocks} · tokenizer {self.tokenizer.spec}"
        if len(self.generations) > 1:
            parts = [f"{part.id}: {part.rows:,}" for part in self.generations]
            listed = ", ".join(parts if len(parts) <= _LISTED else [*parts[:_LISTED - 1], "…", parts[-1]])
            blocks += f" in {len(self.generations)} generations ({listed})"
        return f"{self.url} · split {self.split} · {blocks} · tokenizer {self.tokenizer.spec}"


_LISTED = 12  # generations listed in the header; more are elided in the middle


def inspect_blocks(
    url: str,
    *,
    split: str = "train",
    rows: Sequence[int] = (),
    random_count: int = 0,
    seed: int | None = None,
    tokenizer: str | None = None,
    generation: int | None = None,
) -> Inspection:
    """Open the dataset, pick the rows, decode them; with ``generation``, among that generation's blocks only,
    numbered from its first. Raises ``DatasetFormatError`` for a bad dataset and ``InspectError`` when no
    requested block exists, the generation does not, or the tokenizer cannot be loaded; requested blocks that
    do not exist among ones that do are named in ``Inspection.missing``."""
    shards = ShardSet.open(url, split=split)
    try:
        parts = generation_rows(shards.manifest, split)
        shown = _generation_part(parts, generation)
        num_rows, where = (shards.num_rows, "the split") if shown is None else (
            shown.rows, f"generation {shown.id} in split {split}")
        chosen, missing = choose_rows(num_rows, blocks=rows, random_count=random_count, seed=seed, where=where)
        loaded = load_dataset_tokenizer(url, shards.manifest, tokenizer)
        blocks = list(decoded_blocks(shards, chosen, loaded.decode, generation=shown))
    finally:
        shards.close()
    return Inspection(
        url=url, split=split, num_rows=num_rows, tokenizer=loaded, blocks=blocks,
        missing=missing_blocks(missing, num_rows, where) if missing else None,
        generations=tuple(parts), generation=shown,
    )


def _generation_part(parts: Sequence[GenerationRows], generation: int | None) -> GenerationRows | None:
    found = [part for part in parts if part.id == generation]
    if generation is None or found:
        return found[0] if found else None
    raise NoSuchGeneration(
        f"the dataset has no generation {generation}; it has {', '.join(str(part.id) for part in parts)}"
    )


def render_inspection(inspection: Inspection, *, color: bool) -> Iterator[str]:
    """The lines ``seqpack inspect`` prints: a header, the legend, then each block after a blank line."""
    yield _paint(inspection.header(), "header", color)
    yield legend(color=color)
    for block in inspection.blocks:
        yield ""
        yield from render_block(block, color=color)
