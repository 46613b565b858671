"""How large the result of a template operation can be, measured before it runs (see ``seqpack.chat_sandbox``).

Repetition, padding and width specs, ``replace``, ``join``, ``tojson(indent=...)`` and a few other operations can
make a result far larger than their inputs; the sandbox asks these estimates first and refuses an operation that
would go over the record's budget.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from typing import Any


def size_of(value: Any) -> int:
    """What a value costs, in characters (items for containers; a string item counts its characters too)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return len(value) + sum(len(item) for item in value if isinstance(item, str))
    if isinstance(value, dict | set | frozenset):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 8
    return 0



_HUGE = 1 << 62
_PRINTF = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+)?)?[hlL]?([a-zA-Z%])")


def _number(text: str) -> int:
    return int(text) if len(text) <= 9 else _HUGE


def as_count(value: Any, default: int = 0) -> int:
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else default


def _printf(fmt: str, args: Any) -> int:
    """``fmt % args``: the format, every value, and every width and precision (literal or ``*``)."""
    values = args if isinstance(args, tuple) else (args,)
    total, index = len(fmt), 0
    for match in _PRINTF.finditer(fmt):
        key, width, precision, kind = match.groups()
        if kind == "%":
            continue
        for part in (width, precision):
            if part == "*":
                total += as_count(values[index] if index < len(values) else 0)
                index += 1
            elif part:
                total += _number(part)
        if key is not None and isinstance(args, Mapping):
            value = args.get(key)
        else:
            value, index = (values[index] if index < len(values) else None), index + 1
        total += size_of(value) + 24
    return total


def _format(fmt: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """``fmt.format(...)``: any field may show the largest argument, padded to any width its spec names."""
    values = [*args, *kwargs.values()]
    largest = max((size_of(value) for value in values), default=0)
    widest = max((as_count(value) for value in values), default=0)
    try:
        fields = [spec or "" for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:
        return 0  # the call itself raises the error
    widths = sum(_number(digits) for spec in fields for digits in re.findall(r"\d+", spec))
    nested = widest * sum(spec.count("{") for spec in fields)
    return len(fmt) + len(fields) * (largest + 24) + widths + nested


def _replace(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return size_of(text)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * max(len(new) - len(old), 0)


def _joined(separator: Any, items: list) -> int:
    return size_of(separator) * len(items) + sum(size_of(item) + 24 for item in items)


def _json_depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, Mapping) else item))
    return depth


def _tojson(value: Any, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """Pretty-printed JSON: each line is indented by ``indent`` per level, and separators repeat per item."""
    try:
        compact = len(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError, RecursionError):
        return 0
    options = [*args, *kwargs.values()]
    indent = max([as_count(option) if not isinstance(option, str) else len(option) for option in options], default=0)
    separators = sum(size_of(part) for option in options if isinstance(option, list | tuple) for part in option)
    return compact * (1 + indent * _json_depth(value) + separators)


def _arg(args: tuple, kwargs: Mapping[str, Any], position: int, name: str, default: Any = None) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _padded(text: str, args: tuple, kwargs: Mapping[str, Any], default: int = 0) -> int:
    return max(len(text), as_count(_arg(args, kwargs, 0, "width", default)))


def _indented(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    width = _arg(args, kwargs, 0, "width", 4)
    return len(text) + (text.count("\n") + 1) * (len(width) if isinstance(width, str) else as_count(width))


def _wrapped(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    width = max(as_count(_arg(args, kwargs, 0, "width", 79), 79), 1)
    wrapstring = _arg(args, kwargs, 2, "wrapstring") or "\n"
    return len(text) + (len(text) // width + text.count("\n") + 1) * size_of(wrapstring)


def _translated(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    table = _arg(args, kwargs, 0, "table")
    return len(text) * max([1] + [size_of(value) for value in (table.values() if isinstance(table, Mapping) else ())])


def _urlized(text: str, args: tuple, kwargs: Mapping[str, Any]) -> int:
    """Each link (at least a few characters) gets the ``target``/``rel`` strings and the anchor tag around it."""
    inserted = sum(len(option) for option in [*args, *kwargs.values()] if isinstance(option, str))
    return len(text) + (len(text) // 3 + 1) * (inserted + 48)


_Estimate = Callable[[Any, tuple, dict], int]
STR_METHODS: dict[str, _Estimate] = {
    "center": _padded,
    "ljust": _padded,
    "rjust": _padded,
    "zfill": _padded,
    "expandtabs": lambda s, a, k: len(s) + s.count("\t") * as_count(_arg(a, k, 0, "tabsize", 8)),
    "replace": lambda s, a, k: _replace(s, *a, **k),
    "join": lambda s, a, k: _joined(s, a[0]) if a and isinstance(a[0], list | tuple) else 0,
    "format": _format,
    "format_map": lambda s, a, k: _format(s, (), a[0] if a and isinstance(a[0], Mapping) else {}),
    "translate": _translated,
}
"""Estimates of the result size of ``str`` methods that can make far more text than they are given."""

FILTERS: dict[str, _Estimate] = {
    "center": lambda v, a, k: _padded(str(v), a, k, 80),
    "indent": lambda v, a, k: _indented(str(v), a, k),
    "wordwrap": lambda v, a, k: _wrapped(str(v), a, k),
    "replace": lambda v, a, k: _replace(str(v), *a, **k),
    "join": lambda v, a, k: _joined(_arg(a, k, 0, "d", ""), v) if isinstance(v, list | tuple) else 0,
    "format": lambda v, a, k: _printf(str(v), k or a),
    "batch": lambda v, a, k: size_of(v) + as_count(_arg(a, k, 0, "linecount")),
    "slice": lambda v, a, k: size_of(v) + as_count(_arg(a, k, 0, "slices")),
    "tojson": _tojson,
    "urlize": lambda v, a, k: _urlized(str(v), a, k),
}
"""The same for filters (the value the filter is applied to comes first)."""


def binop_estimate(operator: str, left: Any, right: Any) -> int:
    if operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            return (left.bit_length() + right.bit_length()) // 8
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple | bytes) and isinstance(times, int):
                return size_of(sequence) * max(times, 0)
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        return max(abs(left).bit_length() - 1, 0) * right // 8
    if operator == "%" and isinstance(left, str):
        return _printf(left, right)
    return 0
