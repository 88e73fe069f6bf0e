"""JSON from outside — API request bodies and webhook bodies — read one way, in this one place.

RFC 8259 leaves duplicate names and unpaired surrogates "unpredictable"; I-JSON (RFC 7493)
forbids both, and so does Seqbridge. :func:`loads` accepts

- UTF-8 only;
- no ``NaN`` / ``Infinity``, and no number too large for a double (``1e400``);
- no name twice in one object. Python's parser would keep the last value silently, another parser
  the first: a signed webhook or an API call could then mean two different things. The sender
  gets a clear 400 instead of a silent last-wins;
- no unpaired surrogate (``"\\ud800"``): it is not text, and no database can store it;
- at most :data:`MAX_DEPTH` levels of arrays and objects (``[[[[…]]]]`` cannot exhaust the stack,
  here or in anything that walks the value later).

U+0000 is valid JSON, but no PostgreSQL text can hold it: :func:`find_nul` finds it, and each
caller refuses it with its own code. No Flask and no Seqbridge imports: connectors use it too.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Arrays and objects nested deeper than this are refused.
MAX_DEPTH = 64

# A \uD800-\uDFFF escape in the text: the only way an unpaired surrogate gets into a JSON value
# (UTF-8 decoding already refuses encoded ones). Paired escapes match too; the walk tells them apart.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONError(ValueError):
    """The text is not JSON Seqbridge accepts; ``line`` and ``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"


class NotUTF8(JSONError):
    """The bytes are not UTF-8; ``position`` is the offset of the first bad byte."""

    def __init__(self, position: int) -> None:
        super().__init__(f"not valid UTF-8 (byte {position})")
        self.position = position


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise JSONError(f"the name {_show(twice)} appears twice in one object")
    return result


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError(f"the number {_show(text)} is too large")
    return value


def _constant(name: str) -> Any:
    raise JSONError(f"{name} is not valid JSON")


#: One decoder for every call (``json.loads`` with hooks would build a new one each time); like
#: ``json``'s own default decoder it keeps no state between calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=_float, parse_constant=_constant)


def loads(raw: bytes | str) -> Any:
    """Parse ``raw`` as described above. Raises :class:`JSONError` (:class:`NotUTF8` for bytes
    that are not UTF-8)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise NotUTF8(error.start) from None
    else:
        text = raw
    try:
        value = _DECODER.decode(text)
    except JSONError:
        raise
    except json.JSONDecodeError as error:
        raise JSONError(error.msg, error.lineno, error.colno) from None
    except RecursionError:
        raise JSONError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise JSONError(str(error)[:100]) from None
    # Cheap tests on the text decide whether the value needs walking at all (most bodies do not).
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(text):
        _walk(value)
    return value


def _walk(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and unpaired surrogates, without recursion."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise JSONError("a string holds an unpaired surrogate (\\ud800-\\udfff), which is not text")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise JSONError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((key, depth) for key in node)
            stack.extend((item, depth + 1) for item in node.values())
        else:
            stack.extend((item, depth + 1) for item in node)


def find_nul(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string (or key) holding U+0000, or None."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return where
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and "\x00" in key:
                    return where
                stack.append((item, f"{where}.{key}"))
        elif isinstance(node, list | tuple):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(node))
    return None


def _show(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "…")
