"""Tokenize each distinct text once per worker: real corpora repeat texts, most of all on the source side.

Parallel corpora pair one source with a translation in every language (the gettext catalogs: 1.48 M pairs,
76 k distinct sources), and instruction sets repeat their instructions. A tokenizer is a pure function of the
text, so ids kept from an earlier batch are the ids a new call would give: the cache changes how much work is
done, never a single output byte.

    >>> cache = EncodeCache(lambda texts: TokenLists.from_lists([[len(t)] for t in texts]))
    >>> cache.encode(["ab", "abc", "ab"]).tolists()
    [[2], [3], [2]]

Kept ids live in one int32 buffer (4 bytes per id, no object per text), and the cache starts again whenever
new ids would take it past ``max_tokens``: memory stays bounded whatever the data. A batch comes out as
``TokenLists`` gathered from that buffer in one step. On data whose texts do not repeat, the cache turns itself
off after a probe, so a corpus of distinct texts pays for it only briefly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqpack.token_lists import BatchEncode, TokenLists

MAX_TOKENS = 4 << 20
"""Ids held at most (16 MB of them) before the cache is emptied and starts again."""
PROBE_TEXTS = 50_000
"""Texts looked up before the cache decides whether it is worth keeping."""
MIN_HIT_RATE = 0.05
"""Below this share of texts found, the cache turns itself off: a hit saves a tokenizer call (tens of µs), a
miss costs under a µs of copying, so even a small share of repeats pays."""
FAST_PROBE_TEXTS = 5_000
FAST_MIN_HIT_RATE = 0.5
"""The same decision over the fast encoder (``seqpack.fast_encoder``), which is ~10x cheaper: there a miss (the
lookup and copying the ids into the cache's arrays) costs about 0.8 of encoding the text again (measured on code,
synthetic and gettext pairs), so the cache pays only where about half the texts repeat, and it decides sooner."""


class EncodeCache:
    """``encode(texts)`` as ``tokenize(texts)`` would give it, calling ``tokenize`` only for texts not seen."""

    def __init__(
        self,
        tokenize: BatchEncode,
        *,
        max_tokens: int = MAX_TOKENS,
        probe_texts: int = PROBE_TEXTS,
        min_hit_rate: float = MIN_HIT_RATE,
    ) -> None:
        self.tokenize = tokenize
        self.max_tokens = max_tokens
        self.probe_texts = probe_texts
        self.min_hit_rate = min_hit_rate
        self.enabled = True
        self.lookups = self.hits = 0
        self._empty()

    @property
    def tokens(self) -> int:
        """Ids kept."""
        return len(self._ids)

    def encode(self, texts: Sequence[str]) -> TokenLists:
        """The ids of every text, in order."""
        if not self.enabled:
            return self.tokenize(list(texts))
        found = list(map(self._slots.get, texts))
        self.lookups += len(texts)
        new = list(dict.fromkeys(text for text, slot in zip(texts, found, strict=True) if slot is None))
        self.hits += len(texts) - len(new)
        if new:
            encoded = self.tokenize(new)
            if self.tokens and self.tokens + len(encoded.ids) > self.max_tokens:
                self._start_again(set(texts) - set(new))
            self._keep(new, encoded)
            found = list(map(self._slots.__getitem__, texts))
        encoded = self._take(np.fromiter(found, dtype=np.int64, count=len(found)))
        if self.lookups >= self.probe_texts and self.hits < self.min_hit_rate * self.lookups:
            self.enabled = False  # texts do not repeat here: stop paying for lookups and copies
            self._empty()
        return encoded

    def _take(self, slots: np.ndarray) -> TokenLists:
        return TokenLists(self._ids.values, self._offsets.values).take(slots)

    def _keep(self, texts: list[str], encoded: TokenLists) -> None:
        """Keep each text's ids in a slot of its own."""
        first = len(self._offsets) - 1
        self._slots.update(zip(texts, range(first, first + len(texts)), strict=True))
        self._offsets.extend(self.tokens + encoded.offsets[1:] - encoded.offsets[0])
        self._ids.extend(encoded.ids[encoded.offsets[0] : encoded.offsets[-1]])

    def _start_again(self, held: set[str]) -> None:
        """Empty a full cache, keeping only ``held`` (texts of the batch at hand): it then holds at most one
        batch's distinct texts."""
        texts = sorted(held)
        kept = self._take(np.array([self._slots[text] for text in texts], np.int64))
        self._empty()
        self._keep(texts, kept)

    def _empty(self) -> None:
        self._slots: dict[str, int] = {}
        self._ids = _Growing(np.int32)
        self._offsets = _Growing(np.int64)  # slot i's ids: ids[offsets[i]:offsets[i+1]]
        self._offsets.extend(np.zeros(1, np.int64))


class _Growing:
    """A numpy array appended to in place, its capacity doubled when full: appending is amortized O(added)."""

    def __init__(self, dtype: type) -> None:
        self._buffer = np.empty(1024, dtype)
        self._used = 0

    def __len__(self) -> int:
        return self._used

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self._used]

    def extend(self, values: np.ndarray) -> None:
        need = self._used + len(values)
        if need > len(self._buffer):
            grown = np.empty(max(need, 2 * len(self._buffer)), self._buffer.dtype)
            grown[: self._used] = self.values
            self._buffer = grown
        self._buffer[self._used : need] = values
        self._used = need


def cache_for(tokenize: BatchEncode, *, fast: bool) -> EncodeCache:
    """A cache over ``tokenize`` with the probe and threshold of the Hugging Face backend or, ``fast``, of the
    fast encoder."""
    if fast:
        return EncodeCache(tokenize, probe_texts=FAST_PROBE_TEXTS, min_hit_rate=FAST_MIN_HIT_RATE)
    return EncodeCache(tokenize)
