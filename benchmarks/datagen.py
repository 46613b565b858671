"""Seeded synthetic source/target pairs with a realistic, long-tailed length distribution, as JSONL.

    python benchmarks/datagen.py --pairs 1000000 -o /tmp/pairs-1m.jsonl
    python benchmarks/datagen.py --pairs 100000 -o /tmp/pairs.jsonl --stats

Each pair looks like a translation or instruction pair: a source sentence of pseudo-English words and a target
of pseudo-words from a second, accented "language". Words are drawn from a Zipf distribution (s = 1.07) over
a seeded vocabulary of 40,000 syllable-built words per side, with some punctuation and numbers, so a BPE
tokenizer learns realistic sub-words.

Lengths (in words):

- the body: source ~ lognormal(median 12, sigma 0.9); target = source x lognormal(median 1.15, sigma 0.25);
- the tail: 0.6 % of the pairs are long documents, source ~ 150 x Pareto(alpha 1.3) words (capped at 6,000), so
  a few per thousand exceed a 2,048-token block and take the truncation path.

Pairs are generated in chunks of 10,000, chunk ``c`` from ``numpy.random.default_rng([seed, c])``: the output
for ``N`` pairs is the first ``N`` lines of the output for ``2N`` (the scaling check relies on this), and the same
seed always gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np

CHUNK = 10_000
VOCAB_WORDS = 40_000
ZIPF_S = 1.07
TAIL_FRACTION = 0.006
MAX_WORDS = 6_000

SOURCE_SYLLABLES = (  # noqa: SIM905 - a list of syllables, easier to read this way
    "a an ar as at be ble ca ce ci co con de der di do e ed el en er es ex for ge in ing ion is it la le "
    "li lo ly ma me mi mo na ne ni no o of on or ou pa pe per pi po pro ra re ri ro sa se si so st ta te "
    "th ti to tion tr u un ur ve vi wa we wh"
).split()
TARGET_SYLLABLES = (  # noqa: SIM905
    "a à ai an au ba be bé ca ce ci co dé de des di du e é è en ent er es et eu fa fe fi fo ge gé i il in "
    "is la le lé li lo ma me mé mi mo na ne né ni no ô ou pa pe pé pi po qu ra re ré ri ro sa se sé si so "
    "ta te té ti to tre u ui un va ve vé vi x ç"
).split()


def _vocabulary(rng: np.random.Generator, syllables: list[str], size: int) -> list[str]:
    """``size`` distinct pseudo-words of 1-4 syllables; rank 0 is the most frequent (and the shortest)."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        # frequent words are short, as in natural language
        n_syll = 1 + min(3, int(rng.poisson(0.4 + 1.6 * len(words) / size)))
        word = "".join(syllables[i] for i in rng.integers(0, len(syllables), n_syll))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _zipf_cdf(size: int, s: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** s
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


class PairGenerator:
    """Seeded pairs: ``chunk(c)`` is a list of (source, target) for chunk ``c``."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        rng = np.random.default_rng([seed, 2**31 - 1])
        self.source_words = _vocabulary(rng, SOURCE_SYLLABLES, VOCAB_WORDS)
        self.target_words = _vocabulary(rng, TARGET_SYLLABLES, VOCAB_WORDS)
        self.cdf = _zipf_cdf(VOCAB_WORDS, ZIPF_S)

    def lengths(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        source = rng.lognormal(np.log(12.0), 0.9, n)
        tail = rng.random(n) < TAIL_FRACTION
        source[tail] = 150.0 * (1.0 + rng.pareto(1.3, int(tail.sum())))
        target = source * rng.lognormal(np.log(1.15), 0.25, n)
        clip = (1, MAX_WORDS)
        return np.clip(source, *clip).astype(np.int64), np.clip(target, *clip).astype(np.int64)

    def _texts(self, rng: np.random.Generator, lengths: np.ndarray, vocab: list[str]) -> list[str]:
        total = int(lengths.sum())
        ranks = np.searchsorted(self.cdf, rng.random(total)).tolist()
        # punctuation after ~1 word in 9 (commas) and a sentence end after ~1 in 16; a number now and then
        marks = rng.random(total)
        numbers = rng.integers(0, 10_000, total)
        words = [vocab[r] for r in ranks]
        for i in np.flatnonzero(marks < 0.01).tolist():
            words[i] = str(numbers[i])
        for i in np.flatnonzero((marks > 0.88) & (marks < 0.94)).tolist():
            words[i] += ","
        for i in np.flatnonzero(marks > 0.94).tolist():
            words[i] += "."
        texts = []
        start = 0
        for length in lengths.tolist():
            text = " ".join(words[start : start + length])
            start += length
            text = text[0].upper() + text[1:]
            if text[-1] not in ".,":
                text += "."
            texts.append(text)
        return texts

    def chunk(self, index: int, n: int = CHUNK) -> list[tuple[str, str]]:
        rng = np.random.default_rng([self.seed, index])
        source_len, target_len = self.lengths(rng, n)
        sources = self._texts(rng, source_len, self.source_words)
        targets = self._texts(rng, target_len, self.target_words)
        return list(zip(sources, targets, strict=True))

    def pairs(self, n: int) -> Iterator[tuple[str, str]]:
        for index in range(-(-n // CHUNK)):
            yield from self.chunk(index, min(CHUNK, n - index * CHUNK))


def write_jsonl(path: str, n: int, seed: int = 0) -> int:
    """Write ``n`` pairs to ``path``; return the bytes written."""
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for source, target in PairGenerator(seed).pairs(n):
            line = json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n"
            written += len(line.encode())
            out.write(line)
    return written


def describe(path: str) -> str:
    words_src, words_tgt = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            words_src.append(pair["source"].count(" ") + 1)
            words_tgt.append(pair["target"].count(" ") + 1)
    lines = []
    for name, values in (("source words", words_src), ("target words", words_tgt)):
        v = np.array(values)
        q = np.percentile(v, [50, 90, 99, 99.9, 100]).astype(int)
        lines.append(f"{name}: mean {v.mean():.1f}, median {q[0]}, p90 {q[1]}, p99 {q[2]}, p99.9 {q[3]}, max {q[4]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", "-n", type=int, required=True, help="number of pairs (10k to 2M and beyond)")
    parser.add_argument("--output", "-o", required=True, help="JSONL file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", action="store_true", help="print the length distribution afterwards")
    args = parser.parse_args(argv)
    size = write_jsonl(args.output, args.pairs, args.seed)
    print(f"wrote {args.pairs:,} pairs ({size / 1e6:.1f} MB) to {args.output}", file=sys.stderr)
    if args.stats:
        print(describe(args.output), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
