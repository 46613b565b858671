"""Templates: what is source (masked) and what is target (trained), and how bad records are rejected."""

from __future__ import annotations

import pytest

from seqpack.templates import ALPACA_PROMPT_NO_INPUT, RenderError, make_template


def test_plain_puts_separator_in_the_source() -> None:
    assert make_template("plain").render({"source": "cat", "target": "chat"}) == ("cat = ", "chat")
    custom = make_template("plain", source_field="en", target_field="fr", separator=" => ")
    assert custom.render({"en": "dog", "fr": "chien"}) == ("dog => ", "chien")


def test_alpaca_with_and_without_input() -> None:
    template = make_template("alpaca")
    source, target = template.render({"instruction": "Add.", "input": "2 and 3", "output": "5"})
    assert source.endswith("### Input:\n2 and 3\n\n### Response:") and target == "5"
    source, _ = template.render({"instruction": "Say hi.", "output": "hi"})
    assert source == ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi.")
    source, _ = template.render({"instruction": "Say hi.", "input": "", "output": "hi"})
    assert "### Input" not in source


def test_format_string_with_named_fields_and_suffix() -> None:
    template = make_template("Q: {question}\nContext: {source}\nA: {target}</answer>", source_field="ctx")
    record = {"question": "why?", "ctx": "because", "target": "so"}
    assert template.render(record) == ("Q: why?\nContext: because\nA: ", "so</answer>")


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"target": "x"}, "missing_field"),
        ({"source": None, "target": "x"}, "null_field"),
        ({"source": 3, "target": "x"}, "not_a_string"),
        ({"source": "a", "target": "   "}, "empty_target"),
        ({"source": "a", "target": ["x"]}, "not_a_string"),
    ],
)
def test_bad_records_raise_with_a_reason(record: dict, reason: str) -> None:
    with pytest.raises(RenderError) as error:
        make_template("plain").render(record)
    assert error.value.reason == reason


def test_bad_template_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        make_template("{source} and nothing else")
    with pytest.raises(ValueError, match="unknown template"):
        make_template("chatml")
