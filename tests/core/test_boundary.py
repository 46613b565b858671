"""The joint boundary (``seqpack.boundary``): a text tokenized whole, its trained spans found by character
offsets, and an example whose span edge lies inside a token rejected."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from boundaries import CLEAN, MERGING, merging_chat_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqpack.boundary import (
    REASON,
    BoundaryError,
    joint_pairs,
    joint_segments,
    offsets_encoder,
    spans_of,
    tokens_before,
    trained_mask,
)
from seqpack.chat import render_segments, tokenize_segments
from seqpack.schemas.rejected import REASONS


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(merging_chat_tokenizer(tmp_path_factory.mktemp("merging"))))


def _decode(tokenizer: Any, ids: Any) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _whole(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))


def _conversation(*answers: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}]
    for number, answer in enumerate(answers):
        messages += [{"role": "user", "content": f"Question {number}"}, {"role": "assistant", "content": answer}]
    return messages


# --- offsets → mask ---------------------------------------------------------------------------------------


def test_a_token_is_trained_when_it_starts_inside_a_span() -> None:
    offsets = [(0, 2), (2, 3), (3, 3), (3, 6), (6, 7)]  # a zero-width token at 3 goes with what follows it
    assert trained_mask(offsets, [(3, 6)], "ab\nxyz\n").tolist() == [False, False, True, True, False]
    assert trained_mask(offsets, [(0, 2), (6, 7)], "ab\nxyz\n").tolist() == [True, False, False, False, True]
    assert tokens_before(offsets, 7, "ab\nxyz\n", "the end") == 5


@pytest.mark.parametrize("span", [(1, 6), (3, 5), (4, 7)])
def test_a_span_edge_inside_a_token_is_rejected_with_the_reason(span: tuple[int, int]) -> None:
    with pytest.raises(BoundaryError) as caught:
        trained_mask([(0, 2), (2, 3), (3, 6), (6, 7)], [span], "ab\nxyz\n")
    assert caught.value.reason == REASON and REASON in REASONS
    assert "falls inside the token" in caught.value.detail


def test_segments_give_the_text_and_its_trained_runs() -> None:
    segments = [("<s>Q", False), ("A", True), ("</s>", True), ("\n", False), ("B", True)]
    assert spans_of(segments) == ("<s>QA</s>\nB", [(4, 9), (10, 11)])
    assert spans_of([]) == ("", [])


# --- a real tokenizer: conversations ----------------------------------------------------------------------


def test_joint_conversations_are_apply_chat_template_with_labels_on_the_assistant_spans(tokenizer: Any) -> None:
    encode = offsets_encoder(tokenizer)
    conversations = [_conversation(answer) for answer in CLEAN] + [_conversation(*CLEAN)]
    segments = [render_segments(tokenizer, messages) for messages in conversations]
    for messages, result in zip(conversations, joint_segments(encode, segments), strict=True):
        assert not isinstance(result, BoundaryError), result
        ids, trained = result
        assert ids.dtype == np.int32 and ids.tolist() == _whole(tokenizer, messages)
        edges = np.flatnonzero(np.diff(np.r_[0, trained.astype(np.int8), 0]))
        runs = [_decode(tokenizer, ids[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        assert runs == [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]


def test_an_answer_that_merges_with_the_prompt_is_rejected_jointly_and_split_by_turn(tokenizer: Any) -> None:
    messages = _conversation(CLEAN[0], MERGING)
    segments = render_segments(tokenizer, messages)
    [result] = joint_segments(offsets_encoder(tokenizer), [segments])
    assert isinstance(result, BoundaryError) and result.reason == REASON
    assert "trained span 2" in result.detail and "'\\n '" in result.detail
    # By turn, the answer is tokenized on its own: what the model produces after the generation prompt.
    [(ids, trained)] = tokenize_segments(tokenizer, [segments])
    assert ids.tolist() != _whole(tokenizer, messages)
    assert _decode(tokenizer, ids[trained][-3:]) == "  Bonjour<|im_end|>"


def test_trimmed_offsets_do_not_hide_a_merged_token(tokenizer: Any) -> None:
    """GPT-2's post-processor trims spaces off offsets: the ``"\\n "`` token would seem to end before the answer."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    trimming = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    trimming.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    segments = render_segments(trimming, _conversation(MERGING))
    [result] = joint_segments(offsets_encoder(trimming), [segments])
    assert isinstance(result, BoundaryError)


def test_a_tokenizer_without_offsets_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="not a fast .* --chat-boundary turn"):
        offsets_encoder(SimpleNamespace(name_or_path="slow-one"))


# --- a real tokenizer: pairs ------------------------------------------------------------------------------

pieces = st.lists(st.sampled_from(["a", "b", " ", "\n", "é", "Bonjour", "le"]), max_size=6).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=pieces, target=pieces.filter(bool))
def test_a_pair_is_cut_exactly_where_its_target_starts_or_rejected(tokenizer: Any, source: str, target: str) -> None:
    [result] = joint_pairs(offsets_encoder_of(tokenizer), [(source, target)])
    whole = tokenizer(source + target, add_special_tokens=False)["input_ids"]
    cuttable = any(_decode(tokenizer, whole[:k]) == source for k in range(len(whole) + 1))
    assert isinstance(result, BoundaryError) != cuttable
    if cuttable:
        source_ids, target_ids = result
        assert source_ids + target_ids == whole
        assert (_decode(tokenizer, source_ids), _decode(tokenizer, target_ids)) == (source, target)


_ENCODERS: dict[int, Any] = {}


def offsets_encoder_of(tokenizer: Any) -> Any:
    """One encoder per tokenizer for the hypothesis examples (building it checks probe texts)."""
    return _ENCODERS.setdefault(id(tokenizer), offsets_encoder(tokenizer))


def test_pairs_that_merge_are_rejected_and_the_others_split(tokenizer: Any) -> None:
    results = joint_pairs(offsets_encoder(tokenizer), [("Hi\n", MERGING), ("Hi\n", CLEAN[0])])
    assert isinstance(results[0], BoundaryError) and "the target's start (character 3)" in results[0].detail
    assert results[1] == (tokenizer("Hi\n", add_special_tokens=False)["input_ids"],
                          tokenizer(CLEAN[0], add_special_tokens=False)["input_ids"])



def test_each_boundary_option_belongs_to_its_kind_of_template() -> None:
    from seqpack.config import RunConfig
    from seqpack.errors import UsageError

    base = {"inputs": ["in"], "output": "out", "tokenizer": "tok"}
    RunConfig(**base, pair_boundary="joint").validate()
    RunConfig(**base, template="chat", chat_boundary="joint").validate()
    with pytest.raises(UsageError, match="--chat-boundary is for --template chat"):
        RunConfig(**base, chat_boundary="joint").validate()
    with pytest.raises(UsageError, match="--pair-boundary is for pair templates"):
        RunConfig(**base, template="chat", pair_boundary="joint").validate()
