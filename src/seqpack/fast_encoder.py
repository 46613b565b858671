"""A second encoder for the Rust tokenizer's job (``fastokens``: ~10x faster on code), used only where it is exact.

``fastokens`` reads the same ``tokenizer.json`` as Hugging Face ``tokenizers``, but it is another
implementation: it refuses some tokenizer kinds, may treat others differently, and raises on some texts (a byte
with no token). So a run uses it only after it gave, id for id, what the Hugging Face backend gives on a sample of
the job's own texts and a fixed set of hard cases (``choose_encoder``); at run time a batch it raises on is
re-encoded by the Hugging Face backend (``FallbackEncoder``). Either way the ids, and so the shards, are the same.

    >>> choice = choose_encoder("auto", tokenizer_json, hf_encode, sample)
    >>> choice.backend, choice.reason          # ("fast", "...") or ("hf", "why not")
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from seqpack.inputs import InputFile, Record
from seqpack.inputs.read import iter_input_lists
from seqpack.inputs.records import OpenBinary
from seqpack.token_lists import BatchEncode, TokenLists

SAMPLE_TEXTS = 4000
"""Texts of the job's own inputs (sources and targets) the fast encoder must agree on."""
SAMPLE_FILES = 4
"""Input files the sample is read from (their first records), chosen by the seed."""
MAX_SAMPLE_REJECTS = 0.001
"""In ``auto``, the fast encoder is not used when it raises on more of the sample than this: each batch that holds
such a text is encoded twice."""
_CHUNK = 512
"""Texts per verification call: one bad text names itself without encoding everything one by one."""

Encode = Callable[[list[str]], list[Sequence[int]]]
"""Texts to their ids, without special tokens, a list per text: what the driver's check compares (a worker
encodes to one buffer: ``encode_cache.BatchEncode``)."""


def _reraise_unless_encoder_error(error: BaseException) -> None:
    """Let an interrupt or exit through; what the fast encoder raises on a text or a definition is its own
    exception types or a Rust panic (pyo3's ``PanicException``, a ``BaseException``, whose module is only made
    once a panic happens)."""
    if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
        raise error


class FastEncoderError(ValueError):
    """``--tokenizer-backend fast`` cannot be used for this tokenizer or these texts."""


@dataclass(frozen=True)
class EncoderChoice:
    """Which backend writes the ids (``fast`` or ``hf``) and the one line that says why."""

    backend: str
    reason: str


def unsupported_reason(tokenizer_json: str) -> str | None:
    """What in the tokenizer's definition the fast encoder cannot reproduce whatever the texts, or None.

    BPE dropout makes the Hugging Face tokenizer itself random: no other encoder can give its ids."""
    model = json.loads(tokenizer_json).get("model") or {}
    if model.get("dropout") not in (None, 0, 0.0):
        return f"the tokenizer uses BPE dropout ({model['dropout']}): its ids are random"
    return None


_PRELOADED: dict[str, Any] = {}
"""Fast encoders loaded before this process became a worker (``preload``), by the sha256 of their definition."""


def preload(tokenizer_json: str) -> bool:
    """Load this definition's fast encoder now, for a process about to fork workers (the warm pool's server, while
    the driver builds the pipeline): a worker forked after it takes it in ``load_fast`` instead of loading it
    again (~0.2 s each, at the start of tokenizing). Whether it loaded; one that does not load is left for the
    workers to fail on and report, as they would without this."""
    try:
        _PRELOADED[_definition_digest(tokenizer_json)] = load_fast(tokenizer_json)
    except FastEncoderError:
        return False
    return True


def _definition_digest(tokenizer_json: str) -> str:
    return hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()


