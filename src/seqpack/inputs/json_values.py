"""The checks every parsed JSON record passes, whether it came from a JSON lines file or a JSON array: it is an
object, it nests no deeper than ``MAX_JSON_DEPTH``, and its strings are text (no lone surrogates).

    >>> record_from_json([1], "[1]", "f.jsonl:3", lambda: b"[1]").reason
    'not_an_object'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from seqpack.inputs.records import Item, Record, Rejected
from seqpack.schemas.rejected import MAX_JSON_DEPTH

DECODER = json.JSONDecoder(strict=False)
"""``strict=False`` accepts control characters inside strings, which sloppy writers leave; NUL is refused
separately as ``nul_byte``."""
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def json_type(value: Any) -> str:
    """What a JSON value is, for messages: 'an object', 'a number', ..."""
    return _JSON_TYPES.get(type(value), "a number")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``, checked without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string (key or value) holds an unpaired surrogate, which cannot be encoded as UTF-8."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def record_from_json(value: Any, text: str, origin: str, raw: Callable[[], bytes]) -> Item:
    """Apply the checks every parsed JSON record passes: an object, not too deep, no lone surrogates."""
    if not isinstance(value, dict):
        return Rejected("not_an_object", origin, raw(), f"got {json_type(value)}, expected an object")
    # the bracket count is a cheap bound: most records need no walk at all
    if brackets(text) > MAX_JSON_DEPTH and _too_deep(value, MAX_JSON_DEPTH):
        return Rejected("json_too_deep", origin, raw(), f"nests deeper than {MAX_JSON_DEPTH} levels")
    if SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        return Rejected("lone_surrogate", origin, raw(), "a string holds an unpaired \\uD800-\\uDFFF escape")
    return Record(value, origin)


def brackets(text: str) -> int:
    """An upper bound on how deeply ``text`` nests."""
    return text.count("[") + text.count("{")
