"""Tokenize each distinct text once per worker: real corpora repeat texts, most of all on the source side.

Parallel corpora pair one source with a translation in every language (the gettext catalogs: 1.48 M pairs,
76 k distinct sources), and instruction sets repeat their instructions. A tokenizer is a pure function of the
text, so ids kept from an earlier batch are the ids a new call would give: the cache changes how much work is
done, never a single output byte.

    >>> cache = EncodeCache(lambda texts: [[len(t)] for t in texts])
    >>> cache.encode(["ab", "abc", "ab"])
    [array('i', [2]), array('i', [3]), array('i', [2])]

Ids are kept as compact ``array('i')`` (4 bytes per id, not a Python int object each), and the cache is
emptied whenever it holds ``max_tokens``: memory stays bounded whatever the data. On data whose texts do not
repeat, the cache turns itself off after a probe, so a corpus of distinct texts pays for it only briefly.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import numpy as np

Ids = Sequence[int]

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
        tokenize: Callable[[list[str]], list[Ids]],
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
        self.lookups = self.hits = self.tokens = 0
        self._ids: dict[str, array] = {}

    def encode(self, texts: Sequence[str]) -> list[Ids]:
        """The ids of every text, in order (arrays for cached texts; lists once the cache has turned off)."""
        if not self.enabled:
            return self.tokenize(list(texts))
        found = list(map(self._ids.get, texts))
        missing = [index for index, ids in enumerate(found) if ids is None]
        self.lookups += len(texts)
        if missing:
            new = list(dict.fromkeys(texts[index] for index in missing))  # each distinct text once
            encoded = {text: _compact(ids) for text, ids in zip(new, self.tokenize(new), strict=True)}
            for index in missing:
                found[index] = encoded[texts[index]]
            self.hits += len(texts) - len(new)
            self._keep(encoded)
        else:
            self.hits += len(texts)
        if self.lookups >= self.probe_texts and self.hits < self.min_hit_rate * self.lookups:
            self.enabled = False  # texts do not repeat here: stop paying for lookups and copies
            self._ids.clear()
        return found

    def _keep(self, encoded: dict[str, array]) -> None:
        size = sum(map(len, encoded.values()))
        if self.tokens + size > self.max_tokens:
            self._ids.clear()
            self.tokens = 0
        self._ids.update(encoded)
        self.tokens += size


def cache_for(tokenize: Callable[[list[str]], list[Ids]], *, fast: bool) -> EncodeCache:
    """A cache over ``tokenize`` with the probe and threshold of the Hugging Face backend or, ``fast``, of the
    fast encoder."""
    if fast:
        return EncodeCache(tokenize, probe_texts=FAST_PROBE_TEXTS, min_hit_rate=FAST_MIN_HIT_RATE)
    return EncodeCache(tokenize)


def _compact(ids: Ids) -> array:
    """``ids`` as ``array('i')``: an int32 numpy array (the fast encoder's views) by its bytes, anything else
    one id at a time."""
    if isinstance(ids, np.ndarray) and ids.dtype == np.int32:
        return array("i", ids.tobytes())
    return array("i", ids)
