"""Tokenize rendered pairs or conversations in batches and spill them, keyed, to the run's staging directory.

Every example gets a 16-byte seeded hash of its content as its key: the order of the global shuffle. The
examples of a bundle collect in a columnar buffer per split (``seqpack.example_columns``) and are written, sorted by
key, as spill files (``transforms.shuffle``) whenever the buffer is full and when the bundle ends; only a small
``SpillFile`` description per file goes on through the pipeline.

A worker tokenizes each distinct source or target text once while its ``EncodeCache`` keeps it (sources
repeat in parallel corpora and instruction sets); the ids, and so the output, are the same either way.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from seqpack.chat import Segment, tokenize_segments
from seqpack.encode_cache import cache_for
from seqpack.example_columns import ExampleBuffer, offsets_of
from seqpack.fast_encoder import worker_encoder
from seqpack.faults import checkpoint
from seqpack.inputs import Rejected
from seqpack.keys import choose_split, example_key, example_keys
from seqpack.masking import (
    DEFAULT_OVERLONG,
    Outcome,
    build_example,
    build_masked_example,
    filtered_mask,
    masked_prefix,
    masks_example_starts,
)
from seqpack.masking import filtered_reason as masking_filter
from seqpack.prompt_templates import RenderError
from seqpack.schemas import stats as stats_format
from seqpack.token_lists import TokenLists, lay_out_pairs
from seqpack.tokenizer import (
    BackendPlan,
    chosen_encoder,
    equivalent_backend,
    load_backend,
    load_for_run,
    pair_layout,
    read_backend_json,
)
from seqpack.transforms.bundle_stats import StatsDoFn
from seqpack.transforms.progress_counts import ProgressCounter, progress_from_env
from seqpack.transforms.render import REJECTED_TAG, RenderedChat, raw_json
from seqpack.transforms.shuffle import SPILL_TOKENS, SpillFile, source_counts, spill_path, write_spill

_IDS = operator.attrgetter("ids")


@dataclass(frozen=True, kw_only=True)
class TokenizeOptions:
    """What the tokenize step needs of a run's configuration: the tokenizer to load, and how examples are built,
    filtered, keyed and held out."""

    tokenizer: str
    trust_remote_code: bool = False
    added_tokens: tuple[str, ...] = ()
    max_length: int
    overlong: str = DEFAULT_OVERLONG
    train_on: str = "target"
    add_eos: bool = True
    seed: int = 0
    validation_fraction: float = 0.0
    min_target_tokens: int = 0
    max_source_tokens: int | None = None
    source_id: int | None = None
    """In a mixture: the id of the source being tokenized, carried by every example it spills."""


def filtered_reason(source_tokens: int, target_tokens: int, options: TokenizeOptions) -> str | None:
    """``masking.filtered_reason`` with the run's ``--min-target-tokens`` / ``--max-source-tokens``."""
    return masking_filter(source_tokens, target_tokens, min_target_tokens=options.min_target_tokens,
                          max_source_tokens=options.max_source_tokens)


