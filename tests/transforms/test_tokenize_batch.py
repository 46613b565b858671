"""The tokenize step handles a batch in array operations; it must add exactly the examples, rejections and
statistics that building every example on its own (``masking.build_example``) gives."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from apache_beam.utils.windowed_value import WindowedValue

from seqpack.config import RunConfig
from seqpack.inputs import Rejected
from seqpack.keys import choose_split, example_key
from seqpack.masking import build_example, masks_example_starts
from seqpack.pipeline.build import tokenize_options
from seqpack.tokenizer import load_for_run, pair_layout
from seqpack.transforms.shuffle import SpillFile, read_spill_range
from seqpack.transforms.tokenize import TokenizeDoFn, filtered_reason, trains

PAIRS = [
    ("Translate: cat = ", "chat"),
    ("", "only a target"),
    ("a source with no target = ", ""),  # rejected: empty target
    ("short = ", "x"),  # dropped by --min-target-tokens 3
    ("a rather long source text that goes on and on and on for a while = ", "ok"),  # over --max-source-tokens
    ("Hello world = ", "Hello " * 20),  # over max_length: truncated, split or dropped
    ("Hello world and more = " * 4, "a reply"),  # a long source: its start is cut when truncating
    ("hello = ", "world"),
    ("hello = ", "world"),  # an exact duplicate
    *[("word " * k + "= ", "fine") for k in range(2, 14)],  # some over --max-source-tokens but within max_length
    *[(f"pair {i} = ", f"answer number {i}") for i in range(40)],
]


Triple = tuple[str, str, str]
Found = tuple[list[tuple], list[tuple[str, str]], Counter]


def reference(config: RunConfig, tokenizer: Any, pairs: list[Triple]) -> Found:
    """Examples one at a time, the slow way: (split, key, ids, n_masked), rejections, and a few counts."""
    layout = pair_layout(tokenizer, add_eos=config.add_eos)
    examples, rejected, counts = [], [], Counter()
    for source, target, origin in pairs:
        src = tokenizer(source, add_special_tokens=False)["input_ids"]
        tgt = tokenizer(target, add_special_tokens=False)["input_ids"]
        if not tgt:
            rejected.append(("empty_target", origin))
            continue
        src, tgt = list(layout.prefix) + src, tgt + list(layout.suffix)
        reason = filtered_reason(len(src), len(tgt), tokenize_options(config))
        if reason:
            counts[f"dropped:{reason}"] += 1
            continue
        outcome = build_example(
            src, tgt, max_length=config.max_length, overlong=config.overlong, train_on=config.train_on,
            keep_prefix=len(layout.prefix), end_tokens=len(layout.suffix),
        )
        if not trains(outcome, masks_example_starts(config.train_on, chat=False)):
            rejected.append(("no_trained_tokens", origin))
            continue
        counts["source_tokens"] += outcome.source_tokens  # counted for examples dropped as overlong too
        counts["target_tokens"] += outcome.target_tokens
        if outcome.dropped_reason:
            counts[f"dropped:{outcome.dropped_reason}"] += 1
            continue
        split = choose_split(f"{source}\0{target}", config.validation_fraction)
        counts[f"split:{split}"] += 1
        counts["tokens_in"] += outcome.tokens_in
        for index, piece in enumerate(outcome.pieces):
            key = example_key(piece.ids, piece.mask_payload(), index, config.seed)
            examples.append((split, key, tuple(piece.ids.tolist()), piece.n_masked))
    return sorted(examples), sorted(rejected), counts


def batched(config: RunConfig, spill_dir: Path, pairs: list[Triple]) -> Found:
    """The same through ``TokenizeDoFn``, the whole list as one batch."""
    tokenize = TokenizeDoFn(tokenize_options(config), str(spill_dir))
    tokenize.setup()
    tokenize.start_bundle()
    outputs = list(tokenize.process(pairs))
    assert tokenize.source_cache.hits > 0, "repeated sources come out of the encode cache"
    stats = tokenize.stats
    outputs += list(tokenize.finish_bundle())
    values = [out.value if isinstance(out, WindowedValue) else out for out in outputs]
    tagged = [v.value for v in values if isinstance(getattr(v, "value", None), Rejected)]
    rejected = sorted((r.reason, r.origin) for r in tagged)
    examples = []
    for spill in (v for v in values if isinstance(v, SpillFile)):
        columns = read_spill_range(spill.path, 0, None, with_trained=False)
        for i in range(len(columns)):
            key = int(columns.key_hi[i]).to_bytes(8, "big") + int(columns.key_lo[i]).to_bytes(8, "big")
            examples.append((spill.split, key, tuple(columns.example_ids(i).tolist()), int(columns.n_masked[i])))
    counts = Counter({f"split:{k}": v for k, v in stats["examples_by_split"].items()})
    counts.update({f"dropped:{k}": v for k, v in stats["dropped_by_reason"].items()})
    counts.update({k: stats[k] for k in ("source_tokens", "target_tokens")})
    counts["tokens_in"] = stats["tokens_in"] - stats["tokens_dropped"]  # of the examples kept
    return sorted(examples), rejected, +counts


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"overlong": "truncate-left"},
        {"train_on": "all", "validation_fraction": 0.4, "seed": 7},
        {"overlong": "split", "min_target_tokens": 3, "max_source_tokens": 12},
        {"overlong": "drop", "validation_fraction": 0.5, "add_eos": False},
    ],
)
def test_a_batch_adds_what_one_example_at_a_time_adds(tokenizer_dir: Path, tmp_path: Path, options: dict) -> None:
    config = RunConfig(inputs=["x"], output="o", tokenizer=str(tokenizer_dir), max_length=24, **options)
    pairs = [(source, target, f"f:{line}") for line, (source, target) in enumerate(PAIRS, 1)]
    expected = reference(config, load_for_run(str(tokenizer_dir)), pairs)
    got = batched(config, tmp_path / "spill", pairs)
    assert got[0] == expected[0]
    assert got[1] == expected[1] == [("empty_target", "f:3")]
    assert got[2] == +expected[2]
    assert sum(n for k, n in got[2].items() if k.startswith("split:")) >= 40


def test_the_hugging_face_backend_is_loaded_only_when_first_called(tokenizer_dir: Path) -> None:
    """A worker encoding with the fast encoder keeps the Hugging Face backend for a batch the fast one rejects:
    loaded at that first call, not at set-up, and then the same ids as the backend loaded at once."""
    from seqpack.tokenizer import load_backend
    from seqpack.transforms.tokenize import _LoadedOnFirstCall

    definition = (tokenizer_dir / "tokenizer.json").read_text()
    lazy = _LoadedOnFirstCall(definition)
    assert lazy._call is None
    texts = ["Hello world", "", "line\x04end"]
    expected = [e.ids for e in load_backend("", definition).encode_batch(texts, add_special_tokens=False)]
    assert [e.ids for e in lazy(texts, add_special_tokens=False)] == expected
    assert lazy._call is not None
