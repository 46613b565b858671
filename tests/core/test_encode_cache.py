"""The encode cache gives exactly the tokenizer's ids, calls it only for texts it has not kept, stays within
its memory bound, and turns itself off where texts do not repeat."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from seqpack.encode_cache import FAST_PROBE_TEXTS, MIN_HIT_RATE, EncodeCache, cache_for
from seqpack.token_lists import TokenLists


class CountingTokenizer:
    """A stand-in tokenizer (a pure function of the text) that records every text it is asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> TokenLists:
        self.calls.append(list(texts))
        return TokenLists.from_lists([self.ids(text) for text in texts])

    @staticmethod
    def ids(text: str) -> list[int]:
        return [ord(c) * 1000 + i for i, c in enumerate(text)]


batches = st.lists(st.lists(st.text(alphabet="abc", max_size=4), max_size=12), max_size=12)


@given(batches, st.integers(1, 30))
@settings(max_examples=200, deadline=None)
def test_the_cache_gives_the_tokenizers_ids_and_stays_bounded(texts: list[list[str]], max_tokens: int) -> None:
    tokenizer = CountingTokenizer()
    cache = EncodeCache(tokenizer, max_tokens=max_tokens, probe_texts=10**9)
    biggest_batch = 0  # a single batch may overfill the cache; the next one empties it first
    for batch in texts:
        biggest_batch = max(biggest_batch, sum(len(tokenizer.ids(t)) for t in set(batch)))
        got = cache.encode(batch)
        assert got.tolists() == [tokenizer.ids(text) for text in batch]
        asked = tokenizer.calls[-1] if tokenizer.calls else []
        assert len(asked) == len(set(asked)), "each distinct text at most once per call"
        assert cache.tokens == sum(len(tokenizer.ids(text)) for text in cache._slots)
        assert cache.tokens <= max(max_tokens, biggest_batch)


def test_each_distinct_text_is_tokenized_once_while_it_is_kept() -> None:
    tokenizer = CountingTokenizer()
    cache = EncodeCache(tokenizer)
    cache.encode(["one", "two", "one"])
    cache.encode(["two", "three", "one"])
    assert tokenizer.calls == [["one", "two"], ["three"]]
    assert (cache.lookups, cache.hits) == (6, 3)


def test_a_full_cache_starts_again() -> None:
    tokenizer = CountingTokenizer()
    cache = EncodeCache(tokenizer, max_tokens=6)
    cache.encode(["abc", "def"])  # 6 tokens: full
    cache.encode(["ghi"])  # would make 9: emptied first
    assert set(cache._slots) == {"ghi"} and cache.tokens == 3
    cache.encode(["abc"])
    assert tokenizer.calls[-1] == ["abc"]


def test_the_cache_turns_off_when_texts_do_not_repeat() -> None:
    tokenizer = CountingTokenizer()
    cache = EncodeCache(tokenizer, probe_texts=100, min_hit_rate=0.05)
    for start in range(0, 200, 10):
        batch = [f"text {n}" for n in range(start, start + 10)]
        assert cache.encode(batch).tolists() == [tokenizer.ids(t) for t in batch]
    assert not cache.enabled and not cache._slots
    assert cache.encode(["text 0", "text 0"]).tolists() == [tokenizer.ids("text 0")] * 2  # straight to the tokenizer


def test_the_cache_stays_on_when_texts_repeat() -> None:
    cache = EncodeCache(CountingTokenizer(), probe_texts=100, min_hit_rate=0.05)
    for start in range(50):
        cache.encode([f"source {start % 7}", f"new {start}"])
    assert cache.enabled and cache.hits >= 40


def test_over_the_fast_encoder_the_cache_needs_half_the_texts_to_repeat() -> None:
    """A miss costs about as much as the fast encoder's own call: a third of texts repeating is not enough."""
    third, half = cache_for(CountingTokenizer(), fast=True), cache_for(CountingTokenizer(), fast=True)
    for n in range(FAST_PROBE_TEXTS):
        third.encode([f"text {n - n % 3 if n % 3 == 1 else n}"])  # every third text seen before
        half.encode([f"text {n - n % 2}"])  # every second
    assert not third.enabled and half.enabled
    assert cache_for(CountingTokenizer(), fast=False).min_hit_rate == MIN_HIT_RATE