class _TokenizeBase(StatsDoFn):
    """What pairs and conversations share: the tokenizer, the filters, the statistics and the emit step.

    The tokenizer is loaded once per worker in ``setup`` (it is neither pickled with the pipeline nor loaded
    per element).
    """

    progress: ProgressCounter | None = None
    """Live progress counts, only in a local run that shows progress (see ``transforms.progress_counts``)."""

    def __init__(self, options: TokenizeOptions, spill_dir: str) -> None:
        self.options = options
        self.spill_dir = spill_dir
        self.tokens_in = beam.metrics.Metrics.counter("seqpack", "tokens_in")

    def start_bundle(self) -> None:
        super().start_bundle()
        self.buffers: dict[str, ExampleBuffer] = {}

    def buffer(self, split: str) -> ExampleBuffer:
        buffer = self.buffers.get(split)
        if buffer is None:
            buffer = self.buffers[split] = ExampleBuffer()
        return buffer

    def spill(self, split: str) -> SpillFile:
        """Write the split's buffered examples as one key-sorted spill file and describe it."""
        columns = self.buffers[split].build()
        if self.options.source_id is not None:
            columns = columns.with_source(self.options.source_id)
        path = spill_path(self.spill_dir, split)
        write_spill(path, columns)
        return SpillFile(split, path, len(columns), columns.tokens, source_counts(columns))

    def spill_full(self) -> Iterator[SpillFile]:
        """Spill the buffers that hold ``SPILL_TOKENS`` or more, so a worker's memory stays bounded."""
        for split, buffer in list(self.buffers.items()):
            if buffer.tokens >= SPILL_TOKENS:
                yield self.spill(split)

    def setup(self) -> None:
        self.progress = progress_from_env()
        self.tokenizer = load_for_run(
            self.options.tokenizer,
            trust_remote_code=self.options.trust_remote_code,
            extra_tokens=self.options.added_tokens,
        )
        self._fast = _fast_encoder(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> TokenLists:
        """Token ids of many texts in one call, without special tokens (the batch API of fast tokenizers)."""
        if self._fast is not None:
            return TokenLists.from_lists(list(map(_IDS, self._fast(list(texts), add_special_tokens=False))))
        return TokenLists.from_lists(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])

    def _filtered(self, source_tokens: int, target_tokens: int) -> bool:
        reason = filtered_reason(source_tokens, target_tokens, self.options)
        if reason:
            self.count_keyed("dropped_by_reason", reason)
            self.count("examples_dropped")
            self.count("tokens_in", source_tokens + target_tokens)
            self.count("tokens_dropped", source_tokens + target_tokens)
        return reason is not None

    def emit(self, outcome: Outcome, split_text: str) -> None:
        """Count an example's outcome and add its pieces, keyed for the shuffle, to its split's buffer."""
        self._count(outcome)
        self.tokens_in.inc(outcome.tokens_in)
        if self.progress is not None:
            self.progress.tokenized(1, outcome.tokens_in)
        if outcome.dropped_reason:
            self.count_keyed("dropped_by_reason", outcome.dropped_reason)
            self.count("examples_dropped")
            return
        split = choose_split(split_text, self.options.validation_fraction)
        self.count_keyed("examples_by_split", split)
        buffer = self.buffer(split)
        for index, piece in enumerate(outcome.pieces):
            key = example_key(piece.ids, piece.mask_payload(), index, self.options.seed)
            buffer.add(key, piece.ids, piece.n_masked, piece.trained)

    def finish_bundle(self):  # noqa: ANN201 - Beam's signature
        if self.progress is not None:
            self.progress.flush()
        for split, buffer in sorted(self.buffers.items()):
            if buffer.examples:
                yield GlobalWindows.windowed_value(self.spill(split))
        yield from super().finish_bundle()

    def _count(self, outcome: Outcome) -> None:
        self._count_lengths(np.array([outcome.source_tokens]), np.array([outcome.target_tokens]))
        self.count("tokens_truncated", outcome.truncated_tokens)
        self.count("tokens_dropped", outcome.dropped_tokens)
        self.count("examples_truncated", int(outcome.truncated))
        self.count("examples_prompt_lost", int(outcome.prompt_lost))
        self.count("examples_target_cut", int(outcome.target_cut))
        self.count("examples_split", int(outcome.split))
        self.count("pieces", len(outcome.pieces))

    def _count_lengths(self, sources: np.ndarray, targets: np.ndarray) -> int:
        """Count examples' tokens and length histograms (one example or many); return the tokens counted."""
        totals = sources + targets
        tokens = int(totals.sum())
        self.count("tokens_in", tokens)
        self.count("source_tokens", int(sources.sum()))
        self.count("target_tokens", int(targets.sum()))
        for name, lengths in (("example", totals), ("source", sources), ("target", targets)):
            hist = np.bincount(length_bins(lengths), minlength=stats_format.HIST_BINS)
            bins = self.stats[f"{name}_length_hist"]
            for index in np.flatnonzero(hist):
                bins[index] += int(hist[index])
        return tokens


def _fast_encoder(tokenizer: Any) -> Any:
    """The Rust backend's batch encoder when it is equivalent to the tokenizer's own call (see
    ``tokenizer.equivalent_backend``), else None."""
    backend = equivalent_backend(tokenizer)
    return None if backend is None else _batch_encoder(backend)


class _LoadedOnFirstCall:
    """The Rust backend's batch call, the backend loaded (~0.5 s) when first called: a worker that encodes with
    the fast encoder calls it only for a batch the fast encoder rejects, most often never."""

    def __init__(self, definition: str) -> None:
        self.definition = definition
        self._call: Any = None

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        if self._call is None:
            self._call = _batch_encoder(load_backend("", self.definition))
        return self._call(texts, **kwargs)


def _batch_encoder(backend: Any) -> Any:
    """A Rust tokenizer's fastest batch call (``encode_batch_fast`` skips offsets; older versions lack it)."""
    return getattr(backend, "encode_batch_fast", None) or backend.encode_batch


