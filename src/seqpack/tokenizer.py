"""Load any Hugging Face tokenizer and describe it: special affixes, pad/eos ids, a fingerprint.

Accepts a local tokenizer directory, a ``tokenizer.json`` file, a ``.gguf`` file (read by ``transformers``),
a directory on any Beam filesystem (``gs://``, ``s3://``; copied to a local cache first) or a hub id.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from seqpack.schemas.manifest import TokenizerInfo


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or lacks something the run needs."""


def _is_remote(spec: str) -> bool:
    return "://" in spec


def _copy_remote_dir(spec: str) -> str:
    """Copy a tokenizer directory from a Beam filesystem into a local cache directory, once per process."""
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    local = os.path.join(tempfile.gettempdir(), f"seqpack-tokenizer-{digest}")
    if os.path.isdir(local):
        return local
    staging = tempfile.mkdtemp(prefix="seqpack-tokenizer-")
    pattern = spec.rstrip("/") + "/*"
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise TokenizerError(f"no tokenizer files found under {spec}")
    for meta in matches:
        name = meta.path.rstrip("/").rsplit("/", 1)[-1]
        with FileSystems.open(meta.path) as src, open(os.path.join(staging, name), "wb") as dst:
            dst.write(src.read())
    with contextlib.suppress(OSError):  # another worker process won the race; its copy is identical
        os.rename(staging, local)
    return local


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> Any:
    """Load a ``transformers`` tokenizer; raise ``TokenizerError`` with a fix when it cannot be loaded."""
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise TokenizerError("transformers is not installed: pip install seqpack") from exc
    path = _copy_remote_dir(spec) if _is_remote(spec) else spec
    try:
        if path.endswith(".gguf"):
            directory, name = os.path.split(os.path.abspath(path))
            return AutoTokenizer.from_pretrained(directory, gguf_file=name, trust_remote_code=trust_remote_code)
        if path.endswith(".json") and os.path.isfile(path):
            return PreTrainedTokenizerFast(tokenizer_file=path)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types (OSError, ValueError, HF hub errors)
        hint = "" if os.path.exists(path) else " (no such local path; a hub id needs network access or the HF cache)"
        raise TokenizerError(f"cannot load tokenizer {spec!r}{hint}: {exc}") from exc


def add_special_tokens(tokenizer: Any, tokens: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Add new special tokens (never split, never normalised); return every requested token's id.

    Tokens the tokenizer already knows keep their id. The ids of new tokens follow the order given, so a
    worker that adds the same list gets the same ids as the driver.
    """
    if tokens:
        tokenizer.add_tokens(list(tokens), special_tokens=True)
    return {token: int(tokenizer.convert_tokens_to_ids(token)) for token in tokens}


def load_for_run(spec: str, *, trust_remote_code: bool = False, extra_tokens: tuple[str, ...] = ()) -> Any:
    """The tokenizer as a run uses it: loaded, then extended with ``--add-special-tokens``."""
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    add_special_tokens(tokenizer, extra_tokens)
    return tokenizer


@dataclass(frozen=True)
class SpecialLayout:
    """What the tokenizer adds around a text by itself: ``prefix`` (e.g. BOS) and ``suffix`` ids."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


def special_layout(tokenizer: Any) -> SpecialLayout:
    """Find the special tokens the tokenizer adds, by encoding a probe text with and without them."""
    probe = "seqpack probe"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return SpecialLayout(tuple(full[:start]), tuple(full[start + len(bare) :]))
    return SpecialLayout((), ())


def pair_layout(tokenizer: Any, *, add_eos: bool) -> SpecialLayout:
    """The special ids around a pair: the tokenizer's own prefix and suffix, and EOS at the end if asked."""
    layout = special_layout(tokenizer)
    suffix = list(layout.suffix)
    eos = tokenizer.eos_token_id
    if add_eos and (not suffix or suffix[-1] != eos):
        suffix.append(eos)
    return SpecialLayout(layout.prefix, tuple(suffix))


PROBE_TEXTS = ("Hello world", " leading space", "tabs\tand\nnewlines", "ünïcödé 日本語", "", "x" * 50)


def equivalent_backend(tokenizer: Any) -> Any | None:
    """The Rust ``tokenizers.Tokenizer`` inside a fast tokenizer, when calling it directly gives exactly the
    ids that the tokenizer's own call gives (checked on probe texts); None otherwise.

    Calling it skips the Python wrapping of ``tokenizer(texts)``; a tokenizer class that preprocesses text
    in Python would give other ids, so the shortcut is only taken when the probes agree.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch"):
        return None
    expected = tokenizer(list(PROBE_TEXTS), add_special_tokens=False)["input_ids"]
    actual = [encoding.ids for encoding in backend.encode_batch(list(PROBE_TEXTS), add_special_tokens=False)]
    return backend if actual == expected else None


@dataclass(frozen=True)
class BackendPlan:
    """How workers tokenize pairs without importing ``transformers``: the Rust tokenizer saved as JSON by the
    driver (any Beam filesystem path) and the special ids that go around source and target."""

    tokenizer_json: str
    layout: SpecialLayout


def load_backend(path: str) -> Any:
    """The Rust tokenizer a ``BackendPlan`` names, with truncation and padding off, as transformers calls it."""
    from apache_beam.io.filesystems import FileSystems
    from tokenizers import Tokenizer

    with FileSystems.open(path) as handle:
        backend = Tokenizer.from_str(handle.read().decode("utf-8"))
    backend.no_truncation()
    backend.no_padding()
    return backend


def pad_id_of(tokenizer: Any, override: int | None = None) -> int:
    """The id that fills blocks: ``--pad-id``, else the tokenizer's pad token, else its EOS."""
    if override is not None:
        return override
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise TokenizerError("the tokenizer has neither a pad nor an EOS token: pass --pad-id N")


def fingerprint(tokenizer: Any) -> str:
    """A sha256 of what determines tokenization: the fast tokenizer's full JSON and its special tokens."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    return "sha256:" + digest.hexdigest()


def describe(tokenizer: Any, spec: str, pad_id: int, added: dict[str, int] | None = None) -> TokenizerInfo:
    """What the manifest records of the tokenizer; ``added`` are the ``--add-special-tokens`` and their ids."""
    return TokenizerInfo(
        name=spec,
        vocab_size=len(tokenizer),
        pad_id=pad_id,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        fingerprint=fingerprint(tokenizer),
        added_tokens=dict(added or {}),
    )