def load_fast(tokenizer_json: str) -> Any:
    """A ``fastokens.Tokenizer`` of the same definition, truncation and padding off; ``FastEncoderError`` says why
    not (not installed, a kind it cannot reproduce, or it refuses to load it). One ``preload`` loaded is handed
    out once (a second caller gets its own: one tokenizer is never shared between callers)."""
    if _PRELOADED:
        loaded = _PRELOADED.pop(_definition_digest(tokenizer_json), None)
        if loaded is not None:
            return loaded
    try:
        import fastokens
    except ImportError as error:
        raise FastEncoderError(f"fastokens is not importable ({error}): pip install fastokens") from error
    reason = unsupported_reason(tokenizer_json)
    if reason is not None:
        raise FastEncoderError(reason)
    try:
        fast = fastokens.Tokenizer.from_json_str(tokenizer_json)
        fast.no_truncation()
        fast.no_padding()
    except BaseException as error:
        _reraise_unless_encoder_error(error)
        raise FastEncoderError(f"fastokens cannot load this tokenizer: {_one_line(error)}") from error
    return fast


def fast_encode(fast: Any) -> Encode:
    """The fast encoder's batch call, as lists of ids (what the driver's check compares)."""
    encode = fast_encode_flat(fast)
    return lambda texts: encode(texts).tolists()


def fast_encode_flat(fast: Any) -> BatchEncode:
    """The fast encoder's batch call as ``TokenLists`` over its one flat buffer: no object per text, no copy.
    Ids are vocabulary indices, far below 2**31, so reading the uint32 buffer as int32 keeps every value."""

    def encode(texts: list[str]) -> TokenLists:
        ids, offsets = fast.encode_batch_flat(texts, add_special_tokens=False)
        return TokenLists(np.frombuffer(ids, dtype=np.int32), np.frombuffer(offsets, dtype=np.uint64).astype(np.int64))

    return encode


class FallbackEncoder:
    """The fast encoder, with a batch it raises on re-encoded by the Hugging Face backend (same ids: the run chose
    the fast one only after the two agreed); ``on_fallback(n)`` counts the texts so re-encoded."""

    def __init__(self, fast: BatchEncode, hf: BatchEncode, on_fallback: Callable[[int], None]) -> None:
        self.fast = fast
        self.hf = hf
        self.on_fallback = on_fallback

    def __call__(self, texts: list[str]) -> TokenLists:
        try:
            return self.fast(texts)
        except BaseException as error:  # e.g. a byte with no token
            _reraise_unless_encoder_error(error)
            self.on_fallback(len(texts))
            return self.hf(texts)


def worker_encoder(tokenizer_json: str, hf: BatchEncode, on_fallback: Callable[[int], None]) -> BatchEncode:
    """What a worker encodes with once the driver chose the fast encoder: it, falling back per batch; or, where
    it does not load here (not installed on this worker), the Hugging Face backend, every text counted."""
    try:
        return FallbackEncoder(fast_encode_flat(load_fast(tokenizer_json)), hf, on_fallback)
    except FastEncoderError as error:
        logging.getLogger("seqpack").warning("this worker encodes with Hugging Face: %s", error)

    def counted(texts: list[str]) -> TokenLists:
        on_fallback(len(texts))
        return hf(texts)

    return counted


@dataclass(frozen=True)
class Comparison:
    """What the fast encoder did on texts the Hugging Face backend encoded: the first text it gave other ids
    for (with where they differ), and the texts it raised on."""

    mismatch: str | None
    rejected: list[str]


def compare(hf: Encode, fast: Encode, texts: Sequence[str]) -> Comparison:
    """Encode ``texts`` with both and compare id for id; stop at the first text whose ids differ."""
    rejected: list[str] = []
    for start in range(0, len(texts), _CHUNK):
        chunk = list(texts[start : start + _CHUNK])
        expected = hf(chunk)
        try:
            actual = fast(chunk)
        except BaseException as error:  # find the texts it raises on, one at a time
            _reraise_unless_encoder_error(error)
            actual = []
            for text in chunk:
                try:
                    actual.extend(fast([text]))
                except BaseException as error:
                    _reraise_unless_encoder_error(error)
                    rejected.append(text)
                    actual.append(None)
        if len(actual) != len(chunk):
            return Comparison(f"gives {len(actual)} results for {len(chunk)} texts", rejected)
        for text, want, got in zip(chunk, expected, actual, strict=True):
            if got is not None and list(got) != list(want):
                return Comparison(_mismatch(text, list(want), list(got)), rejected)
    return Comparison(None, rejected)