class TokenizeDoFn(_TokenizeBase):
    """Batches of ``(source_text, target_text, origin)`` in, examples out.

    Source and target are tokenized separately and concatenated, so the boundary between what is masked and
    what is trained on is exact. Special tokens follow the tokenizer (e.g. its BOS), and EOS ends the target.
    """

    def __init__(self, options: TokenizeOptions, spill_dir: str, backend: BackendPlan | None = None) -> None:
        super().__init__(options, spill_dir)
        self.backend = backend

    def setup(self) -> None:
        if self.backend is None:
            super().setup()
            self.layout = pair_layout(self.tokenizer, add_eos=self.options.add_eos)
        else:
            # The driver checked that the Rust tokenizer alone gives the same ids: no transformers (and torch)
            # import and no second tokenizer load in every worker.
            self.progress = progress_from_env()
            definition = read_backend_json(self.backend.tokenizer_json)
            self._fast = _LoadedOnFirstCall(definition)
            self.layout = self.backend.layout
        encode = self.encode
        fast = self.backend is not None and chosen_encoder(self.backend) == "fast"
        if fast:  # checked by the driver: the same ids
            encode = worker_encoder(definition, self.encode, lambda count: self.count("texts_reencoded", count))
        # Sources repeat most (one source, many translations), but each side decides for itself.
        self.source_cache = cache_for(encode, fast=fast)
        self.target_cache = cache_for(encode, fast=fast)

    def process(self, batch: Sequence[tuple[str, str, str]]) -> Iterator[Any]:
        checkpoint("tokenize")
        cfg = self.options
        sources = self.source_cache.encode([pair[0] for pair in batch])
        targets = self.target_cache.encode([pair[1] for pair in batch])
        n_source = sources.lengths + len(self.layout.prefix)
        n_target = targets.lengths + len(self.layout.suffix)
        # Empty targets (rejected), and examples no token of which takes loss once packed (an example's first
        # token never does, see masks_example_starts), take the slow path to be rejected.
        starts_masked = int(masks_example_starts(cfg.train_on, chat=False))
        untrained = np.maximum(masked_prefix(n_source, cfg.train_on), starts_masked)
        empty = (n_target == len(self.layout.suffix)) | (n_source + n_target <= untrained)
        filtered = filtered_mask(n_source, n_target, min_target_tokens=cfg.min_target_tokens,
                                 max_source_tokens=cfg.max_source_tokens)
        whole = (n_source + n_target <= cfg.max_length) & ~empty & ~filtered
        # The examples that fit as they are (nearly all) go to the buffers in array operations, with no Python
        # step per example; the others (empty or untrained, filtered, over max_length) go one at a time.
        if whole.all():
            self._add_whole(batch, sources, targets, n_source, n_target)
        else:
            chosen = np.flatnonzero(whole)
            self._add_whole(_picker(chosen)(batch), sources.take(chosen), targets.take(chosen), n_source[chosen],
                            n_target[chosen])
            for index in np.flatnonzero(~whole).tolist():
                yield from self._add_one(batch[index], sources[index], targets[index])
        yield from self.spill_full()

    def _add_one(self, pair: tuple[str, str, str], source: Sequence[int], target: Sequence[int]) -> Iterator[Any]:
        """An example that does not fit as it is: rejected, filtered, or truncated or split to fit."""
        source_text, target_text, origin = pair
        if not len(target):
            yield beam.pvalue.TaggedOutput(
                REJECTED_TAG,
                Rejected("empty_target", origin, target_text.encode(), "the target tokenizes to no tokens"),
            )
            return
        prefix, suffix = list(self.layout.prefix), list(self.layout.suffix)
        if self._filtered(len(prefix) + len(source), len(target) + len(suffix)):
            return
        cfg = self.options
        outcome = build_example(
            prefix + _as_list(source),
            _as_list(target) + suffix,
            max_length=cfg.max_length,
            overlong=cfg.overlong,
            train_on=cfg.train_on,
            keep_prefix=len(prefix),
            end_tokens=len(suffix),
        )
        if not trains(outcome, masks_example_starts(cfg.train_on, chat=False)):
            raw = raw_json({"source": source_text, "target": target_text})
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, _untrained(origin, raw))
            return
        self.emit(outcome, f"{source_text}\0{target_text}")

    def _add_whole(
        self,
        batch: Sequence[tuple[str, str, str]],
        sources: TokenLists,
        targets: TokenLists,
        n_source: np.ndarray,
        n_target: np.ndarray,
    ) -> None:
        """Buffer and count examples that fit in ``max_length`` whole; ``n_*`` count the special tokens too."""
        if not len(batch):
            return
        holdout = self.options.validation_fraction
        if not holdout:
            self._buffer_whole("train", sources, targets, n_source, n_target)
        else:
            held = np.array([choose_split(f"{s}\0{t}", holdout) == "validation" for s, t, _ in batch], dtype=bool)
            for split, chosen in (("train", np.flatnonzero(~held)), ("validation", np.flatnonzero(held))):
                if len(chosen):
                    self._buffer_whole(split, sources.take(chosen), targets.take(chosen), n_source[chosen],
                                       n_target[chosen])
        self._count_whole(n_source, n_target)

    def _buffer_whole(
        self,
        split: str,
        sources: TokenLists,
        targets: TokenLists,
        n_source: np.ndarray,
        n_target: np.ndarray,
    ) -> None:
        """Lay examples out flat (prefix, source, target, suffix each), key them and add them to a buffer."""
        ids, lengths = lay_out_pairs(self.layout.prefix, sources, targets, self.layout.suffix)
        offsets = offsets_of(lengths)
        masked = masked_prefix(n_source, self.options.train_on).astype(np.int32)
        keys = example_keys(ids, offsets, masked, self.options.seed)
        self.buffer(split).extend(keys, lengths, ids, masked)
        self.count_keyed("examples_by_split", split, len(lengths))

    def _count_whole(self, sources: np.ndarray, targets: np.ndarray) -> None:
        """Add examples that fitted whole to the statistics, in a few array operations."""
        tokens = self._count_lengths(sources, targets)
        self.count("pieces", len(sources))
        self.tokens_in.inc(tokens)
        if self.progress is not None:
            self.progress.tokenized(len(sources), tokens)


