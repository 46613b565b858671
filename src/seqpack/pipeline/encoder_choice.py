"""Choose, on the driver, what encodes the job's pairs (``--tokenizer-backend``): the Hugging Face backend or the
fast encoder, which must first give the same ids on a sample of the job's own texts (``seqpack.fast_encoder``).

    >>> encoder = choose_for_run(config, rust_backend, rust_backend.to_str(), files)   # "fast" or "hf"
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.fast_encoder import FastEncoderError, choose_encoder, sample_texts
from seqpack.prompt_templates import make_template
from seqpack.transforms.read import beam_open

_LOG = logging.getLogger("seqpack")


def hf_only(config: RunConfig, why: str) -> None:
    """A job the fast encoder cannot take part in (``why``): refused with ``--tokenizer-backend fast``, said
    in ``auto``."""
    if config.tokenizer_backend == "fast":
        raise UsageError(f"--tokenizer-backend fast cannot be used: {why}. Pass --tokenizer-backend auto (or hf)")
    if config.tokenizer_backend == "auto":
        _LOG.info("tokenizing with Hugging Face: %s", why)


def choose_for_run(config: RunConfig, rust: Any, definition: str, files: Sequence[Any]) -> str:
    """``fast`` or ``hf`` for a pairs job whose workers load the Rust tokenizer ``rust`` (its JSON:
    ``definition``); the sample is the job's texts, rendered by its template, chosen by its seed."""
    if config.tokenizer_backend == "hf":
        return "hf"
    template = make_template(config.template, source_field=config.source_field, target_field=config.target_field,
                             separator=config.separator)
    sample = sample_texts(files, beam_open, template.render, seed=config.seed)

    def hf(texts: list[str]) -> list[list[int]]:  # as the workers' Hugging Face path encodes
        return [encoding.ids for encoding in rust.encode_batch_fast(texts, add_special_tokens=False)]

    try:
        choice = choose_encoder(config.tokenizer_backend, definition, hf, sample)
    except FastEncoderError as error:
        raise UsageError(str(error)) from error
    if choice.backend == "fast":
        _LOG.info("tokenizing with %s", choice.reason)
    else:
        _LOG.warning("tokenizing with Hugging Face: %s", choice.reason)
    return choice.backend
