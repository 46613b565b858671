"""The tokenize step under ``--pair-boundary`` / ``--chat-boundary``: ``joint`` tokenizes each example's text
whole and rejects one whose boundary falls inside a token; everything after the ids (EOS, overlong policies,
filters, keys, statistics) is what ``split`` / ``turn`` do."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apache_beam.utils.windowed_value import WindowedValue
from boundaries import CLEAN, MERGING, merging_chat_tokenizer

from seqpack.boundary import REASON
from seqpack.chat import render_segments, tokenize_segments
from seqpack.config import RunConfig
from seqpack.inputs import Rejected
from seqpack.pipeline.build import _tokenize_fn, tokenize_options
from seqpack.tokenizer import BackendPlan, load_for_run, pair_layout
from seqpack.transforms.joint import JointChatTokenizeDoFn, JointTokenizeDoFn
from seqpack.transforms.render import RenderedChat
from seqpack.transforms.shuffle import SpillFile, read_spill_range
from seqpack.transforms.tokenize import ChatTokenizeDoFn, TokenizeDoFn

CLEAN_PAIRS = [  # "\n" then a letter: a token boundary whether tokenized apart or together
    ("Translate: the cat\n", "Le chat"),
    ("Hello world\n", "Hello " * 20),  # over max_length: truncated, split or dropped
    ("Hello world and more\n" * 4, "a reply"),  # a long source
    ("short\n", "x"),
    *[(f"pair {i}\n", f"answer number {i}") for i in range(12)],
]


@pytest.fixture(scope="module")
def merging_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return merging_chat_tokenizer(tmp_path_factory.mktemp("merging"))


def run_dofn(dofn: Any, batch: list) -> tuple[list[tuple], list[Rejected], Counter]:
    """One bundle of one batch: its examples ``(split, key, ids, n_masked, trained)`` sorted, its rejections and
    its statistics (zero counts left out)."""
    dofn.setup()
    dofn.start_bundle()
    outputs = list(dofn.process(batch))
    outputs += list(dofn.finish_bundle())
    values = [out.value if isinstance(out, WindowedValue) else out for out in outputs]
    rejected = [v.value for v in values if isinstance(getattr(v, "value", None), Rejected)]
    examples = []
    for spill in (v for v in values if isinstance(v, SpillFile)):
        columns = read_spill_range(spill.path, 0, None, with_trained=True)
        for i in range(len(columns)):
            key = (int(columns.key_hi[i]), int(columns.key_lo[i]))
            lo, hi = columns.offsets[i], columns.offsets[i + 1]
            trained = None if columns.trained is None else tuple(columns.trained[lo:hi].tolist())
            examples.append((spill.split, key, tuple(columns.example_ids(i).tolist()), int(columns.n_masked[i]),
                             trained))
    stats = Counter()
    for name, value in dofn.stats.items():
        if isinstance(value, dict):
            stats.update({f"{name}:{k}": v for k, v in value.items()})
        elif isinstance(value, list):
            stats.update({f"{name}:{k}": v for k, v in enumerate(value)})
        else:
            stats[name] = value
    return sorted(examples), rejected, +stats


def pair_config(tokenizer: Path, boundary: str, **options: Any) -> RunConfig:
    return RunConfig(inputs=["x"], output="o", tokenizer=str(tokenizer), pair_boundary=boundary,
                     **{"max_length": 24, **options})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"add_eos": False, "overlong": "truncate-left"},
        {"overlong": "split", "train_on": "all", "validation_fraction": 0.4},
        {"overlong": "drop", "min_target_tokens": 3, "max_source_tokens": 12},
    ],
)
def test_joint_pairs_build_what_split_builds_when_the_boundary_is_a_token_boundary(
    tokenizer_dir: Path, tmp_path: Path, options: dict
) -> None:
    pairs = [(source, target, f"f:{n}") for n, (source, target) in enumerate(CLEAN_PAIRS, 1)]
    results = {}
    for boundary in ("split", "joint"):
        config = pair_config(tokenizer_dir, boundary, **options)
        dofn = _tokenize_fn(config, str(tmp_path / boundary), None)
        assert type(dofn) is {"split": TokenizeDoFn, "joint": JointTokenizeDoFn}[boundary]
        results[boundary] = run_dofn(dofn, pairs)
    assert results["joint"] == results["split"]
    assert results["joint"][0] and not results["joint"][1]


def test_joint_pairs_are_the_whole_text_with_bos_and_eos_and_reject_a_merged_boundary(
    merging_dir: Path, tmp_path: Path
) -> None:
    tokenizer = load_for_run(str(merging_dir))
    pairs = [("Hi\n", MERGING, "f:1"), *[("Hi\n", answer, f"f:{n}") for n, answer in enumerate(CLEAN, 2)]]
    config = pair_config(merging_dir, "joint", max_length=64)
    layout = pair_layout(tokenizer, add_eos=True)
    backend = tmp_path / "backend.json"
    backend.write_text(tokenizer.backend_tokenizer.to_str(), encoding="utf-8")
    for plan in (None, BackendPlan(str(backend), layout)):  # with the driver's Rust tokenizer, and without
        examples, rejected, _ = run_dofn(JointTokenizeDoFn(tokenize_options(config), str(tmp_path), plan), pairs)
        assert [(r.reason, r.origin, r.raw) for r in rejected] == [
            (REASON, "f:1", f'{{"source": "Hi\\n", "target": "{MERGING}"}}'.encode())
        ]
        expected = set()
        for source, target, _ in pairs[1:]:
            whole = tokenizer(source + target, add_special_tokens=False)["input_ids"]
            n_source = len(tokenizer(source, add_special_tokens=False)["input_ids"])
            expected.add((tuple([*layout.prefix, *whole, *layout.suffix]), len(layout.prefix) + n_source))
        assert {(ids, n_masked) for _, _, ids, n_masked, _ in examples} == expected
    # Split tokenizes the target on its own: the merged pair is kept, with other ids than the whole text's.
    split, rejected, _ = run_dofn(TokenizeDoFn(tokenize_options(pair_config(merging_dir, "split", max_length=64)),
                                               str(tmp_path)), pairs)
    assert not rejected and len(split) == len(pairs)
    assert len({ids for _, _, ids, _, _ in split} - {ids for ids, _ in expected}) == 1


def _chats(tokenizer: Any, answers: list[str]) -> list[RenderedChat]:
    chats = []
    for line, answer in enumerate(answers, 1):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": answer}, {"role": "user", "content": "Again"},
                    {"role": "assistant", "content": CLEAN[line % len(CLEAN)]}]
        chats.append(RenderedChat(messages, render_segments(tokenizer, messages), f"c:{line}"))
    return chats


def test_chat_boundaries_turn_and_joint(merging_dir: Path, tmp_path: Path) -> None:
    tokenizer = load_for_run(str(merging_dir))
    chats = _chats(tokenizer, [MERGING, *CLEAN])
    config = RunConfig(inputs=["x"], output="o", tokenizer=str(merging_dir), template="chat", max_length=256,
                       chat_boundary="joint")
    joint = _tokenize_fn(config, str(tmp_path / "joint"), None)
    assert isinstance(joint, JointChatTokenizeDoFn)
    examples, rejected, stats = run_dofn(joint, chats)
    assert [(r.reason, r.origin) for r in rejected] == [(REASON, "c:1")]
    assert b'"content": "  Bonjour"' in rejected[0].raw and "trained span 1" in rejected[0].detail
    whole = {tuple(tokenizer.apply_chat_template(chat.messages, tokenize=True, return_dict=False)): chat
             for chat in chats[1:]}
    assert {ids for _, _, ids, _, _ in examples} == set(whole)
    for _, _, ids, _, trained in examples:
        edges = np.flatnonzero(np.diff(np.r_[0, np.array(trained, dtype=np.int8), 0]))
        runs = [tokenizer.decode(ids[a:b], skip_special_tokens=False)
                for a, b in zip(edges[::2], edges[1::2], strict=True)]
        answers = [m["content"] for m in whole[ids].messages if m["role"] == "assistant"]
        assert runs == [answer + "<|im_end|>" for answer in answers]
    assert stats["pieces"] == len(chats) - 1

    # turn: every segment on its own, the merged conversation kept; the same code after the ids
    turn = ChatTokenizeDoFn(tokenize_options(config), str(tmp_path / "turn"))
    examples, rejected, _ = run_dofn(turn, chats)
    expected = {(tuple(ids.tolist()), tuple(mask.tolist()))
                for ids, mask in tokenize_segments(tokenizer, [chat.segments for chat in chats])}
    assert not rejected and {(ids, trained) for _, _, ids, _, trained in examples} == expected
