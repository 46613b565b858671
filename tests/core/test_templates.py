"""Templates: what is source (masked) and what is target (trained), and how bad records are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_jsonl

from seqpack.cli.main import main
from seqpack.prompt_templates import ALPACA_PROMPT_NO_INPUT, RenderError, make_template


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


@pytest.mark.parametrize(
    ("text", "field", "fix"),
    [
        ("{source} {target!r}", "{target!r}", "{target}"),
        ("{source:>10} {target}", "{source:>10}", "{source}"),
        ("{source} {target.attr}", "{target.attr}", "{target}"),
        ("{source[0]} {target}", "{source[0]}", "{source}"),
        ("{source} {target!s:^8}", "{target!s:^8}", "{target}"),
        ("{} {target}", "{}", "{question}"),
        ("{0} {target}", "{0}", "{question}"),
    ],
)
def test_fields_other_than_plain_names_are_refused_with_the_fix(text: str, field: str, fix: str) -> None:
    """str.format would convert, pad or reach into the text, or fail in every worker: refuse up front."""
    with pytest.raises(ValueError, match="field") as error:
        make_template(text)
    assert field in str(error.value) and fix in str(error.value)


def test_escaped_braces_around_the_word_target_are_literal() -> None:
    template = make_template("{{target}} {source}: {target} }}")
    assert template.render({"source": "s", "target": "t"}) == ("{target} s: ", "t }")


def test_a_broken_format_string_says_how_to_write_braces() -> None:
    with pytest.raises(ValueError, match="literal braces"):
        make_template("{source} {target")


@pytest.mark.parametrize("text", ["{source} {target!r}", "{source:>10} {target}", "{source} {target[0]}"])
def test_the_cli_refuses_such_a_template_before_any_work(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture, text: str
) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"source": "cat", "target": "chat"}])
    output = tmp_path / "out"
    code = main(["run", "-q", "-i", str(data), "-o", str(output), "-t", str(tokenizer_dir), "--template", text])
    assert code == 2
    error = capsys.readouterr().err
    assert "field {" in error and ("write it as" in error or "write {" in error)
    assert not output.exists()
