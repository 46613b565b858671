"""``benchmarks/code_corpus.py``: docstring → body pairs, each documented function once, in a fixed order."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
code_corpus = pytest.importorskip("code_corpus")

MODULE = '''
import os


@decorated
def documented(a: int,
               b: int = 2) -> int:
    """Add two numbers.

    With a second paragraph."""
    total = a + b
    return total


def undocumented():
    return 1


class Thing:
    def method(self):
        """Say hi."""
        if self:
            print("hi")

    def stub(self):
        """Only a docstring."""
        ...
'''


def test_each_documented_function_gives_its_signature_and_docstring_then_its_body(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(MODULE)
    (tmp_path / "pkg" / "copy.py").write_text(MODULE)  # a vendored copy: its pairs are repeats
    (tmp_path / "pkg" / "broken.py").write_text("def (:\n")
    (tmp_path / "pkg" / "latin1.py").write_bytes(b"x = '\xe9'\n")
    out = tmp_path / "code.jsonl"
    stats = code_corpus.write_jsonl(str(out), roots=[str(tmp_path)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [
        {
            "source": '@decorated\ndef documented(a: int,\n               b: int = 2) -> int:\n    """Add two numbers.'
            '\n\n    With a second paragraph."""\n',
            "target": "total = a + b\nreturn total\n",
        },
        {"source": 'def method(self):\n    """Say hi."""\n', "target": 'if self:\n    print("hi")\n'},
    ]
    assert (stats.pairs, stats.repeats, stats.trivial, stats.unreadable) == (2, 2, 2, 2)
    again = tmp_path / "again.jsonl"
    code_corpus.write_jsonl(str(again), roots=[str(tmp_path)], limit=1)
    assert again.read_text().splitlines() == out.read_text().splitlines()[:1]
