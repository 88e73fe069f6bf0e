"""Templates for step subjects and bodies and for mapping values: Jinja2's sandbox, compiled once,
cached, and bounded.

The sandbox refuses attribute tricks (``__class__``, ``__subclasses__``, ``|attr('__class__')``,
``'{0.__class__}'.format(x)``) and unsafe calls. A template can still ask for work without end,
so every render also has a budget:

- at most :data:`MAX_STEPS` operations (calls, filters, lookups, operators, loop iterations):
  nested loops over ``range(100000)`` or a macro calling itself twice stop, they do not hang;
- at most :data:`MAX_PRODUCED` characters (or items) made by those operations in all;
- no string, list or number over :data:`MAX_SIZE`, refused *before* it is built wherever an
  argument says how big it will be (``'a' * 10**9``, ``'x'.ljust(10**9)``, ``'{:>999999999}'``,
  ``'%0999999999d' % 1``, ``|center``, ``|indent``, ``|replace``, ``|join``, ``|slice``, ``|batch``);
- an output of at most :data:`MAX_SIZE` characters, recursion refused as a limit, no ``lipsum``.

Going over a bound raises :class:`TemplateLimit` (a Jinja ``SecurityError``). Undefined variables
render as empty strings, so a missing contact field never breaks a send.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: No single string, list or number may be bigger than this, and no output longer.
MAX_SIZE = 100_000
#: Operations one render may run.
MAX_STEPS = 100_000
#: Characters (or items) one render may make, in all.
MAX_PRODUCED = 1_000_000

_LOOP = "_bounded_loop"  # the filter every {% for %} iterates through (see compile_template)
# A %-format conversion: its width and precision ("*" takes them from the arguments).
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


class TemplateLimit(SecurityError):
    """A template went over one of its bounds."""


class _Budget:
    __slots__ = ("produced", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.produced = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateLimit(f"the template runs more than {MAX_STEPS} operations")

    def made(self, value: Any) -> Any:
        size = len(value) if isinstance(value, str | bytes | list | tuple | dict | set | range) else 1
        if size > MAX_SIZE:
            raise TemplateLimit(f"a value longer than {MAX_SIZE}")
        self.produced += size
        if self.produced > MAX_PRODUCED:
            raise TemplateLimit(f"the template makes more than {MAX_PRODUCED} characters")
        return value


_budget: ContextVar[_Budget | None] = ContextVar("seqbridge_template_budget", default=None)


def _current() -> _Budget:
    # Outside a render (Jinja folding constants while compiling) each operation gets its own.
    return _budget.get() or _Budget()


def _refuse_size(size: Any, what: str) -> None:
    if isinstance(size, int) and size > MAX_SIZE:
        raise TemplateLimit(f"{what} larger than {MAX_SIZE}")


def _check_printf(template: str, arguments: Any = ()) -> None:
    """``'%0999999999d' % 1`` would allocate a gigabyte: refuse widths over MAX_SIZE (and ``*``)."""
    for match in _PRINTF.finditer(template):
        for size in match.groups():
            if size == "*":
                raise TemplateLimit("a %-format width or precision taken from the arguments")
            _refuse_size(int(size) if size else None, "a %-format width or precision")


def _check_format(template: str) -> None:
    """``'{:>999999999}'.format(1)``, ``'{:{}}'.format(1, 10**9)``: widths over MAX_SIZE and nested
    replacement fields in a format spec are refused."""
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimit("a format spec taken from the arguments")
        for number in _NUMBER.findall(spec):
            _refuse_size(int(number), "a format width or precision")


def _joined_size(items: list[Any], separator: str) -> int:
    return sum(len(str(item)) for item in items) + len(separator) * max(0, len(items) - 1)


def _replaced_size(text: str, old: str, new: str, count: Any = -1) -> int:
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _check_str_method(method: Callable, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str method whose result would be too large, before it runs; return its args."""
    text, name = method.__self__, method.__name__  # type: ignore[attr-defined]
    if name in ("ljust", "rjust", "center", "zfill") and args:
        _refuse_size(args[0], f"str.{name}() width")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            _refuse_size(len(text) + (text.count("\t") + 1) * tabsize, "str.expandtabs() result")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _refuse_size(_replaced_size(text, *args), "str.replace() result")
    elif name == "join" and args:
        items = list(args[0])
        _refuse_size(_joined_size(items, text), "str.join() result")
        return (items, *args[1:])
    return args


# Filters: each checked before it runs (where its arguments say how big the result will be), and
# charged to the budget. ``value`` is the filtered value; ``args`` / ``kwargs`` the filter's own.


def _filter_center(value: Any, args: tuple, kwargs: dict) -> Any:
    _refuse_size(args[0] if args else kwargs.get("width"), "|center width")
    return value


def _filter_indent(value: Any, args: tuple, kwargs: dict) -> Any:
    width = args[0] if args else kwargs.get("width", 4)
    lines = str(value).count("\n") + 1
    per_line = width if isinstance(width, int) else len(str(width))
    _refuse_size(len(str(value)) + lines * per_line, "|indent result")
    return value


