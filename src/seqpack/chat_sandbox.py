"""Render chat templates with bounded work: a template is code from a model repository, and one record must never
hang a worker or exhaust its memory.

``transformers`` renders chat templates in jinja2's sandbox, which stops templates from reaching Python internals
but not from looping for ever (``range(100000)`` inside ``range(100000)``) or building a huge string
(``'x' * 100000000``). ``BoundedEnvironment`` is that same sandbox (same filters, globals and extensions as
``transformers``) with a budget per record, counted on every step the template takes:

- steps: each loop iteration, call, filter, operator, attribute and item access; at most ``max_steps`` per record,
  for all its renderings together. Counting makes the outcome deterministic: a record is always rejected or
  always accepted, whatever the machine's speed.
- size: a rendering writes at most ``output_chars`` (a fixed allowance plus a multiple of the conversation's own
  size), no value it makes is longer, and the values it makes add up to at most ``produced_chars``, which bounds
  what it can hold in memory. Operations that can make a result far larger than their inputs (repetition,
  padding and width specs, ``replace``, ``join``, ``tojson(indent=...)``, ``lipsum``) are measured before they run.
- time: ``max_seconds`` per record, only as a backstop for work the counts do not see (one slow C-level call).

A record that goes over a limit raises ``TemplateLimitError``, a ``RenderError("chat_template_error", ...)`` that
names the limit. The checks run in the rendering thread itself (no signals), so they work in Beam's worker threads.

    >>> template = compile_chat_template(chat_template_of(tokenizer))
    >>> with render_budget(messages, RenderLimits()):
    ...     text = render_chat(template, tokenizer, messages, add_generation_prompt=False)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from seqpack.chat_estimates import FILTERS, STR_METHODS, as_count, binop_estimate, size_of
from seqpack.prompt_templates import RenderError

REASON = "chat_template_error"
MAX_INT_BITS = 1 << 16
"""Integers a template computes stay below 2**65536 (about 20,000 digits); chat templates count, they do not
do big-number arithmetic, and multiplying huge integers is slow work the step count would not see."""


class TemplateLimitError(RenderError):
    """Rendering a record went over a limit of ``RenderLimits``; ``detail`` names it."""

    def __init__(self, detail: str) -> None:
        super().__init__(REASON, detail)


@dataclass(frozen=True)
class RenderLimits:
    """How much work rendering one record's conversation may take (see the module docstring).

    ``max_steps`` is about 2-15 s of jinja work, enough for a ChatML conversation of some 1,500 messages (each
    assistant turn is rendered twice more to locate it, so the steps grow with the square of the length);
    ``max_seconds`` is well above that, so that the count, not the machine's speed, decides. Sizes are in
    characters and grow with the conversation's size as JSON (``input_chars``).
    """

    max_steps: int = 10_000_000
    max_seconds: float = 30.0
    output_base_chars: int = 1 << 20
    output_chars_per_input_char: int = 8
    produced_base_chars: int = 32 << 20
    produced_chars_per_input_char: int = 24

    def output_chars(self, input_chars: int) -> int:
        """The most a rendering may write, and the largest value it may make."""
        return self.output_base_chars + self.output_chars_per_input_char * input_chars

    def produced_chars(self, input_chars: int) -> int:
        """The most the values a rendering makes may add up to (what it could hold in memory at once)."""
        return self.produced_base_chars + self.produced_chars_per_input_char * input_chars


class _Budget:
    """The counters of one record; sizes are reset for each rendering, steps and time are not."""

    def __init__(self, limits: RenderLimits, input_chars: int) -> None:
        self.limits = limits
        self.max_chars = limits.output_chars(input_chars)
        self.max_produced = limits.produced_chars(input_chars)
        self.deadline = time.monotonic() + limits.max_seconds
        self.steps = 0
        self.written = 0
        self.produced = 0

    def new_rendering(self) -> None:
        self.written = 0
        self.produced = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            _fail(f"the chat template took more than {self.limits.max_steps:,} steps (loop iterations, calls and "
                  "operations) to render this conversation: it loops too much, or the conversation is too long "
                  "(each assistant turn is rendered twice more to locate it)")
        if not self.steps & 255:
            self.check_clock()

    def check_clock(self) -> None:
        """The backstop: every 256 steps, and before each operation on a large value."""
        if time.monotonic() > self.deadline:
            _fail(f"rendering this conversation with the chat template took more than {self.limits.max_seconds:g} s")

    def expect(self, chars: int, what: str, name: str) -> None:
        """Refuse, before it runs, an operation that would make a value of about ``chars`` characters."""
        if chars > self.max_chars:
            _fail(f"{what} {name!r} would make a value of about {chars:,} characters, more than the limit of "
                  f"{self.max_chars:,} for this conversation")

    def made(self, value: Any) -> Any:
        size = len(value) if type(value) is str else size_of(value)
        if size > self.max_chars:
            _fail(f"the chat template made a value of {size:,} characters, more than the limit of "
                  f"{self.max_chars:,} for this conversation")
        if type(value) is int and value.bit_length() > MAX_INT_BITS:
            _fail(f"the chat template made an integer of {value.bit_length():,} bits, more than {MAX_INT_BITS:,}")
        self.produced += size
        if self.produced > self.max_produced:
            _fail(f"the values the chat template made add up to more than {self.max_produced:,} characters")
        return value

    def write(self, value: Any) -> str:
        text = str(value)
        self.written += len(text)
        if self.written > self.max_chars:
            _fail(f"the chat template wrote more than {self.max_chars:,} characters for this conversation")
        return text


def _fail(detail: str) -> None:
    raise TemplateLimitError(detail)


_BUDGET: ContextVar[_Budget | None] = ContextVar("seqpack_render_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise RuntimeError("a bounded chat template was rendered outside render_budget()")
    return budget


@contextlib.contextmanager
def render_budget(messages: list[dict[str, Any]], limits: RenderLimits) -> Iterator[None]:
    """Count the work of every rendering inside the block against one record's budget."""
    input_chars = len(json.dumps(messages, ensure_ascii=False, default=str))
    token = _BUDGET.set(_Budget(limits, input_chars))
    try:
        yield
    finally:
        _BUDGET.reset(token)