def _mismatch(text: str, want: list[int], got: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    return (f"on {_show(text)} the fast encoder gives other ids from token {at} "
            f"({got[at:at + 4]} where Hugging Face gives {want[at:at + 4]})")


def _show(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else "")) + (f" ({len(text):,} characters)" * (len(text) > 40))


def choose_encoder(mode: str, tokenizer_json: str, hf: Encode, sample: Sequence[str]) -> EncoderChoice:
    """The backend a run uses (see ``BACKENDS``): ``fast`` only when the fast encoder loads and gives the
    Hugging Face ids on ``sample`` (the job's texts) and on ``hard_cases``. ``mode`` ``fast`` raises
    ``FastEncoderError`` where ``auto`` chooses ``hf``."""
    if mode == "hf":
        return EncoderChoice("hf", "--tokenizer-backend hf")
    try:
        choice = _verified(tokenizer_json, hf, sample, strict=mode == "fast")
    except FastEncoderError as error:
        if mode == "fast":
            raise FastEncoderError(f"--tokenizer-backend fast cannot be used: {error}. Pass --tokenizer-backend "
                                   "auto (or hf) to use the Hugging Face tokenizer") from error
        return EncoderChoice("hf", f"the fast encoder is not used: {error}")
    return choice


def _verified(tokenizer_json: str, hf: Encode, sample: Sequence[str], *, strict: bool) -> EncoderChoice:
    """``fast`` when it agrees on every text; raising on a hard case is allowed (such a batch is re-encoded at
    run time), on more than ``MAX_SAMPLE_REJECTS`` of the job's texts only when ``strict``."""
    fast = fast_encode(load_fast(tokenizer_json))
    added = [token["content"] for token in json.loads(tokenizer_json).get("added_tokens") or []]
    hard = hard_cases(added)
    ours, theirs = compare(hf, fast, sample), compare(hf, fast, hard)
    for result in (ours, theirs):
        if result.mismatch:
            raise FastEncoderError(f"it disagrees with the Hugging Face tokenizer {result.mismatch}")
    if len(ours.rejected) > MAX_SAMPLE_REJECTS * len(sample) and not strict:
        raise FastEncoderError(f"it raises on {len(ours.rejected)} of {len(sample):,} sampled texts (e.g. "
                               f"{_show(ours.rejected[0])}): those batches would be encoded twice")
    rejected = ours.rejected + theirs.rejected
    note = ""
    if rejected:
        note = (f"; it raises on {len(rejected)} of them (e.g. {_show(rejected[0])}): a batch holding such a text "
                "is re-encoded by Hugging Face")
    return EncoderChoice("fast", f"the fast encoder (fastokens) gives the Hugging Face ids on {len(sample):,} of "
                                 f"the job's texts and {len(hard):,} hard cases{note}")


def hard_cases(added_tokens: Iterable[str] = ()) -> list[str]:
    """Texts where two implementations of one tokenizer tend to part: empty, whitespace runs, every Unicode
    general category, emoji, CJK, control bytes and NUL, the tokenizer's added tokens inside text, long lines."""
    cases = list(_fixed_cases())
    for token in added_tokens:
        cases += [token, f"a{token}b", f" {token} ", f"{token}{token}", f"x\n{token}\n", f"{token[:-1]}", f"{token}!"]
    return cases


