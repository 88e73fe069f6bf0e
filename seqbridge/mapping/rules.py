"""The rule language, compiled once: conditions, values and actions over an event context.

An event context is a plain dict::

    {"event": <the connector's normalised event>, "kind": "message", "body": <parsed body>,
     "headers": {...}, "query": {...}, "hook": "whatsapp", "received_at": "2026-...Z"}

- Fields are JMESPath expressions over it (``event.text``, ``body.contact.email``).
- Values are literals, ``{path: <JMESPath>}`` (typed), or strings with ``{{ … }}`` rendered in
  Jinja2's sandbox.
- Regexes run on RE2, which is linear in the input: no pattern can hang the worker.

Nothing here can run arbitrary code, and nothing is compiled per event.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import re2
from jinja2 import Environment
from jinja2.exceptions import SecurityError, TemplateError

from seqbridge.templating import MAX_SIZE, compile_template
from seqbridge.templating import TemplateError as CompileError

Context = dict[str, Any]
Path = tuple[str | int, ...]

#: Words JMESPath reads as literals rather than field names.
_JMESPATH_WORDS = {"true", "false", "null"}

#: A regex must be no longer than this (RE2 bounds the time; this bounds the memory).
MAX_PATTERN = 2000
#: JMESPath's parser and interpreter recurse once per level of an expression.
MAX_EXPRESSION_DEPTH = 50


class RuleError(Exception):
    """A problem in a rule, at ``path`` inside the hook (the loader turns it into file:line:col)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class EvaluationError(Exception):
    """A value could not be computed for this event (a template error, a value too large)."""


# Values --------------------------------------------------------------------------------------


class Value:
    def eval(self, ctx: Context) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Literal(Value):
    value: Any

    def eval(self, ctx: Context) -> Any:
        return self.value


@dataclass(frozen=True)
class Path_(Value):
    expression: Any  # a compiled JMESPath expression
    source: str

    def eval(self, ctx: Context) -> Any:
        return self.expression.search(ctx)


@dataclass(frozen=True)
class Template(Value):
    template: Any
    source: str

    def eval(self, ctx: Context) -> Any:
        try:
            text = self.template.render(ctx)
        except SecurityError as error:
            raise EvaluationError(f"template {self.source!r} refused: {error}") from None
        except (TemplateError, TypeError, ValueError, ArithmeticError) as error:
            raise EvaluationError(f"template {self.source!r} failed: {error}") from None
        if len(text) > MAX_SIZE:
            raise EvaluationError(f"template {self.source!r} produced more than {MAX_SIZE} characters")
        return text


@dataclass(frozen=True)
class Structure(Value):
    """A dict or list whose members are values."""

    items: Any

    def eval(self, ctx: Context) -> Any:
        if isinstance(self.items, dict):
            return {k: v.eval(ctx) for k, v in self.items.items()}
        return [v.eval(ctx) for v in self.items]


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SIMPLE_TEMPLATE = re.compile(r"\{\{\s*(" + _DOTTED.pattern + r")\s*\}\}")
_DICT_ATTRIBUTES = set(dir(dict))


@dataclass(frozen=True)
class _DottedPath:
    """``a.b.c`` over nested objects: what JMESPath answers for such a path, without its
    interpreter (most fields are this simple, and they run for every event)."""

    names: tuple[str, ...]

    def search(self, value: Any) -> Any:
        for name in self.names:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value


_MISSING = object()


@dataclass(frozen=True)
class _DottedTemplate(Value):
    """``{{ a.b.c }}`` rendered as Jinja would (a missing name is "", anything else ``str()``),
    without rendering a template."""

    names: tuple[str, ...]
    source: str

    def eval(self, ctx: Context) -> Any:
        value: Any = ctx
        for name in self.names:
            value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                return ""
        return value if isinstance(value, str) else str(value)


def compile_path(source: Any, path: Path) -> Any:
    if not isinstance(source, str) or not source.strip():
        raise RuleError(path, "a field must be a JMESPath expression (a non-empty string)")
    if _DOTTED.fullmatch(source.strip()) and not _JMESPATH_WORDS & set(source.strip().split(".")):
        return _DottedPath(tuple(source.strip().split(".")))
    try:
        compiled = jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as error:
        raise RuleError(path, f"bad JMESPath expression {source!r}: {_first_line(error)}") from None
    except RecursionError:  # the parser recurses per level: ((((…)))) could not be parsed at all
        raise RuleError(
            path, f"the JMESPath expression is nested deeper than {MAX_EXPRESSION_DEPTH} levels"
        ) from None
    if _depth(compiled.parsed) > MAX_EXPRESSION_DEPTH:  # the interpreter recurses per level too
        raise RuleError(path, f"the JMESPath expression is nested deeper than {MAX_EXPRESSION_DEPTH} levels")
    return compiled


