"""Load any Hugging Face tokenizer and describe it: special affixes, pad/eos ids, a fingerprint.

Accepts a local tokenizer directory, a ``tokenizer.json`` file, a ``.gguf`` file (read by ``transformers``),
a directory on any Beam filesystem (``gs://``, ``s3://``; copied to a local cache first) or a hub id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from seqpack.schemas.manifest import TokenizerInfo


class TokenizerError(ValueError):
    """The tokenizer cannot be loaded or lacks something the run needs."""


def _is_remote(spec: str) -> bool:
    return "://" in spec


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote tokenizer directory as the filesystem lists it (``updated`` 0: not known)."""

    name: str
    path: str
    size: int
    updated: float


CACHE_FILES = "files"
CACHE_MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def _list_remote(spec: str) -> list[RemoteFile]:
    """The files directly under a remote tokenizer directory, sorted by name."""
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([spec.rstrip("/") + "/*"])[0].metadata_list
    if not matches:
        raise TokenizerError(f"no tokenizer files found under {spec}: pass the directory that holds tokenizer.json")
    files = []
    for meta in matches:
        name = meta.path.rstrip("/").rsplit("/", 1)[-1]
        if name in ("", ".", ".."):
            raise TokenizerError(f"{meta.path} cannot be copied as a tokenizer file: rename or remove it")
        files.append(RemoteFile(name, meta.path, int(meta.size_in_bytes), float(meta.last_updated_in_seconds or 0)))
    names = [file.name for file in files]
    if len(set(names)) != len(names):
        raise TokenizerError(f"{spec} lists two files of the same name in subdirectories: point at one directory")
    return sorted(files, key=lambda file: file.name)


def _private_cache_root() -> str | None:
    """This user's tokenizer cache directory, or None when the path exists but is not private to us.

    The path is predictable, so another user could create it first (or as a link) and plant a tokenizer
    there: it is only used when it is a real directory owned by us that nobody else can write or read.
    """
    uid = os.getuid()
    root = os.path.join(tempfile.gettempdir(), f"seqpack-tokenizers-{uid}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)
    info = os.lstat(root)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077:
        return root
    logging.getLogger("seqpack").warning(
        "not using the tokenizer cache %s: it is not a private directory of this user (owner uid %d, mode %o); "
        "remove it to cache remote tokenizers again",
        root, info.st_uid, stat.S_IMODE(info.st_mode),
    )
    return None


def _listing_key(spec: str, files: list[RemoteFile]) -> str | None:
    """A cache key from the remote listing (name, size, modification time), None when times are not known."""
    if any(file.updated <= 0 for file in files):
        return None
    listing = [spec, [(file.name, file.size, file.updated) for file in files]]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:32]


def _download(spec: str, files: list[RemoteFile], staging: str) -> str:
    """Copy ``files`` into ``staging/files`` and write a manifest of their listing and sha256; return staging."""
    from apache_beam.io.filesystems import FileSystems

    os.mkdir(os.path.join(staging, CACHE_FILES), 0o700)
    recorded = {}
    for file in files:
        digest = hashlib.sha256()
        with FileSystems.open(file.path) as src, open(os.path.join(staging, CACHE_FILES, file.name), "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        recorded[file.name] = {"size": file.size, "updated": file.updated, "sha256": digest.hexdigest()}
    with open(os.path.join(staging, CACHE_MANIFEST), "w", encoding="utf-8") as out:
        json.dump({"source": spec, "files": recorded}, out, sort_keys=True)
    return staging


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry_is_valid(entry: str, files: list[RemoteFile], expected: dict[str, Any] | None = None) -> bool:
    """A cache entry may be used only if it is ours and private, its manifest matches the remote listing (or the
    ``expected`` manifest of a fresh download) and its files are exactly the ones the manifest hashes."""
    try:
        info = os.lstat(entry)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return False
        with open(os.path.join(entry, CACHE_MANIFEST), encoding="utf-8") as handle:
            recorded = json.load(handle)["files"]
        listing = {file.name: (file.size, file.updated) for file in files}
        if {name: (item["size"], item["updated"]) for name, item in recorded.items()} != listing:
            return False
        if expected is not None and recorded != expected:
            return False
        directory = os.path.join(entry, CACHE_FILES)
        if sorted(os.listdir(directory)) != sorted(recorded):
            return False
        return all(_sha256_file(os.path.join(directory, name)) == item["sha256"] for name, item in recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _read_manifest(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, CACHE_MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)["files"]


def _copy_remote_dir(spec: str) -> str:
    """A local copy of a tokenizer directory on a Beam filesystem, shared through a private per-user cache.

    The cache is keyed by the remote files themselves (name, size and modification time; their sha256 when the
    filesystem gives no times), filled by renaming a private staging directory, and an entry is checked
    against the listing and its recorded hashes before each use: a changed remote gets a new copy, and a
    directory planted or altered in the cache is never loaded.
    """
    files = _list_remote(spec)
    root = _private_cache_root()
    if root is None:
        return os.path.join(_download(spec, files, tempfile.mkdtemp(prefix="seqpack-tokenizer-")), CACHE_FILES)
    key = _listing_key(spec, files)
    staging = None
    expected = None
    if key is None:  # no modification times to go by: download, and key the entry by what was downloaded
        staging = _download(spec, files, tempfile.mkdtemp(prefix=".staging-", dir=root))
        expected = _read_manifest(staging)
        key = "sha256-" + hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:32]
    entry = os.path.join(root, key)
    if _entry_is_valid(entry, files, expected):
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        return os.path.join(entry, CACHE_FILES)
    if staging is None:
        staging = _download(spec, files, tempfile.mkdtemp(prefix=".staging-", dir=root))
    return os.path.join(_publish(staging, entry, files), CACHE_FILES)


def _publish(staging: str, entry: str, files: list[RemoteFile]) -> str:
    """Move a filled staging directory to its cache entry; the directory to load from (staging if that fails)."""
    if os.path.lexists(entry):  # stale or damaged: it did not pass the check
        with contextlib.suppress(OSError):
            shutil.rmtree(entry)
    try:
        os.rename(staging, entry)
    except OSError:  # another process published first: use its copy if it is good, else our own
        if _entry_is_valid(entry, files, _read_manifest(staging)):
            shutil.rmtree(staging, ignore_errors=True)
            return entry
        return staging
    return entry


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
    path = _copy_remote_dir(spec) if _is_remote(spec) else spec
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


@dataclass(frozen=True)
class BackendPlan:
    """How workers tokenize pairs without importing ``transformers``: the Rust tokenizer saved as JSON by the
    driver (any Beam filesystem path), the special ids that go around source and target, and which encoder the
    driver chose for it (``hf``, or ``fast``: ``seqpack.fast_encoder``, checked to give the same ids)."""

    tokenizer_json: str
    layout: SpecialLayout
    encoder: str = "hf"


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
