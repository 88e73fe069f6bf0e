"""Templates for step subjects and bodies: Jinja2's sandbox, compiled once and cached.

The sandbox refuses attribute tricks (``__class__``, ``__subclasses__``, ...) and unsafe calls.
Undefined variables render as empty strings so a missing contact field never breaks a send.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(autoescape=False, trim_blocks=True)


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