@lru_cache(maxsize=1)
def _fixed_cases() -> tuple[str, ...]:
    whitespace = [" " * n for n in (1, 2, 3, 4, 7, 8, 16, 33)] + ["\t", "\n", "\r\n", "\n\n\n", " \t\n \r\n ", "a   ",
                  "   a", "a \n b", "x\t\t\ty", "\u00a0", "\u3000", "\u2028\u2029", "\ufeffBOM", "a\u200bb"]
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "I ❤️ 🍕!", "🏳️‍🌈 flag", "😀😀😀 😀"]
    cjk = ["日本語のテキスト", "中文文本，标点。", "한국어 텍스트", "漢字かなカナ混じりabc123", "ｆｕｌｌｗｉｄｔｈ"]
    controls = ["".join(map(chr, range(32))), "\x7f", "".join(map(chr, range(0x80, 0xA0))), "\x00", "a\x00b",
                "\x00" * 5, "line\x04end", "\x1b[31mred\x1b[0m"]
    controls += [chr(code) for code in range(32)]
    text = ["Hello world", "don't we'll they've I'm", "123 4567 89012345", "x=1;y+=2**3", "mixed العربية עברית",
            "e\u0301 n\u0303 a\u030a", "İstanbul ΣΑΣ ß ﬁ", "def f(x):\n    return x + 1\n", "<|tag|> </s> [CLS]"]
    long = ["x" * 20_000, "word " * 4_000, "def f(x):\n    return x\n" * 800, "日本" * 5_000, " " * 10_000]
    return tuple(["", *whitespace, *emoji, *cjk, *controls, *text, *_categories(), *long])


_SUPPLEMENTARY = "\U0001F600\U0001F9D1\U00020000\U0002A6D6\U0001D400\U00010400\U000E0001\U000F0000\U0010FFFD"
"""Characters beyond the Basic Multilingual Plane: emoji, CJK extension B, math letters, Deseret, a tag, private use."""


def _categories(per_category: int = 6) -> list[str]:
    """Characters of every Unicode general category (surrogates cannot be UTF-8, so not ``Cs``), spread over the
    Basic Multilingual Plane, where every other category occurs: a few alone, and each category's in one text with
    letters around; and characters beyond that plane."""
    by_category: dict[str, list[str]] = {}
    for code in range(0x10000):
        character = chr(code)
        by_category.setdefault(unicodedata.category(character), []).append(character)
    by_category.pop("Cs", None)
    cases = []
    for category in sorted(by_category):
        found = by_category[category]
        characters = "".join(found[i * len(found) // per_category] for i in range(min(per_category, len(found))))
        cases += [characters, f"a{characters} b", characters[0]]
    return [*cases, _SUPPLEMENTARY, f"x {_SUPPLEMENTARY} y", *_SUPPLEMENTARY]


def sample_texts(files: Sequence[InputFile], open_binary: OpenBinary, render: Callable[[dict[str, Any]], Any],
                 *, seed: int, count: int = SAMPLE_TEXTS) -> list[str]:
    """Up to ``count`` texts as the job tokenizes them: the first records of a few input files chosen by
    ``seed``, rendered by ``render`` (the job's template: record fields to source and target texts); records that
    cannot be rendered are skipped, and so is a file that cannot be read (the job reports those)."""
    rng = random.Random(seed)
    chosen = rng.sample(list(files), min(SAMPLE_FILES, len(files)))
    texts: list[str] = []
    for input_file in chosen:
        texts += _file_texts(input_file, open_binary, render, count // len(chosen) + 1)
    return rng.sample(texts, min(count, len(texts)))


def _file_texts(input_file: InputFile, open_binary: OpenBinary, render: Callable[[dict[str, Any]], Any],
                pairs: int) -> list[str]:
    texts: list[str] = []
    lists = iter_input_lists(input_file, open_binary)
    try:
        for items in lists:
            for item in items:
                if isinstance(item, Record):
                    try:
                        texts.extend(render(item.fields))
                    except ValueError:  # RenderError: the job rejects that record
                        continue
            if len(texts) >= 2 * pairs:
                break
    except Exception as error:  # noqa: BLE001 - the job itself reports an unreadable input
        logging.getLogger("seqpack").debug("not sampling %s for the fast encoder: %s", input_file.path, error)
    finally:
        close = getattr(lists, "close", None)
        if close is not None:
            close()
    return texts[: 2 * pairs]


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
