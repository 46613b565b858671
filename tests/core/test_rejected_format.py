"""rejected.jsonl's contract as docs/format.md writes it: the reason codes are exactly the catalogue's, with its
descriptions, and every field of a line is named. To update the doc, paste the table this test prints."""

from __future__ import annotations

import re
from pathlib import Path

from seqpack.schemas.rejected import READ_REASONS, REASONS, RejectedLine

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
BEGIN, END = "<!-- reasons: begin -->", "<!-- reasons: end -->"


def reasons_table() -> str:
    """The doc's table of reason codes, as the catalogue gives it."""
    rows = [
        f"| `{code}` | {'read' if code in READ_REASONS else 'later'} | {description} |"
        for code, description in REASONS.items()
    ]
    return "\n".join(["| `reason` | step | meaning |", "|---|---|---|", *rows])


def section(name: str) -> str:
    text = FORMAT_DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_doc_lists_every_reason_code_with_the_catalogue_description() -> None:
    text = section("rejected/rejected.jsonl")
    assert BEGIN in text and END in text, f"docs/format.md lost its {BEGIN} ... {END} markers"
    written = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    expected = reasons_table()
    assert written == expected, f"docs/format.md's reason codes differ from the catalogue; write:\n{expected}"


def test_the_doc_names_every_field_of_a_line() -> None:
    text = section("rejected/rejected.jsonl")
    fields = [*RejectedLine.__required_keys__, *RejectedLine.__optional_keys__]
    assert {"reason", "raw_base64"} <= set(fields)  # the introspection itself works
    assert [field for field in fields if not re.search(f"`{field}`", text)] == []
