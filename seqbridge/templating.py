"""Templates for step subjects and bodies: Jinja2's sandbox, compiled once and cached.

The sandbox refuses attribute tricks (``__class__``, ``__subclasses__``, ...) and unsafe calls.
Undefined variables render as empty strings so a missing contact field never breaks a send.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: No template may build a string, list or number bigger than this (``"a" * 10**9``, ``9**9**9``).
MAX_SIZE = 100_000


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on the operators that can allocate without limit."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_SIZE
                ):
                    raise SecurityError("repetition too large")
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str | list | tuple) and len(result) > MAX_SIZE:
            raise SecurityError("result too large")
        if isinstance(result, int) and result.bit_length() > 4096:
            raise SecurityError("number too large")
        return result


# ChainableUndefined: a missing field renders "", however deep (``contact.company.name``).
_env = _BoundedEnvironment(autoescape=False, trim_blocks=True, undefined=ChainableUndefined)


class TemplateError(ValueError):
    """A template that does not compile; ``line`` is 1-based."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@lru_cache(maxsize=4096)
def compile_template(source: str):
    """Compile ``source`` (cached). Raises :class:`TemplateError` with the line of the problem."""
    try:
        return _env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}", exc.lineno) from None


def render(source: str, context: dict[str, Any]) -> str:
    return compile_template(source).render(context)
