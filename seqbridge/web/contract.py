"""``openapi.yaml`` is the contract: request bodies, query parameters and scopes are enforced
from it, so the spec and the behaviour cannot drift.

Each operation declares either ``x-required-scope`` (checked for every request) or
``security: []`` (public). Schemas are checked with ``jsonschema`` (Draft 2020-12, which is
what OpenAPI 3.1 uses).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from seqbridge import strictjson
from seqbridge.errors import MalformedJSON, UnsupportedMediaType, ValidationFailed

SPEC_URI = "urn:seqbridge:openapi"
METHODS = ("get", "post", "put", "patch", "delete")
_FLASK_PARAM = re.compile(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>")
_MAX_MESSAGE = 300


@lru_cache(maxsize=1024)
def flask_rule_to_openapi(rule: str) -> str:
    """``/api/v1/contacts/<contact_id>`` → ``/api/v1/contacts/{contact_id}``."""
    return _FLASK_PARAM.sub(r"{\1}", rule)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class QueryParam:
    name: str
    required: bool
    schema: dict[str, Any]
    validator: Draft202012Validator


@dataclass
class Operation:
    method: str
    path: str
    operation_id: str
    scope: str | None
    public: bool
    query: list[QueryParam] = field(default_factory=list)
    body_validator: Draft202012Validator | None = None
    body_required: bool = False
    body_media: tuple[str, ...] = ()
    #: ``x-raw-body: true``: the view reads and checks the raw body itself (webhooks: the
    #: signature covers the exact bytes, and each sender has its own content types).
    raw_body: bool = False


class Contract:
    """The parsed spec, with a compiled validator per operation."""

    def __init__(self, spec: dict[str, Any], text: str) -> None:
        self.spec = spec
        self.text = text
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(SPEC_URI, resource)
        self.operations: dict[tuple[str, str], Operation] = {}
        for path, item in (spec.get("paths") or {}).items():
            for method in METHODS:
                if method in item:
                    self.operations[(path, method.upper())] = self._compile(path, method, item)

    @classmethod
    def load(cls, path: str | Path) -> Contract:
        """Parse and compile the spec at ``path``; cached per file and modification time."""
        resolved = Path(path).resolve()
        return _load_cached(resolved, resolved.stat().st_mtime_ns)

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{SPEC_URI}#/{pointer}"},
            registry=self._registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    def _compile(self, path: str, method: str, item: dict[str, Any]) -> Operation:
        op = item[method]
        public = op.get("security") == []
        operation = Operation(
            method=method.upper(),
            path=path,
            operation_id=op.get("operationId", ""),
            scope=op.get("x-required-scope"),
            public=public,
            raw_body=bool(op.get("x-raw-body")),
        )
        sources = (
            (("paths", path, "parameters"), item.get("parameters", [])),
            (("paths", path, method, "parameters"), op.get("parameters", [])),
        )
        for base, declared in sources:
            for index, param in enumerate(declared):
                pointer = param["$ref"].removeprefix("#/") if "$ref" in param else _pointer(*base, str(index))
                param = self._deref(param)
                if param.get("in") != "query":
                    continue
                operation.query.append(
                    QueryParam(
                        name=param["name"],
                        required=bool(param.get("required")),
                        schema=self._deref(param.get("schema", {})),
                        validator=self._validator(pointer + "/schema"),
                    )
                )
        body = op.get("requestBody")
        if body:
            body_pointer = _pointer("paths", path, method, "requestBody")
            if "$ref" in body:
                body_pointer = body["$ref"].removeprefix("#/")
                body = self._deref(body)
            content = body.get("content", {})
            operation.body_media = tuple(content)
            operation.body_required = bool(body.get("required"))
            if "application/json" in content and not operation.raw_body:
                operation.body_validator = self._validator(
                    body_pointer + "/" + _pointer("content", "application/json", "schema")
                )
        return operation

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def operation_for(self, flask_rule: str, method: str) -> Operation | None:
        return self.operations.get((flask_rule_to_openapi(flask_rule), method))

    # Request checks ---------------------------------------------------------------------

    def parse_query(self, operation: Operation, args) -> dict[str, Any]:
        """Coerce and validate the query parameters the operation declares. No parameter,
        declared or not, may hold U+0000: no PostgreSQL text can (and a webhook stores its query).

        Raises :class:`ValidationFailed` naming every offending parameter.
        """
        if not args and not any(param.required for param in operation.query):  # most requests
            # What the loop below gives for no parameters: the defaults of the scalar ones.
            return {
                p.name: p.schema["default"]
                for p in operation.query
                if "default" in p.schema and p.schema.get("type") != "array"
            }
        values: dict[str, Any] = {}
        nul = {name for name, value in args.items(multi=True) if "\x00" in name or "\x00" in value}
        problems = [
            _problem(name, "must not contain the NUL character (U+0000)", "query") for name in sorted(nul)
        ]
        for param in operation.query:
            if param.name in nul:
                continue
            kind = param.schema.get("type")
            if kind == "array":
                raw_list = args.getlist(param.name)
                if not raw_list:
                    if param.required:
                        problems.append(_problem(param.name, "is required", "query"))
                    continue
                item_kind = (param.schema.get("items") or {}).get("type")
                coerced = [_coerce(v, item_kind) for v in raw_list]
            else:
                raw = args.get(param.name)
                if raw is None:
                    if param.required:
                        problems.append(_problem(param.name, "is required", "query"))
                    elif "default" in param.schema:
                        values[param.name] = param.schema["default"]
                    continue
                coerced = _coerce(raw, kind)
            errors = sorted(param.validator.iter_errors(coerced), key=lambda e: list(e.path))
            if errors:
                problems.append(_problem(param.name, _short(errors[0].message), "query"))
                continue
            values[param.name] = coerced
        if problems:
            raise ValidationFailed(_summary(problems), details={"errors": problems})
        return values

    def parse_body(self, operation: Operation, mimetype: str, raw: bytes) -> Any:
        """Parse and validate a JSON body. Raises :class:`UnsupportedMediaType`,
        :class:`MalformedJSON` or :class:`ValidationFailed`."""
        if operation.body_validator is None:
            return None
        if not raw.strip():
            if operation.body_required:
                raise ValidationFailed(
                    "A JSON request body is required.",
                    code="missing_body",
                    details={"errors": [_problem("$", "a JSON body is required")]},
                )
            return None
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise UnsupportedMediaType(
                f"Send the body as application/json (got {mimetype or 'no Content-Type'}).",
                details={"expected": "application/json", "received": mimetype or None},
            )
        body = parse_json(raw)
        nul = strictjson.find_nul(body)
        if nul is not None:
            raise ValidationFailed(
                f"{nul}: must not contain the NUL character (U+0000)",
                details={"errors": [_problem(nul, "must not contain the NUL character (U+0000)")]},
            )
        errors = list(operation.body_validator.iter_errors(body))
        if errors:
            problems = [p for e in sorted(errors, key=_error_order) for p in self._explain(e)]
            problems = problems or [_problem(e.json_path, _short(e.message)) for e in errors]
            raise ValidationFailed(_summary(problems), details={"errors": problems})
        return body

    def _explain(self, error: ValidationError) -> list[dict[str, str]]:
        """One problem per offending field; unknown fields get a "did you mean"."""
        if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
            error.instance, dict
        ):
            allowed = self._properties(error.schema)
            problems = []
            for name in (k for k in error.instance if k not in allowed):
                close = _closest(name, allowed)
                hint = f" (did you mean {close!r}?)" if close else ""
                problems.append(_problem(f"{error.json_path}.{name}", f"unknown field {name!r}{hint}"))
            # No unknown field: the keyword only failed because another error dropped the
            # annotations of a known one. That other error is the one to report.
            return problems
        return [_problem(error.json_path, _short(error.message))]

    def _properties(self, schema: dict[str, Any]) -> set[str]:
        schema = self._deref(schema)
        names = set((schema.get("properties") or {}).keys())
        for keyword in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(keyword, []):
                names |= self._properties(sub)
        return names


def parse_json(raw: bytes) -> Any:
    """Strict JSON (:mod:`seqbridge.strictjson`). Raises :class:`MalformedJSON` with the position."""
    try:
        return strictjson.loads(raw)
    except strictjson.NotUTF8 as exc:
        raise MalformedJSON(f"The request body is not valid UTF-8 (byte {exc.position}).") from None
    except strictjson.JSONError as exc:
        details = {"line": exc.line, "column": exc.column} if exc.line is not None else None
        raise MalformedJSON(f"The request body is not valid JSON: {exc}.", details=details) from None


def _coerce(raw: str, kind: str | None) -> Any:
    """Turn a query string value into the schema's type where it plainly is one; else leave it."""
    if kind == "integer":
        return int(raw) if re.fullmatch(r"-?\d{1,18}", raw) else raw
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "false": False, "1": True, "0": False}.get(raw.lower(), raw)
    return raw


def _closest(name: str, options: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, sorted(options), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _error_order(error: ValidationError) -> tuple:
    return (len(error.path), [str(p) for p in error.path])


def _short(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"


def _problem(path: str, message: str, where: str = "body") -> dict[str, str]:
    return {"path": path, "in": where, "message": message}


def _summary(problems: list[dict[str, str]]) -> str:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first['path']}: {first['message']}{more}"


@lru_cache(maxsize=8)
def _load_cached(path: Path, _mtime_ns: int) -> Contract:
    text = path.read_text(encoding="utf-8")
    return Contract(yaml.safe_load(text), text)
