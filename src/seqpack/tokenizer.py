"""Load any Hugging Face tokenizer and describe it: special affixes, pad/eos ids, a fingerprint.

Accepts a local tokenizer directory, a ``tokenizer.json`` file, a ``.gguf`` file (read by ``transformers``),
a directory on any Beam filesystem (``gs://``, ``s3://``; copied to a local cache first) or a hub id.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from seqpack.schemas.manifest import TokenizerInfo
from seqpack.tokenizer_cache import TokenizerError, copy_remote_dir


def _is_remote(spec: str) -> bool:
    return "://" in spec


def load_tokenizer(spec: str, *, trust_remote_code: bool = False) -> Any:
    """Load a ``transformers`` tokenizer; raise ``TokenizerError`` with a fix when it cannot be loaded."""
    try:
        from transformers import PreTrainedTokenizerFast  # AutoTokenizer, only where needed: it imports torch
    except ImportError as exc:  # pragma: no cover - transformers is a core dependency
        raise TokenizerError("transformers is not installed: pip install seqpack") from exc
    if spec.endswith((".json", ".gguf")) and not _is_remote(spec) and not os.path.exists(spec):
        raise TokenizerError(f"no such tokenizer file {spec!r}: check the path")
    if _is_hub_id(spec):
        return _load_from_hub(spec, trust_remote_code=trust_remote_code)
    path = copy_remote_dir(spec) if _is_remote(spec) else spec
    try:
        if path.endswith(".json") and os.path.isfile(path):
            return PreTrainedTokenizerFast(tokenizer_file=path)
        if is_plain_tokenizer_dir(path):
            return PreTrainedTokenizerFast.from_pretrained(path)
        from transformers import AutoTokenizer

        if path.endswith(".gguf"):
            directory, name = os.path.split(os.path.abspath(path))
            return AutoTokenizer.from_pretrained(directory, gguf_file=name, trust_remote_code=trust_remote_code)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types (OSError, ValueError, HF hub errors)
        hint = "" if os.path.exists(path) else " (no such local path, nor a name the Hugging Face hub could hold)"
        raise TokenizerError(f"cannot load tokenizer {spec!r}{hint}: {_one_line(exc)}") from exc


PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def is_plain_tokenizer_dir(path: str) -> bool:
    """A directory with only a tokenizer in it (no model ``config.json``), of the plain Rust-backed class and no
    custom code: ``AutoTokenizer`` would load exactly that class from it, with nothing from a model configuration,
    so seqpack loads it directly. ``AutoTokenizer`` imports the model configuration code, and with it torch: about
    1.5 s of every run's start (``tests/core/test_tokenizer_load.py`` holds the two loads equal)."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")):
        return False
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        return False
    try:
        with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("tokenizer_class") in PLAIN_TOKENIZER_CLASSES \
        and "auto_map" not in config


HUB_PROBE_SECONDS = 5.0
"""How long to wait for the Hugging Face hub to answer before calling it unreachable. Without this check, a hub
id loaded with no network takes most of a minute of retries, each printing warnings, before it fails."""
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _is_hub_id(spec: str) -> bool:
    """Not a local path or URL, and shaped like a hub repository (``name`` or ``org/name``)."""
    if _is_remote(spec) or os.path.exists(spec):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return True


def hub_unreachable() -> str | None:
    """Why the hub cannot be used now (offline mode is set, or it did not answer in ``HUB_PROBE_SECONDS``), or
    None when it answers. One request, through the same proxy settings the hub client uses."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    for name in _OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name} is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=HUB_PROBE_SECONDS)
    except urllib.error.HTTPError:
        return None  # an answer, if only an error status: the hub is there
    except (OSError, ValueError) as error:  # URLError, a timeout, a refused connection
        return f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({getattr(error, 'reason', error)})"
    return None


def _load_from_hub(spec: str, *, trust_remote_code: bool) -> Any:
    """A hub id: from the hub when it answers, else from the local Hugging Face cache only, failing at once."""
    from transformers import AutoTokenizer

    offline = hub_unreachable()
    try:
        return AutoTokenizer.from_pretrained(
            spec, trust_remote_code=trust_remote_code, local_files_only=offline is not None
        )
    except Exception as exc:  # transformers raises many types (OSError, ValueError, HF hub errors)
        if offline is None:
            raise TokenizerError(f"cannot load tokenizer {spec!r} from the Hugging Face hub: {_one_line(exc)}") from exc
        raise TokenizerError(
            f"cannot load tokenizer {spec!r}: it is not a local path, {offline}, and it is not in the local "
            "Hugging Face cache. Pass a local tokenizer: --tokenizer path/to/dir (a directory with tokenizer.json), "
            f"a tokenizer.json file or a .gguf file; `hf download {spec} --local-dir DIR` on a machine with network "
            "makes such a directory"
        ) from exc


def _one_line(error: Exception) -> str:
    """An exception's message on one line: transformers' span several, and seqpack prints one line per error."""
    return " ".join(str(error).split())


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


DEFERRED = "deferred"
"""``BackendPlan.encoder`` while the driver still checks the fast encoder: the choice follows in a file."""
ENCODER_WAIT_SECONDS = 300.0
"""How long a worker waits for the driver's choice of encoder (it takes about a second)."""


@dataclass(frozen=True)
class BackendPlan:
    """How workers tokenize pairs without importing ``transformers``: the Rust tokenizer saved as JSON by the
    driver (any Beam filesystem path), the special ids that go around source and target, and which encoder the
    driver chose for it (``hf``, or ``fast``: ``seqpack.fast_encoder``, checked to give the same ids).

    ``encoder`` is ``deferred`` when the driver checks the fast encoder while the job starts (the local runner,
    ``--tokenizer-backend auto``): it then writes ``hf`` or ``fast`` to ``encoder_file``, which the workers and the
    commit step read (``chosen_encoder``)."""

    tokenizer_json: str
    layout: SpecialLayout
    encoder: str = "hf"
    encoder_file: str = ""


def chosen_encoder(plan: BackendPlan, wait_seconds: float = ENCODER_WAIT_SECONDS) -> str:
    """``plan.encoder``, or, when deferred, the driver's choice once it is written."""
    return read_encoder_choice(plan.encoder_file, wait_seconds) if plan.encoder == DEFERRED else plan.encoder


def read_encoder_choice(path: str, wait_seconds: float = ENCODER_WAIT_SECONDS) -> str:
    """The encoder the driver chose (``hf`` or ``fast``), waiting up to ``wait_seconds`` for it to be written, as
    long as the directory it goes in exists (the run's staging: a commit removes it)."""
    from apache_beam.io.filesystems import FileSystems

    deadline = time.monotonic() + wait_seconds
    while not FileSystems.exists(path):
        if time.monotonic() > deadline or not FileSystems.exists(os.path.dirname(path)):
            raise RuntimeError(f"the driver did not choose the encoder within {wait_seconds:.0f} s ({path} is "
                               "missing): it stopped or failed; its own error says why")
        time.sleep(0.02)
    with FileSystems.open(path) as handle:
        choice = handle.read().decode("utf-8").strip()
    if choice not in ("hf", "fast"):
        raise RuntimeError(f"{path} holds {choice!r}, not an encoder: a bug in seqpack; please report it")
    return choice


def read_backend_json(path: str) -> str:
    """The text of the tokenizer JSON a ``BackendPlan`` names."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


def load_backend(path: str, text: str | None = None) -> Any:
    """The Rust tokenizer a ``BackendPlan`` names (``text``: its JSON, already read), with truncation and padding
    off, as transformers calls it."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(read_backend_json(path) if text is None else text)
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