def _depth(tree: dict[str, Any]) -> int:
    """How deep a parsed JMESPath expression nests (without recursing)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.get("children", []) if isinstance(child, dict))
    return deepest


def compile_value(source: Any, path: Path) -> Value:
    """Compile a value: ``{path: expr}``, a template string, a dict/list of values, or a literal."""
    if isinstance(source, dict):
        if set(source) == {"path"}:
            return Path_(compile_path(source["path"], (*path, "path")), source["path"])
        items = {k: compile_value(v, (*path, k)) for k, v in source.items()}
        if all(isinstance(v, Literal) for v in items.values()):
            return Literal({k: v.value for k, v in items.items()})
        return Structure(items)
    if isinstance(source, list):
        values = [compile_value(v, (*path, i)) for i, v in enumerate(source)]
        if all(isinstance(v, Literal) for v in values):
            return Literal([v.value for v in values])
        return Structure(values)
    if isinstance(source, str) and ("{{" in source or "{%" in source):
        simple = _SIMPLE_TEMPLATE.fullmatch(source)
        if simple and not _DICT_ATTRIBUTES & set(simple.group(1).split(".")):
            return _DottedTemplate(tuple(simple.group(1).split(".")), source)
        try:
            return Template(compile_template(source), source)
        except CompileError as error:
            raise RuleError(path, f"bad template: {error}") from None
    return Literal(source)


# Conditions ----------------------------------------------------------------------------------

Condition = Callable[[Context], bool]

OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "contains",
    "matches",
    "keyword",
    "exists",
    "empty",
    "gt",
    "gte",
    "lt",
    "lte",
)


def _fold(value: Any, ignore_case: bool) -> Any:
    return value.casefold() if ignore_case and isinstance(value, str) else value


def _keyword_form(text: str) -> str:
    """A message as a keyword test sees it: case-folded, Unicode-normalised (NFKC, so a composed
    and a decomposed "Ê" are one letter), trimmed, and each run of whitespace one space."""
    return " ".join(unicodedata.normalize("NFKC", text.casefold()).split())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def _test(op: str, expected: Any, ignore_case: bool, path: Path) -> Callable[[Any], bool]:
    """One operator of a field test, as a predicate on the field's value."""
    if op in ("equals", "not_equals"):
        want = _fold(expected, ignore_case)
        positive = op == "equals"
        return lambda v: (_fold(v, ignore_case) == want) is positive
    if op in ("in", "not_in"):
        choices = [_fold(c, ignore_case) for c in expected]
        positive = op == "in"
        return lambda v: (_fold(v, ignore_case) in choices) is positive
    if op == "contains":
        want = _fold(expected, ignore_case)
        return lambda v: (
            want in _fold(v, ignore_case)
            if isinstance(v, str)
            else any(_fold(x, ignore_case) == want for x in v)
            if isinstance(v, list)
            else False
        )
    if op == "matches":
        if len(expected) > MAX_PATTERN:
            raise RuleError(path, f"the regex is longer than {MAX_PATTERN} characters")
        options = re2.Options()
        options.case_sensitive = not ignore_case
        options.max_mem = 8 << 20
        # A test needs no groups, and without them RE2 answers with its DFA: with them it would
        # find the submatches with its NFA, whose time is the input's length times the pattern's
        # size ("(.*){1000}" over a 1 MB field took 30 s).
        options.never_capture = True
        options.log_errors = False
        try:
            pattern = re2.compile(expected, options)
        except re2.error as error:
            raise RuleError(path, f"bad regex {expected!r}: {error}") from None
        return lambda v: (
            isinstance(v, str | int | float)
            and not isinstance(v, bool)
            and pattern.search(str(v)) is not None
        )
    if op == "keyword":
        words = {_keyword_form(w) for w in ([expected] if isinstance(expected, str) else expected)}
        return lambda v: isinstance(v, str) and _keyword_form(v) in words
    if op == "exists":
        return lambda v: (v is not None) is expected
    if op == "empty":
        return lambda v: _is_empty(v) is expected
    limit = float(expected)
    compare = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}[op]
    return lambda v: (n := _number(v)) is not None and compare(n, limit)