def _filter_format(value: Any, args: tuple, kwargs: dict) -> Any:
    _check_printf(str(value))
    return value


def _filter_count(value: Any, args: tuple, kwargs: dict) -> Any:  # |slice(n), |batch(n)
    _refuse_size(args[0] if args else None, "|slice or |batch count")
    return value


def _filter_replace(value: Any, args: tuple, kwargs: dict) -> Any:
    if len(args) >= 2:
        _refuse_size(_replaced_size(str(value), str(args[0]), str(args[1]), *args[2:3]), "|replace result")
    return value


def _filter_join(value: Any, args: tuple, kwargs: dict) -> Any:
    items = list(value)
    separator = args[0] if args else kwargs.get("d", "")
    if not (args[1:] or "attribute" in kwargs):
        _refuse_size(_joined_size(items, str(separator)), "|join result")
    return items


def _filter_wordwrap(value: Any, args: tuple, kwargs: dict) -> Any:
    wrapstring = args[2] if len(args) > 2 else kwargs.get("wrapstring")
    _refuse_size((len(str(value)) + 1) * max(1, len(wrapstring or "")), "|wordwrap result")
    return value


_FILTER_CHECKS: dict[str, Callable[[Any, tuple, dict], Any]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "format": _filter_format,
    "slice": _filter_count,
    "batch": _filter_count,
    "replace": _filter_replace,
    "join": _filter_join,
    "wordwrap": _filter_wordwrap,
}


def _charged(items: Iterable[Any]) -> Iterator[Any]:
    """Iterate, one step (and the item's size) per item."""
    for item in items:
        budget = _current()
        budget.step()
        yield budget.made(item)


def _bounded_filter(name: str, func: Callable) -> Callable:
    check = _FILTER_CHECKS.get(name)
    passes = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context / environment first

    @functools.wraps(func)  # keeps jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _current()
        budget.step()
        if check is not None and len(args) > passes:
            value = check(args[passes], args[passes + 1 :], kwargs)
            args = (*args[:passes], value, *args[passes + 1 :])
        result = func(*args, **kwargs)
        if isinstance(result, Iterator) and not isinstance(result, str):
            return _charged(result)  # map, select, batch …: charged as they are consumed
        return budget.made(result)

    return bounded


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the budget charged and the size checks made at every operation."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(10**6) writes megabytes of Latin
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters[_LOOP] = _charged

    def call_binop(self, context, operator, left, right):
        budget = _current()
        budget.step()
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateLimit("exponent too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_SIZE
                ):
                    raise TemplateLimit("repetition too large")
        if operator == "%" and isinstance(left, str):
            _check_printf(left)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, int) and result.bit_length() > 4096:
            raise TemplateLimit("number too large")
        return budget.made(result)

    def call(__self, __context, __obj, *args, **kwargs):  # Jinja's own signature
        budget = _current()
        budget.step()
        if isinstance(getattr(__obj, "__self__", None), str) and hasattr(__obj, "__name__"):
            args = _check_str_method(__obj, args, kwargs)
        return budget.made(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj, attribute):
        _current().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _current().step()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        template = value.__self__

        @functools.wraps(wrapper)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(template)
            return wrapper(*args, **kwargs)

        return checked


# ChainableUndefined: a missing field renders "", however deep (``contact.company.name``).
_env = _BoundedEnvironment(autoescape=False, trim_blocks=True, undefined=ChainableUndefined)


class TemplateError(ValueError):
    """A template that does not compile; ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class BoundedTemplate:
    """A compiled template; :meth:`render` runs it within the budget."""

    def __init__(self, template: Any) -> None:
        self._template = template

    def render(self, context: dict[str, Any]) -> str:
        """Render; raises :class:`TemplateLimit` past a bound, and Jinja's own errors."""
        token = _budget.set(_Budget())
        try:
            parts, size = [], 0
            for part in self._template.generate(context):
                size += len(part)
                if size > MAX_SIZE:
                    raise TemplateLimit(f"the output is longer than {MAX_SIZE} characters")
                parts.append(part)
            return "".join(parts)
        except RecursionError:
            raise TemplateLimit("the template recurses too deep") from None
        finally:
            _budget.reset(token)


@functools.lru_cache(maxsize=4096)
def compile_template(source: str) -> BoundedTemplate:
    """Compile ``source`` (cached). Raises :class:`TemplateError` with the line of the problem."""
    token = _budget.set(_Budget())  # constant folding at compile time is bounded too
    try:
        tree = _env.parse(source)
        for loop in tree.find_all(nodes.For):  # every loop pays a step per iteration
            loop.iter = nodes.Filter(loop.iter, _LOOP, [], [], None, None, lineno=loop.lineno)
            loop.iter.set_environment(_env)
        return BoundedTemplate(_env.from_string(tree))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}", exc.lineno) from None
    except (RecursionError, MemoryError, SyntaxError):  # nesting Jinja (or Python) cannot compile
        raise TemplateError("the template is nested too deep", None) from None
    finally:
        _budget.reset(token)


def render(source: str, context: dict[str, Any]) -> str:
    return compile_template(source).render(context)
