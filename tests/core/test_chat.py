"""Conversations through chat templates: records → messages → exact (text, trained?) segments → ids and mask.

The templates are written here (ChatML, Llama-3-like, Mistral-like and some deliberately broken ones) and set
on a small BPE tokenizer built by the tests, with their markers added as special tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqpack.chat import (
    check_segment_roundtrip,
    conversation_from_record,
    render_segments,
    tokenize_segments,
    unknown_special_strings,
)
from seqpack.prompt_templates import RenderError

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (  # like Meta's: BOS text first, header, content | trim, <|eot_id|>
    "{{- '<|begin_of_text|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
MISTRAL = (  # like Mistral-7B-Instruct: system folded into the first user turn, roles must alternate
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] + '\\n\\n' %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
COUNTER = "{{- messages | length }} messages\n" + CHATML  # the top changes as the conversation grows
SHORTENS_OLD_TURNS = CHATML.replace(  # like templates that strip reasoning from all but the last turn
    "message['content'] + '<|im_end|>'",
    "(message['content'] if loop.last or message['role'] != 'assistant' else message['content'][:4]) + '<|im_end|>'",
)
PROMPT_MISMATCH = CHATML.replace("'<|im_start|>assistant\\n'", "'<|im_start|>bot\\n'")

TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL}
EXPECTED_TRAINED: dict[str, Callable[[str], str]] = {  # what the model must produce after the generation prompt
    "chatml": lambda content: content + "<|im_end|>",
    "llama3": lambda content: content.strip() + "<|eot_id|>",
    "mistral": lambda content: " " + content + "</s>",
}
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# [INST] / [/INST] stay plain text, as in the first Mistral tokenizers.


def _chat_tokenizer(directory: Path, template: str | None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def tokenizers(tokenizer_dir: Path) -> dict[str, Any]:
    names = {**TEMPLATES, "counter": COUNTER, "shortens": SHORTENS_OLD_TURNS, "mismatch": PROMPT_MISMATCH}
    return {name: _chat_tokenizer(tokenizer_dir, template) for name, template in names.items()}


def _decode(tokenizer: Any, ids: np.ndarray) -> str:
    return tokenizer.decode(ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _trained_runs(tokenizer: Any, ids: np.ndarray, trained: np.ndarray) -> list[str]:
    """The decoded text of each maximal run of trained tokens."""
    edges = np.flatnonzero(np.diff(np.r_[0, trained.astype(np.int8), 0]))
    return [_decode(tokenizer, ids[start:stop]) for start, stop in zip(edges[::2], edges[1::2], strict=True)]


# --- hypothesis conversations --------------------------------------------------------------------------------

contents = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
    st.sampled_from(["", " ", "\n", "  padded  ", "héllo wörld 🎉", "日本語のテキスト", "a\n\nb", "<not special>"]),
)


@st.composite
def conversations(draw: st.DrawFn, *, with_tools: bool) -> list[dict[str, str]]:
    """An optional system prompt, then 1-6 turns of user → assistant (→ tool → assistant)."""
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(contents)})
    for _ in range(draw(st.integers(1, 6))):
        messages += [{"role": "user", "content": draw(contents)}, {"role": "assistant", "content": draw(contents)}]
        if with_tools and draw(st.booleans()):
            messages += [{"role": "tool", "content": draw(contents)}, {"role": "assistant", "content": draw(contents)}]
    return messages


def _check_conversation(tokenizer: Any, name: str, messages: list[dict[str, str]], train_on: str) -> None:
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    segments = render_segments(tokenizer, messages, train_on=train_on)
    assert "".join(text for text, _ in segments) == full
    [(ids, trained)] = tokenize_segments(tokenizer, [segments])
    assert ids.dtype == np.int32 and trained.dtype == bool and len(ids) == len(trained)
    assert _decode(tokenizer, ids) == full
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    if train_on == "last":
        assistants = assistants[-1:]
    assert _trained_runs(tokenizer, ids, trained) == [EXPECTED_TRAINED[name](c) for c in assistants]


HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("name", ["chatml", "llama3"])
@pytest.mark.parametrize("train_on", ["assistant", "last"])
@HYPOTHESIS
@given(data=st.data())
def test_trained_spans_are_the_assistant_turns(tokenizers: dict[str, Any], name: str, train_on: str, data) -> None:
    messages = data.draw(conversations(with_tools=True))
    _check_conversation(tokenizers[name], name, messages, train_on)


@pytest.mark.parametrize("train_on", ["assistant", "last"])
@HYPOTHESIS
@given(messages=conversations(with_tools=False))
def test_mistral_like_spans(tokenizers: dict[str, Any], train_on: str, messages: list[dict[str, str]]) -> None:
    _check_conversation(tokenizers["mistral"], "mistral", messages, train_on)


# --- rendering, examples ---------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Translate: the cat"},
    {"role": "assistant", "content": "le chat"},
    {"role": "user", "content": "And the dog?"},
    {"role": "assistant", "content": "le chien"},
]


def test_chatml_segments_leave_the_newline_after_im_end_untrained(tokenizers: dict[str, Any]) -> None:
    segments = render_segments(tokenizers["chatml"], CONVERSATION)
    assert segments == [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nTranslate: the cat<|im_end|>\n"
            "<|im_start|>assistant\n",
            False,
        ),
        ("le chat<|im_end|>", True),
        ("\n<|im_start|>user\nAnd the dog?<|im_end|>\n<|im_start|>assistant\n", False),
        ("le chien<|im_end|>", True),
        ("\n", False),
    ]


def test_train_on_all_and_last(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["llama3"]
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert render_segments(tokenizer, CONVERSATION, train_on="all") == [(full, True)]
    last = render_segments(tokenizer, CONVERSATION, train_on="last")
    assert [text for text, trained in last if trained] == ["le chien<|eot_id|>"]
    with pytest.raises(ValueError, match="train_on"):
        render_segments(tokenizer, CONVERSATION, train_on="target")


def test_special_tokens_are_single_ids_and_bos_is_not_doubled(tokenizers: dict[str, Any]) -> None:
    chatml, mistral = tokenizers["chatml"], tokenizers["mistral"]
    [(ids, _)] = tokenize_segments(chatml, [render_segments(chatml, CONVERSATION)])
    assert list(ids).count(chatml.convert_tokens_to_ids("<|im_start|>")) == len(CONVERSATION)
    assert list(ids).count(chatml.convert_tokens_to_ids("<|im_end|>")) == len(CONVERSATION)
    [(ids, trained)] = tokenize_segments(mistral, [render_segments(mistral, CONVERSATION)])
    assert ids[0] == mistral.bos_token_id and list(ids).count(mistral.bos_token_id) == 1
    eos_positions = np.flatnonzero(ids == mistral.eos_token_id)
    assert len(eos_positions) == 2 and trained[eos_positions].all()


def test_tokenize_segments_is_one_batched_call(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["chatml"]
    calls = []

    def counting(texts: list[str], **kwargs: Any) -> Any:
        calls.append((len(texts), kwargs))
        return tokenizer(texts, **kwargs)

    batch = [render_segments(tokenizer, CONVERSATION), render_segments(tokenizer, CONVERSATION[:3]), []]
    results = tokenize_segments(counting, batch)
    assert calls == [(sum(len(segments) for segments in batch), {"add_special_tokens": False})]
    for segments, (ids, trained) in zip(batch, results, strict=True):
        [(alone_ids, alone_trained)] = tokenize_segments(tokenizer, [segments])
        assert np.array_equal(ids, alone_ids) and np.array_equal(trained, alone_trained)
    assert len(results[2][0]) == 0 and results[2][0].dtype == np.int32


def test_tool_calls_pass_through_to_the_template(tokenizer_dir: Path) -> None:
    template = CHATML.replace(
        "message['content'] + '<|im_end|>'",
        "message['content'] + (message['tool_calls'] | map(attribute='name') | join(',') "
        "if message['tool_calls'] is defined else '') + '<|im_end|>'",
    )
    tokenizer = _chat_tokenizer(tokenizer_dir, template)
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"name": "get_weather"}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    messages = conversation_from_record(record)
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather"}]}
    assert messages[2]["tool_call_id"] == "call_1"
    trained = [text for text, is_trained in render_segments(tokenizer, messages) if is_trained]
    assert trained == ["get_weather<|im_end|>", "Sunny.<|im_end|>"]


# --- rendering, rejections and usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["counter", "shortens", "mismatch"])
def test_a_template_that_is_not_prefix_stable_is_rejected(tokenizers: dict[str, Any], name: str) -> None:
    with pytest.raises(RenderError) as caught:
        render_segments(tokenizers[name], CONVERSATION)
    assert caught.value.reason == "template_not_prefix_stable"
    assert "assistant turn at message" in caught.value.detail or "whole conversation" in caught.value.detail


def test_prefix_stability_is_only_needed_to_find_assistant_spans(tokenizers: dict[str, Any]) -> None:
    full = tokenizers["counter"].apply_chat_template(CONVERSATION, tokenize=False)
    assert render_segments(tokenizers["counter"], CONVERSATION, train_on="all") == [(full, True)]
    # shortening old turns does not touch the last one
    last = render_segments(tokenizers["shortens"], CONVERSATION, train_on="last")
    assert [text for text, trained in last if trained] == ["le chien<|im_end|>"]


def test_template_errors_and_assistant_first_are_rejections(tokenizers: dict[str, Any]) -> None:
    not_alternating = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    with pytest.raises(RenderError, match="alternate") as caught:
        render_segments(tokenizers["mistral"], not_alternating)
    assert caught.value.reason == "chat_template_error"
    with pytest.raises(RenderError) as caught:
        render_segments(tokenizers["chatml"], [{"role": "assistant", "content": "Hi!"}])
    assert caught.value.reason == "assistant_turn_first"


def test_a_tokenizer_without_a_usable_chat_template_is_a_usage_error(tokenizer_dir: Path) -> None:
    with pytest.raises(ValueError, match="no chat template: pass a tokenizer that has one"):
        render_segments(_chat_tokenizer(tokenizer_dir, None), CONVERSATION)
    with pytest.raises(ValueError, match="does not compile") as caught:
        render_segments(_chat_tokenizer(tokenizer_dir, "{% for m in messages %}"), CONVERSATION)
    assert not isinstance(caught.value, RenderError)


def test_segment_roundtrip_check(tokenizers: dict[str, Any], tmp_path: Path) -> None:
    check_segment_roundtrip(tokenizers["chatml"])  # byte-level BPE: pieces join up exactly
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sentencepiece_like = Tokenizer(models.BPE(unk_token="<unk>"))
    sentencepiece_like.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    sentencepiece_like.decoder = decoders.Metaspace(prepend_scheme="always")
    sentencepiece_like.train_from_iterator(
        ["Hello world ok [user]!"], trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"], show_progress=False)
    )
    with pytest.raises(ValueError, match="prefix space"):
        check_segment_roundtrip(PreTrainedTokenizerFast(tokenizer_object=sentencepiece_like, unk_token="<unk>"))


# --- special-looking strings ---------------------------------------------------------------------------------------


def test_unknown_special_strings(tokenizers: dict[str, Any]) -> None:
    tokenizer = tokenizers["mistral"]
    found = unknown_special_strings(tokenizer, MISTRAL + " [SEP] <s> </s> <|im_end|> <|fancy|> [SEP] a[1]b <x y>")
    assert [text for text, _ in found] == ["[INST]", "[/INST]", "[SEP]", "<|fancy|>"]
    for text, pieces in found:
        assert len(pieces) > 1 and tokenizer.convert_tokens_to_string(pieces) == text
    assert unknown_special_strings(tokenizer, CHATML) == []


# --- records → messages ----------------------------------------------------------------------------------------------


def test_openai_messages() -> None:
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "x": 1}]}
    expected = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert conversation_from_record(record) == expected
    assert conversation_from_record(record, style="messages") == expected
    assert conversation_from_record({"chat": record["messages"]}, messages_field="chat") == expected


def test_sharegpt_default_and_custom_role_map() -> None:
    record = {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "ok"},
        ]
    }
    messages = conversation_from_record(record)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert [m["content"] for m in messages] == ["Be kind.", "Hi", "Hello", "42", "ok"]
    custom = {"conversations": [{"from": "person", "value": "Hi"}, {"from": "bot", "value": "Hello"}]}
    assert [m["role"] for m in conversation_from_record(custom, role_map={"person": "user", "bot": "assistant"})] == [
        "user",
        "assistant",
    ]
    # auto with a renamed field tells ShareGPT items by their keys
    assert conversation_from_record({"turns": record["conversations"]}, messages_field="turns") == messages
    with pytest.raises(ValueError, match="unknown roles"):
        conversation_from_record(custom, role_map={"bot": "robot"})


def test_pair_becomes_a_conversation_with_a_system_prompt() -> None:
    pair = {"source": "the cat", "target": "le chat"}
    assert conversation_from_record(pair, system="Translate to French.") == [
        {"role": "system", "content": "Translate to French."},
        {"role": "user", "content": "the cat"},
        {"role": "assistant", "content": "le chat"},
    ]
    assert conversation_from_record({"en": "a", "fr": "b"}, style="pair", source_field="en", target_field="fr") == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]


def test_system_prompt_is_a_default_for_conversations() -> None:
    with_system = {
        "messages": [
            {"role": "system", "content": "Own."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ]
    }
    assert conversation_from_record(with_system, system="Default.")[0]["content"] == "Own."
    without = {"messages": with_system["messages"][1:]}
    assert conversation_from_record(without, system="Default.")[0] == {"role": "system", "content": "Default."}


USER = {"role": "user", "content": "Hi"}
BAD_RECORDS = [
    ({}, {}, "missing_field"),
    ({"messages": []}, {"style": "sharegpt"}, "missing_field"),
    ({"source": "x"}, {}, "missing_field"),
    ({"source": "x", "target": None}, {}, "null_field"),
    ({"source": "x", "target": 3}, {}, "not_a_string"),
    ({"source": "x", "target": "  "}, {}, "empty_target"),
    ({"messages": "Hi"}, {}, "not_a_list"),
    ({"messages": {"role": "user"}}, {}, "not_a_list"),
    ({"messages": []}, {}, "empty_conversation"),
    ({"messages": ["Hi"]}, {}, "bad_message"),
    ({"messages": [{"content": "Hi"}]}, {}, "bad_message"),
    ({"messages": [{"role": "user"}]}, {}, "bad_message"),
    ({"messages": [{"role": "user", "content": None}]}, {}, "bad_message"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}, {}, "bad_message"),
    ({"messages": [USER, {"role": "assistant", "content": "x", "tool_calls": "f()"}]}, {}, "bad_message"),
    ({"messages": [{"role": "wizard", "content": "Hi"}]}, {}, "unknown_role"),
    ({"messages": [{"role": "human", "content": "Hi"}]}, {}, "unknown_role"),  # ShareGPT names only for ShareGPT
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Yo"}]}, {}, "unknown_role"),
    ({"messages": [USER, {"role": "tool", "content": "42"}]}, {}, "no_assistant_turn"),
    ({"messages": [USER]}, {"system": "S"}, "no_assistant_turn"),
]


@pytest.mark.parametrize(("record", "options", "reason"), BAD_RECORDS)
def test_bad_records_are_rejected_with_the_right_reason(record: dict, options: dict, reason: str) -> None:
    with pytest.raises(RenderError) as caught:
        conversation_from_record(record, **options)
    assert caught.value.reason == reason


def test_unknown_style_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="unknown conversation style"):
        conversation_from_record({"messages": []}, style="alpaca")