def compile_condition(source: Any, path: Path) -> Condition:
    """Compile ``when``: a list (all), ``all``/``any``/``not``, or a field test."""
    if source is None:
        return lambda ctx: True
    if isinstance(source, list):
        parts = [compile_condition(c, (*path, i)) for i, c in enumerate(source)]
        return lambda ctx: all(p(ctx) for p in parts)
    if not isinstance(source, dict):
        raise RuleError(path, "a condition is a field test, all, any, not, or a list")
    if "all" in source or "any" in source:
        key = "all" if "all" in source else "any"
        parts = [compile_condition(c, (*path, key, i)) for i, c in enumerate(source[key] or [])]
        combine = all if key == "all" else any
        return lambda ctx: combine(p(ctx) for p in parts)
    if "not" in source:
        inner = compile_condition(source["not"], (*path, "not"))
        return lambda ctx: not inner(ctx)
    field = compile_path(source.get("field"), (*path, "field"))
    ignore_case = bool(source.get("ignore_case", False))
    ops = [op for op in OPERATORS if op in source]
    if not ops:
        raise RuleError(path, f"a field test needs an operator: one of {', '.join(OPERATORS)}")
    tests = [_test(op, source[op], ignore_case, (*path, op)) for op in ops]
    if len(tests) == 1:
        only = tests[0]
        return lambda ctx: only(field.search(ctx))

    def check(ctx: Context) -> bool:
        value = field.search(ctx)
        return all(t(value) for t in tests)

    return check


# What a rule can read ------------------------------------------------------------------------
#
# The context keys (``event``, ``body``, ``headers`` …) an expression can reach, or None when it may
# reach any. A caller that knows no rule of a hook reads ``body`` need not parse the body at all.

Roots = frozenset[str] | None

#: JMESPath nodes whose first child is evaluated on the current value and the others on its result.
_LEFT_ONLY = {
    "subexpression",
    "pipe",
    "index_expression",
    "projection",
    "value_projection",
    "filter_projection",
    "flatten",
}
#: JMESPath nodes whose children are all evaluated on the current value.
_ALL_CHILDREN = {
    "or_expression",
    "and_expression",
    "not_expression",
    "comparator",
    "multi_select_list",
    "multi_select_dict",
    "key_val_pair",
    "function_expression",
}


def union(parts: list[Roots]) -> Roots:
    """The roots of several expressions together."""
    out: set[str] = set()
    for part in parts:
        if part is None:
            return None
        out |= part
    return frozenset(out)


def path_roots(source: str) -> Roots:
    """The context keys a JMESPath expression reads (``@`` or ``*`` at the top: any)."""
    text = source.strip()
    if _DOTTED.fullmatch(text):
        return frozenset({text.split(".")[0]})
    try:
        return _tree_roots(jmespath.compile(source).parsed)
    except (jmespath.exceptions.JMESPathError, RecursionError):
        return None


def _tree_roots(node: dict[str, Any]) -> Roots:
    kind, children = node.get("type"), node.get("children") or []
    if kind == "field":
        return frozenset({node["value"]})
    if kind in ("literal", "index", "slice", "expref"):  # nothing read (an index of an object is null)
        return frozenset()
    if kind in _LEFT_ONLY:
        return _tree_roots(children[0]) if children else frozenset()
    if kind in _ALL_CHILDREN:
        return union([_tree_roots(c) for c in children if isinstance(c, dict)])
    return None  # current (@), identity (a top-level *), or anything unknown: it may read any


def template_roots(source: str) -> Roots:
    """The context keys a template reads (Jinja's undeclared names: the sandbox offers no other
    way to reach the context)."""
    from jinja2 import meta

    simple = _SIMPLE_TEMPLATE.fullmatch(source)
    if simple:
        return frozenset({simple.group(1).split(".")[0]})
    try:
        return frozenset(meta.find_undeclared_variables(Environment().parse(source)))
    except Exception:  # it did compile; anything odd reads as "any"
        return None


def value_roots(source: Any) -> Roots:
    """The context keys a value (as :func:`compile_value` reads it) reads."""
    if isinstance(source, dict):
        if set(source) == {"path"} and isinstance(source["path"], str):
            return path_roots(source["path"])
        return union([value_roots(v) for v in source.values()])
    if isinstance(source, list):
        return union([value_roots(v) for v in source])
    if isinstance(source, str) and ("{{" in source or "{%" in source):
        return template_roots(source)
    return frozenset()


def condition_roots(source: Any) -> Roots:
    """The context keys a condition (as :func:`compile_condition` reads it) reads."""
    if source is None:
        return frozenset()
    if isinstance(source, list):
        return union([condition_roots(c) for c in source])
    if not isinstance(source, dict):
        return None
    for key in ("all", "any"):
        if key in source:
            return union([condition_roots(c) for c in source[key] or []])
    if "not" in source:
        return condition_roots(source["not"])
    return path_roots(source["field"]) if isinstance(source.get("field"), str) else None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