def trains(outcome: Outcome, masks_start: bool) -> bool:
    """Whether an example (not dropped) takes loss anywhere once packed: a piece's first label is -100 when
    ``masks_start`` (``masking.masks_example_starts``). A dropped example is counted as dropped, not here."""
    if outcome.dropped_reason:
        return True
    return any(piece.label_mask()[int(masks_start):].any() for piece in outcome.pieces)


def _untrained(origin: str, raw: bytes) -> Rejected:
    return Rejected("no_trained_tokens", origin, raw, "no token of the example takes loss once it is cut to fit "
                    "and packed (an example's first token never does): there is nothing to learn from it")


def _as_list(ids: Sequence[int]) -> list[int]:
    """Ids as a list of Python ints (a numpy view of a ``TokenLists`` gives numpy scalars to ``list``)."""
    return ids.tolist() if isinstance(ids, np.ndarray) else list(ids)


def _picker(chosen: np.ndarray) -> Any:
    """A function that takes the items at the indices ``chosen`` out of a sequence, as a list."""
    indices = chosen.tolist()
    return lambda items: [items[i] for i in indices]


def length_bins(lengths: np.ndarray) -> np.ndarray:
    """``stats.length_bin`` for many lengths at once (the exponent of frexp is the bit length)."""
    return np.minimum(np.frexp(lengths.astype(np.float64))[1], stats_format.HIST_BINS - 1)


class ChatTokenizeDoFn(_TokenizeBase):
    """Batches of ``RenderedChat`` in (``transforms.render`` cut them into trained and untrained segments),
    examples out: assistant turns, with their end-of-turn marker, are trained on."""

    def process(self, batch: Sequence[RenderedChat]) -> Iterator[Any]:
        checkpoint("tokenize")
        cfg = self.options
        encoded = self.tokenize([chat.segments for chat in batch])
        bos = self.tokenizer.bos_token_id
        for chat, result in zip(batch, encoded, strict=True):
            if isinstance(result, RenderError):  # --chat-boundary joint: no exact mask (transforms.joint)
                raw = raw_json({"messages": chat.messages})
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, Rejected(result.reason, chat.origin, raw, result.detail))
                continue
            ids, trained = result
            n_trained = int(trained.sum())
            if n_trained == 0:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG,
                    Rejected("empty_target", chat.origin, raw_json({"messages": chat.messages}),
                             "no assistant token to train"),
                )
                continue
            if self._filtered(len(ids) - n_trained, n_trained):
                continue
            outcome = build_masked_example(
                ids,
                trained,
                max_length=cfg.max_length,
                overlong=cfg.overlong,
                keep_prefix=int(len(ids) > 0 and bos is not None and ids[0] == bos),
            )
            if not trains(outcome, masks_example_starts(cfg.train_on, chat=True)):
                yield beam.pvalue.TaggedOutput(REJECTED_TAG,
                                               _untrained(chat.origin, raw_json({"messages": chat.messages})))
                continue
            self.emit(outcome, json.dumps(chat.messages, ensure_ascii=False, sort_keys=True))
        yield from self.spill_full()

    def tokenize(self, conversations: Sequence[Sequence[Segment]]) -> list[Any]:
        """Per conversation, ``(ids, trained)``, or the ``RenderError`` that rejects it: each segment tokenized
        on its own (``--chat-boundary turn``)."""
        return tokenize_segments(self.tokenizer, conversations)
