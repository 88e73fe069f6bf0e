"""Reading a mapping file: safe YAML that remembers where every value came from, then ``${ENV}``.

PyYAML's safe loader already refuses Python object tags; on top of it this reader
- keeps the line and column of every key and value, so a problem points at ``file:line:col``;
- refuses duplicate keys (plain YAML keeps the last one silently);
- bounds the file size, the nesting depth and the number of nodes, which stops alias bombs
  ("billion laughs") before they expand;
- replaces ``${VAR}`` and ``${VAR:-default}`` in strings; ``$${`` is a literal ``${``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 50
MAX_NODES = 100_000

Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
    """Something wrong in a mapping file, at a 1-based line and column."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def to_api(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message}


@dataclass
class Document:
    """A parsed file: its data, and where each path in it was written."""

    file: str
    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    #: Paths whose string came (at least partly) from the environment: treat their values as secret.
    from_env: set[Path] = field(default_factory=set)

    def at(self, path: Path, message: str) -> Problem:
        """A problem located at ``path``, or at its nearest written ancestor."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        line, col = self.positions.get(path, (1, 1))
        return Problem(self.file, line, col, message)


class ProblemsFound(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null")}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_ENV = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.nodes = 0
        self.problems: list[Problem] = []
        self.positions: dict[Path, tuple[int, int]] = {}
        self.from_env: set[Path] = set()
        self.constructor = SafeConstructor()

    def problem(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message))

    def value(self, node: Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ProblemsFound(
                [
                    Problem(
                        self.file,
                        node.start_mark.line + 1,
                        node.start_mark.column + 1,
                        f"more than {MAX_NODES} values (an alias bomb?)",
                    )
                ]
            )
        if depth > MAX_DEPTH:
            raise ProblemsFound(
                [
                    Problem(
                        self.file,
                        node.start_mark.line + 1,
                        node.start_mark.column + 1,
                        f"nested deeper than {MAX_DEPTH} levels",
                    )
                ]
            )
        self.positions.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if not isinstance(node, ScalarNode) and node.tag not in _PLAIN_TAGS:
            self.problem(node, f"the tag {node.tag!r} is not allowed; mappings are plain data")
            return None
        if isinstance(node, MappingNode):
            result: dict[str, Any] = {}
            merges: list[Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merges.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
                    continue
                key = self.value(key_node, (*path, "\0key"), depth + 1)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.problem(key_node, "a key must be a plain string")
                    continue
                key = str(key)
                if key in result:
                    self.problem(key_node, f"duplicate key {key!r}")
                    continue
                self.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self.value(value_node, (*path, key), depth + 1)
            for merged in merges:  # <<: *defaults — keys written here win over merged ones
                if not isinstance(merged, MappingNode):
                    self.problem(merged, "<< merges a mapping (an &anchor of one)")
                    continue
                value = self.value(merged, path, depth + 1)
                for key, item in value.items():
                    result.setdefault(key, item)
            return result
        if isinstance(node, SequenceNode):
            return [self.value(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        if node.tag == _TIMESTAMP:  # a date stays the text it was written as: mappings are JSON data
            scalar: Any = node.value
        elif node.tag not in _SCALAR_TAGS:  # !!binary, !!python/name:…, !custom
            self.problem(node, f"the tag {node.tag!r} is not allowed; mappings are plain data")
            return None
        else:
            try:
                scalar = self.constructor.construct_object(node)
            except ConstructorError as error:
                self.problem(node, f"cannot read this value: {error.problem}")
                return None
        if isinstance(scalar, float) and not math.isfinite(scalar):
            self.problem(node, f"{node.value!r} is not a number JSON can hold")
            return None
        if isinstance(scalar, str) and "${" in scalar:
            scalar = self.interpolate(node, path, scalar)
        return scalar

    def interpolate(self, node: Node, path: Path, text: str) -> str:
        def replace(match: re.Match) -> str:
            if match.group(1):  # $${...}: a literal ${...}
                return match.group(0)[1:]
            name, default = match.group(2), match.group(3)
            value = self.environ.get(name) if name in self.environ else None
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                placeholder = getattr(self.environ, "placeholder", None)
                if placeholder is not None:  # mapping tests: no secrets needed
                    return placeholder(name)
                self.problem(node, f"environment variable {name} is not set and has no default")
                return ""
            self.from_env.add(path)
            return value

        return _ENV.sub(replace, text)


def read_document(file: str, text: str, environ: Mapping[str, str] | None = None) -> Document:
    """Parse ``text`` (the contents of ``file``). Raises :class:`ProblemsFound`."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise ProblemsFound([Problem(file, 1, 1, f"the file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax: {error.problem or error}"
        if "'\\t'" in message:
            message += " (YAML indents with spaces, never tabs)"
        raise ProblemsFound([Problem(file, line, col, message)]) from None
    except yaml.reader.ReaderError as error:  # a character YAML does not allow, e.g. NUL
        line, col = _line_col(text, error.position)
        message = f"the character U+{error.character:04X} is not allowed in YAML"
        raise ProblemsFound([Problem(file, line, col, message)]) from None
    except yaml.YAMLError as error:
        raise ProblemsFound([Problem(file, 1, 1, f"YAML: {error}")]) from None
    except RecursionError:  # the composer recurses: find the line it could not go past
        line, col = _too_deep(text)
        raise ProblemsFound([Problem(file, line, col, f"nested deeper than {MAX_DEPTH} levels")]) from None
    if node is None:
        return Document(file, None, {(): (1, 1)})
    reader = _Reader(file, os.environ if environ is None else environ)
    data = reader.value(node, (), 0)
    if reader.problems:
        raise ProblemsFound(reader.problems)
    return Document(file, data, reader.positions, reader.from_env)


def read_file(path: str, environ: Mapping[str, str] | None = None) -> Document:
    """Read and parse a mapping file. Raises :class:`ProblemsFound` (unreadable files included)."""
    return read_document(path, read_text(path), environ)


def read_text(path: str) -> str:
    """The text of a mapping file, as written (``${ENV}`` not expanded). Raises
    :class:`ProblemsFound` for a file that cannot be read, is too large or is not UTF-8."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ProblemsFound([Problem(path, 1, 1, f"cannot read the file: {error.strerror}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ProblemsFound([Problem(path, 1, 1, f"the file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line, col = _line_col(raw, error.start)
        raise ProblemsFound([Problem(path, line, col, f"the file is not UTF-8 ({error.reason})")]) from None
    return text


def _line_col(text: str | bytes, index: int) -> tuple[int, int]:
    """The 1-based line and column of ``index`` in ``text``."""
    before = text[:index]
    newline = "\n" if isinstance(before, str) else b"\n"
    return before.count(newline) + 1, index - before.rfind(newline)  # type: ignore[arg-type]


def _too_deep(text: str) -> tuple[int, int]:
    """Where ``text`` first nests deeper than MAX_DEPTH. YAML's parser walks events without
    recursion, where its composer (which builds the nodes) recurses."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1, event.start_mark.column + 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return 1, 1