# --- the environment -----------------------------------------------------------------------------------------

_LARGE = 1 << 16
"""A value this long may take a filter or method long enough to look at the clock first."""
_ITER = "seqpack_count_iterations"
_OUT = "seqpack_count_output"
_VALUE = "seqpack_count_value"


class _CountingTransformer(NodeTransformer):
    """Route loop iterables, output and ``~`` concatenation through the counting filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [nodes.Filter(child, _OUT, [], [], None, None, lineno=child.lineno) for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, _VALUE, [], [], None, None, lineno=node.lineno)


class _CountingCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        super().visit_Template(_CountingTransformer().visit(node), frame)


def _iterations(context: Any, iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _counting_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a filter that counts a step, refuses an oversized result up front and counts its size.

    The wrapper takes the context, so jinja never runs it at compile time (constant folding would bypass the
    budget: ``{{ 'x' | center(10**9) }}`` would be evaluated while compiling).
    """
    passes = getattr(getattr(function, "jinja_pass_arg", None), "name", None)
    estimate = FILTERS.get(name)

    @jinja2.pass_context
    def counted(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        if isinstance(value, Sized) and len(value) > _LARGE:
            budget.check_clock()
        if name == "join" and not isinstance(value, list | tuple):
            value = list(value)  # to measure it first; join would iterate it all the same
        if estimate is not None:
            budget.expect(estimate(value, args, kwargs), "the filter", name)
        first = {"context": context, "eval_context": context.eval_ctx, "environment": context.environment}.get(
            passes or ""
        )
        result = function(value, *args, **kwargs) if first is None else function(first, value, *args, **kwargs)
        return budget.made(result)

    return counted


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with every step of a template counted against the current record's budget."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _CountingCodeGenerator

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # jinja's names: no clash
        budget = _budget()
        budget.step()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive for loop
            args = (_iterations(__context, args[0]), *args[1:])
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox hands out str.format wrapped
        owner = getattr(method, "__self__", None)
        if isinstance(owner, Sized) and len(owner) > _LARGE:
            budget.check_clock()
        if isinstance(owner, str) and getattr(method, "__name__", "") in STR_METHODS:
            name = method.__name__
            if name == "join" and args and not isinstance(args[0], list | tuple):
                args = (list(args[0]), *args[1:])  # to measure it first; join would iterate it all the same
            budget.expect(STR_METHODS[name](owner, args, kwargs), "the method", name)
        elif __obj is generate_lorem_ipsum:
            paragraphs = as_count(args[0] if args else kwargs.get("n", 5))
            words = as_count(args[3] if len(args) > 3 else kwargs.get("max", 100))
            budget.expect(paragraphs * words * 16, "the function", "lipsum")
        return budget.made(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.step()
        budget.expect(binop_estimate(operator, left, right), "the operator", operator)
        return budget.made(super().call_binop(context, operator, left, right))

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = _budget()
        budget.step()
        item = super().getitem(obj, argument)
        return budget.made(item) if isinstance(argument, slice) else item  # only a slice makes a new value

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().step()
        return super().getattr(obj, attribute)


def _reference_environment() -> jinja2.Environment | None:
    """The environment ``transformers`` renders chat templates in (filters, globals, extensions), if it says."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # pragma: no cover - older transformers: a plain environment with its usual globals
        return None
    return _compile_jinja_template("").environment


def _plain_json(value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
                sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=1)
def bounded_environment() -> BoundedEnvironment:
    """One environment per process, configured like ``transformers``' (built once: templates are cached in it)."""
    reference = _reference_environment()
    extensions = [type(ext) for ext in reference.extensions.values()] if reference else ["jinja2.ext.loopcontrols"]
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=extensions)
    if reference is not None:
        env.filters.update(reference.filters)
        env.globals.update(reference.globals)
    else:  # pragma: no cover
        env.filters["tojson"] = _plain_json
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
    env.filters = {name: _counting_filter(name, function) for name, function in env.filters.items()}
    env.filters[_ITER] = jinja2.pass_context(_iterations)
    env.filters[_OUT] = jinja2.pass_context(lambda context, value: _budget().write(value))
    env.filters[_VALUE] = jinja2.pass_context(lambda context, value: _budget().made(value))
    return env


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compile a chat template in the bounded environment; ``ValueError`` with the line when it does not compile.

    Compiling is safe on any template: nothing a template computes is evaluated at compile time here.
    """
    try:
        return bounded_environment().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template does not compile (line {exc.lineno}): {exc.message}") from exc


def chat_template_of(tokenizer: Any) -> str:
    """The template ``apply_chat_template`` would use (the default one when the tokenizer has several)."""
    getter = getattr(tokenizer, "get_chat_template", None)
    template = getter() if getter is not None else tokenizer.chat_template
    if not isinstance(template, str):
        raise ValueError(f"the tokenizer's chat template is a {type(template).__name__}, not a string")
    return template


def render_chat(
    template: jinja2.Template, tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool
) -> str:
    """What ``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` returns, rendered within the current
    ``render_budget`` from ``compile_chat_template(chat_template_of(tokenizer))``."""
    _budget().new_rendering()
    variables = {
        **tokenizer.special_tokens_map,
        "messages": messages,
        "tools": None,
        "documents": None,
        "add_generation_prompt": add_generation_prompt,
    }
    return "".join(template.generate(**variables))
