"""A real, non-repeating code corpus: docstring → function body pairs from installed Python packages, as JSONL.

    python benchmarks/code_corpus.py -o /tmp/code.jsonl --limit 100000

Every ``.py`` file under the interpreter's site-packages (or ``--root`` directories) is parsed with ``ast``, in
sorted path order. Each function or method with a docstring gives one pair:

- ``source``: the ``def`` line(s) up to the colon and the docstring, as the file writes them (what a user asks
  for: the signature and what it should do);
- ``target``: the rest of the function's source, dedented as it stands in the file (the body without the
  docstring).

Functions whose body is only the docstring (or ``...``/``pass``) are skipped, as are exact repeats of a pair seen
before (vendored copies of the same module), files that are not UTF-8 or do not parse, and pairs larger than
``--max-chars``. The same installed packages always give the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import site
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class CodeCorpusStats:
    files: int = 0
    unreadable: int = 0
    pairs: int = 0
    repeats: int = 0
    trivial: int = 0
    too_long: int = 0

    def summary(self) -> str:
        return (
            f"{self.pairs:,} pairs from {self.files:,} files; skipped: {self.repeats:,} repeats, {self.trivial:,} "
            f"docstring-only bodies, {self.too_long:,} too long, {self.unreadable:,} unreadable files"
        )


def default_roots() -> list[str]:
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    return sorted(root for root in roots if os.path.isdir(root))


def python_files(roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            found.extend(os.path.join(directory, name) for name in files if name.endswith(".py"))
    return sorted(set(found))


def _is_trivial(body: list[ast.stmt]) -> bool:
    rest = body[1:]
    return not rest or all(
        isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        for node in rest
    )


def _dedent(lines: list[str]) -> list[str]:
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return [line[cut:] if line.strip() else line.strip(" \t") for line in lines]


def function_pairs(text: str) -> Iterator[tuple[str, str] | None]:
    """``(source, target)`` for each documented function of a module's text; None for a trivial one."""
    lines = text.splitlines(keepends=True)
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or ast.get_docstring(node) is None:
            continue
        if _is_trivial(node.body):
            yield None
            continue
        first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
        docstring_end = node.body[0].end_lineno
        body_start = node.body[1].lineno - 1
        if docstring_end is None or node.end_lineno is None or body_start < docstring_end:
            yield None  # a body on the docstring's own line: no clean cut
            continue
        source = "".join(_dedent(lines[first:docstring_end]))
        target = "".join(_dedent(lines[body_start : node.end_lineno]))
        yield source, target


def iter_pairs(roots: list[str], *, limit: int | None = None, max_chars: int = 20000,
               stats: CodeCorpusStats | None = None) -> Iterator[dict[str, str]]:
    stats = stats if stats is not None else CodeCorpusStats()
    seen: set[bytes] = set()
    for path in python_files(roots):
        try:
            with open(path, encoding="utf-8") as f:
                pairs = list(function_pairs(f.read()))
        except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError, OSError):
            stats.unreadable += 1
            continue
        stats.files += 1
        for pair in pairs:
            if pair is None:
                stats.trivial += 1
                continue
            if len(pair[0]) + len(pair[1]) > max_chars:
                stats.too_long += 1
                continue
            digest = hashlib.blake2b(json.dumps(pair).encode(), digest_size=16).digest()
            if digest in seen:
                stats.repeats += 1
                continue
            seen.add(digest)
            stats.pairs += 1
            yield {"source": pair[0], "target": pair[1]}
            if limit is not None and stats.pairs >= limit:
                return


def write_jsonl(path: str, *, roots: list[str] | None = None, limit: int | None = None,
                max_chars: int = 20000) -> CodeCorpusStats:
    stats = CodeCorpusStats()
    with open(path, "w", encoding="utf-8") as out:
        for record in iter_pairs(roots or default_roots(), limit=limit, max_chars=max_chars, stats=stats):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", required=True, help="JSONL file to write")
    parser.add_argument("--root", action="append", help="directory of Python sources (repeatable; default: "
                        "this interpreter's site-packages)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many pairs")
    parser.add_argument("--max-chars", type=int, default=20000, help="skip pairs longer than this")
    args = parser.parse_args(argv)
    stats = write_jsonl(args.output, roots=args.root, limit=args.limit, max_chars=args.max_chars)
    print(f"{args.output}: {stats.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
