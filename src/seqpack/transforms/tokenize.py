"""Tokenize rendered pairs in batches and turn them into compact, keyed examples ready to shuffle.

An example travels as ``(split, key, ids, n_masked)``: ``key`` is a 16-byte seeded hash of its content that
orders the global shuffle, ``ids`` the int32 token ids as bytes (a compact shuffle payload), ``n_masked`` the
number of leading tokens without loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np

from seqpack.faults import checkpoint
from seqpack.masking import build_example
from seqpack.pipeline.config import RunConfig
from seqpack.readers import Rejected
from seqpack.schemas import stats as stats_format
from seqpack.tokenizer import SpecialLayout, load_for_run, special_layout
from seqpack.transforms.bundle_stats import StatsDoFn
from seqpack.transforms.render import REJECTED_TAG

Example = tuple[str, bytes, bytes, int]
"""(split, key, int32 ids as bytes, n_masked)."""

SPLIT_SALT = b"seqpack-validation-split"


def choose_split(source: str, target: str, validation_fraction: float) -> str:
    """Hold out a pair by a hash of its text: stable across seeds and runs, and duplicates stay together."""
    if validation_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(f"{source}\0{target}".encode(), digest_size=8, key=SPLIT_SALT).digest()
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


class TokenizeDoFn(StatsDoFn):
    """Batches of ``(source_text, target_text, origin)`` in, examples out.

    Source and target are tokenized separately and concatenated, so the boundary between what is masked and
    what is trained on is exact. The tokenizer is loaded once per worker in ``setup`` (it is neither pickled
    with the pipeline nor loaded per element).
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.tokens_in = beam.metrics.Metrics.counter("seqpack", "tokens_in")

    def setup(self) -> None:
        self.tokenizer = load_for_run(
            self.config.tokenizer,
            trust_remote_code=self.config.trust_remote_code,
            extra_tokens=self.config.add_special_tokens,
        )
        layout = special_layout(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        suffix = list(layout.suffix)
        if self.config.add_eos and (not suffix or suffix[-1] != eos):
            suffix.append(eos)
        self.layout = SpecialLayout(layout.prefix, tuple(suffix))

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def process(self, batch: Sequence[tuple[str, str, str]]) -> Iterator[Any]:
        checkpoint("tokenize")
        cfg = self.config
        sources = self._encode([pair[0] for pair in batch])
        targets = self._encode([pair[1] for pair in batch])
        prefix, suffix = list(self.layout.prefix), list(self.layout.suffix)
        for (source_text, target_text, origin), src, tgt in zip(batch, sources, targets, strict=True):
            if not tgt:
                yield beam.pvalue.TaggedOutput(
                    REJECTED_TAG,
                    Rejected("empty_target", origin, target_text.encode(), "the target tokenizes to no tokens"),
                )
                continue
            source_ids, target_ids = prefix + src, tgt + suffix
            reason = filtered_reason(len(source_ids), len(target_ids), cfg)
            if reason:
                self.count_keyed("dropped_by_reason", reason)
                self.count("examples_dropped")
                self.count("tokens_in", len(source_ids) + len(target_ids))
                self.count("tokens_dropped", len(source_ids) + len(target_ids))
                continue
            outcome = build_example(
                source_ids,
                target_ids,
                max_length=cfg.max_length,
                overlong=cfg.overlong,
                train_on=cfg.train_on,
                keep_prefix=len(prefix),
            )
            self._count(outcome)
            self.tokens_in.inc(outcome.tokens_in)
            if outcome.dropped_reason:
                self.count_keyed("dropped_by_reason", outcome.dropped_reason)
                self.count("examples_dropped")
                continue
            split = choose_split(source_text, target_text, cfg.validation_fraction)
            self.count_keyed("examples_by_split", split)
            for index, piece in enumerate(outcome.pieces):
                mask = piece.mask_payload()
                yield split, example_key(piece.ids, mask, index, cfg.seed), piece.ids.tobytes(), mask

    def _count(self, outcome: Any) -> None:
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
