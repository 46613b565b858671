"""Tokenize rendered pairs or conversations in batches and turn them into compact, keyed examples.

An example travels as ``(key, ids, mask)``: ``key`` is a 16-byte seeded hash of its content that orders the
global shuffle, ``ids`` the int32 token ids as bytes (a compact shuffle payload), ``mask`` the number of
leading tokens without loss (pairs) or the packed bits of the loss mask (conversations). Examples leave a
tokenized batch together, as ``(split, [example, ...])``: one element per batch, not one per example, keeps
the runner's per-element cost out of the hot path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np

from seqpack.chat import render_segments, tokenize_segments
from seqpack.faults import checkpoint
from seqpack.masking import Outcome, build_example, build_masked_example
from seqpack.pipeline.config import RunConfig
from seqpack.readers import Rejected
from seqpack.schemas import stats as stats_format
from seqpack.templates import RenderError
from seqpack.tokenizer import SpecialLayout, load_for_run, special_layout
from seqpack.transforms.bundle_stats import StatsDoFn
from seqpack.transforms.progress import ProgressCounter, progress_from_env
from seqpack.transforms.render import REJECTED_TAG, raw_json

Example = tuple[bytes, bytes, int | bytes]
"""(key, int32 ids as bytes, mask)."""
ExampleBatch = tuple[str, list[Example]]
"""(split, examples of that split from one tokenized batch)."""

SPLIT_SALT = b"seqpack-validation-split"


def choose_split(text: str, validation_fraction: float) -> str:
    """Hold out an example by a hash of its text: stable across seeds and runs, and duplicates stay together."""
    if validation_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=SPLIT_SALT).digest()
    return "validation" if int.from_bytes(digest, "big") / 2**64 < validation_fraction else "train"


def example_key(ids: np.ndarray, mask: int | bytes, piece: int, seed: int) -> bytes:
    """A seeded content hash: the order of the global shuffle, independent of runner and worker count."""
    digest = hashlib.blake2b(digest_size=16, key=seed.to_bytes(8, "big", signed=True))
    digest.update(ids.tobytes())
    digest.update(mask if isinstance(mask, bytes) else mask.to_bytes(4, "big"))
    digest.update(piece.to_bytes(4, "big"))
    return digest.digest()


def filtered_reason(source_tokens: int, target_tokens: int, config: RunConfig) -> str | None:
    """Why ``--min-target-tokens`` / ``--max-source-tokens`` drop an example, or None to keep it."""
    if target_tokens < config.min_target_tokens:
        return "target_too_short"
    if config.max_source_tokens is not None and source_tokens > config.max_source_tokens:
        return "source_too_long"
    return None


class _TokenizeBase(StatsDoFn):
    """What pairs and conversations share: the tokenizer, the filters, the statistics and the emit step.

    The tokenizer is loaded once per worker in ``setup`` (it is neither pickled with the pipeline nor loaded
    per element).
    """

    progress: ProgressCounter | None = None
    """Live progress counts, only in a local run that shows progress (see ``transforms.progress``)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.tokens_in = beam.metrics.Metrics.counter("seqpack", "tokens_in")

    def setup(self) -> None:
        self.progress = progress_from_env()
        self.tokenizer = load_for_run(
            self.config.tokenizer,
            trust_remote_code=self.config.trust_remote_code,
            extra_tokens=self.config.add_special_tokens,
        )
        self._fast = _fast_encoder(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts in one call, without special tokens (the batch API of fast tokenizers)."""
        if self._fast is not None:
            return [encoding.ids for encoding in self._fast(list(texts), add_special_tokens=False)]
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def _filtered(self, source_tokens: int, target_tokens: int) -> bool:
        reason = filtered_reason(source_tokens, target_tokens, self.config)
        if reason:
            self.count_keyed("dropped_by_reason", reason)
            self.count("examples_dropped")
            self.count("tokens_in", source_tokens + target_tokens)
            self.count("tokens_dropped", source_tokens + target_tokens)
        return reason is not None

    def emit(self, outcome: Outcome, split_text: str, into: dict[str, list[Example]]) -> None:
        """Count an example's outcome and add its pieces, keyed for the shuffle, to its split's list."""
        self._count(outcome)
        self.tokens_in.inc(outcome.tokens_in)
        if self.progress is not None:
            self.progress.tokenized(1, outcome.tokens_in)
        if outcome.dropped_reason:
            self.count_keyed("dropped_by_reason", outcome.dropped_reason)
            self.count("examples_dropped")
            return
        split = choose_split(split_text, self.config.validation_fraction)
        self.count_keyed("examples_by_split", split)
        examples = into.setdefault(split, [])
        for index, piece in enumerate(outcome.pieces):
            mask = piece.mask_payload()
            examples.append((example_key(piece.ids, mask, index, self.config.seed), piece.ids.tobytes(), mask))

    def finish_bundle(self):  # noqa: ANN201 - Beam's signature
        if self.progress is not None:
            self.progress.flush()
        yield from super().finish_bundle()

    def _count(self, outcome: Outcome) -> None:
        self.count("tokens_in", outcome.tokens_in)
        self.count("source_tokens", outcome.source_tokens)
        self.count("target_tokens", outcome.target_tokens)
        self.count("tokens_truncated", outcome.truncated_tokens)
        self.count("tokens_dropped", outcome.dropped_tokens)
        self.count("examples_truncated", int(outcome.truncated))
        self.count("examples_split", int(outcome.split))
        self.count("pieces", len(outcome.pieces))
        self.stats["example_length_hist"][stats_format.length_bin(outcome.tokens_in)] += 1
        self.stats["source_length_hist"][stats_format.length_bin(outcome.source_tokens)] += 1
        self.stats["target_length_hist"][stats_format.length_bin(outcome.target_tokens)] += 1


def _fast_encoder(tokenizer: Any) -> Any:
    """The Rust tokenizer's ``encode_batch`` when it gives exactly what the tokenizer's own call gives.

    It skips the Python wrapping of ``tokenizer(texts)``; a tokenizer class that preprocesses text in Python
    would give other ids, so the shortcut is checked on probe texts and used only when they agree.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if encode is None:
        return None
    probes = ["Hello world", " leading space", "tabs\tand\nnewlines", "ünïcödé 日本語", "", "x" * 50]
    expected = tokenizer(probes, add_special_tokens=False)["input_ids"]
    actual = [e.ids for e in encode(probes, add_special_tokens=False)]
    return encode if actual == expected else None


class TokenizeDoFn(_TokenizeBase):
    """Batches of ``(source_text, target_text, origin)`` in, examples out.

    Source and target are tokenized separately and concatenated, so the boundary between what is masked and
    what is trained on is exact. Special tokens follow the tokenizer (e.g. its BOS), and EOS ends the target.
    """

    def setup(self) -> None:
        super().setup()
        layout = special_layout(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        suffix = list(layout.suffix)
        if self.config.add_eos and (not suffix or suffix[-1] != eos):
            suffix.append(eos)
        self.layout = SpecialLayout(layout.prefix, tuple(suffix))

    def process(self, batch: Sequence[tuple[str, str, str]]) -> Iterator[Any]:
        checkpoint("tokenize")
        cfg = self.config
        sources = self.encode([pair[0] for pair in batch])
        targets = self.encode([pair[1] for pair in batch])
        prefix, suffix = list(self.layout.prefix), list(self.layout.suffix)
        by_split: dict[str, list[Example]] = {}
        fitting = _FittingTally()
        for (source_text, target_text, origin), src, tgt in zip(batch, sources, targets, strict=True):
            if not tgt:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG,
                    Rejected("empty_target", origin, target_text.encode(), "the target tokenizes to no tokens"),
                )
                continue
            n_source, n_target = len(prefix) + len(src), len(tgt) + len(suffix)
            if self._filtered(n_source, n_target):
                continue
            split_text = f"{source_text}\0{target_text}"
            if n_source + n_target <= cfg.max_length:  # the common case, without the overlong machinery
                ids = np.array(prefix + src + tgt + suffix, dtype=np.int32)
                mask = n_source if cfg.train_on == "target" else 0
                split = choose_split(split_text, cfg.validation_fraction)
                by_split.setdefault(split, []).append((example_key(ids, mask, 0, cfg.seed), ids.tobytes(), mask))
                fitting.add(split, n_source, n_target)
                continue
            outcome = build_example(
                prefix + src,
                tgt + suffix,
                max_length=cfg.max_length,
                overlong=cfg.overlong,
                train_on=cfg.train_on,
                keep_prefix=len(prefix),
            )
            self.emit(outcome, split_text, by_split)
        self._count_fitting(fitting)
        yield from by_split.items()

    def _count_fitting(self, fitting: _FittingTally) -> None:
        """Add a batch's examples that fitted whole to the statistics, in a few array operations."""
        if not fitting.sources:
            return
        sources, targets = np.array(fitting.sources), np.array(fitting.targets)
        totals = sources + targets
        tokens = int(totals.sum())
        self.count("tokens_in", tokens)
        self.count("source_tokens", int(sources.sum()))
        self.count("target_tokens", int(targets.sum()))
        self.count("pieces", len(totals))
        for split, count in fitting.splits.items():
            self.count_keyed("examples_by_split", split, count)
        for name, lengths in (("example", totals), ("source", sources), ("target", targets)):
            hist = np.bincount(length_bins(lengths), minlength=stats_format.HIST_BINS)
            bins = self.stats[f"{name}_length_hist"]
            for index in np.flatnonzero(hist):
                bins[index] += int(hist[index])
        self.tokens_in.inc(tokens)
        if self.progress is not None:
            self.progress.tokenized(len(totals), tokens)


class _FittingTally:
    """Lengths and splits of the examples of one batch that fit in ``max_length`` as they are."""

    def __init__(self) -> None:
        self.sources: list[int] = []
        self.targets: list[int] = []
        self.splits: dict[str, int] = {}

    def add(self, split: str, source_tokens: int, target_tokens: int) -> None:
        self.sources.append(source_tokens)
        self.targets.append(target_tokens)
        self.splits[split] = self.splits.get(split, 0) + 1


def length_bins(lengths: np.ndarray) -> np.ndarray:
    """``stats.length_bin`` for many lengths at once (the exponent of frexp is the bit length)."""
    return np.minimum(np.frexp(lengths.astype(np.float64))[1], stats_format.HIST_BINS - 1)


class ChatTokenizeDoFn(_TokenizeBase):
    """Batches of ``(messages, origin)`` in, examples out: rendered with the tokenizer's chat template.

    Assistant turns (with their end-of-turn marker) are trained on; see ``seqpack.chat`` for how the spans are
    found exactly, and why a template that is not prefix-stable is rejected rather than guessed at.
    """

    def process(self, batch: Sequence[tuple[list[dict[str, Any]], str]]) -> Iterator[Any]:
        checkpoint("tokenize")
        cfg = self.config
        rendered = []
        for messages, origin in batch:
            try:
                rendered.append((render_segments(self.tokenizer, messages, train_on=cfg.train_on), messages, origin))
            except RenderError as error:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG, Rejected(error.reason, origin, raw_json({"messages": messages}), error.detail)
                )
        if not rendered:
            return
        encoded = tokenize_segments(self.tokenizer, [segments for segments, _, _ in rendered])
        bos = self.tokenizer.bos_token_id
        by_split: dict[str, list[Example]] = {}
        for (_, messages, origin), (ids, trained) in zip(rendered, encoded, strict=True):
            n_trained = int(trained.sum())
            if n_trained == 0:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG,
                    Rejected("empty_target", origin, raw_json({"messages": messages}), "no assistant token to train"),
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
            self.emit(outcome, json.dumps(messages, ensure_ascii=False, sort_keys=True), by_split)
        yield from by_split.items()
