"""The report's HTML primitives: escaped text, tables, inline PNG figures (shared by its sections)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence

from seqpack.tools.blocks import escape_text

_NONCHARACTERS = re.compile("[\ufdd0-\ufdef\ufffe\uffff]")


def esc(text: object) -> str:
    """Escape for HTML text and attributes. Control characters become visible escapes (as in ``inspect``) and
    ``://`` is written as ``:&#47;/``: it renders the same, and a search of the file for external URLs then
    finds only real references, never text from the data."""
    escaped = html.escape(escape_text(str(text)), quote=True).replace("://", ":&#47;/")
    return _NONCHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, raw_html: bool = False) -> str:
    """A table; ``headers`` may be empty (a two-column list of names and values needs none)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    cell = (lambda v: str(v)) if raw_html else esc
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if headers else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}"></figure>'
