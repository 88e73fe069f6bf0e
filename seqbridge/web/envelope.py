"""Response envelopes: ``{"data": ...}``, lists add ``"meta"``; errors are built in :mod:`.errors`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, g, jsonify

from seqbridge.context import Caller
from seqbridge.services.common import CursorPage, OffsetPage


def ok(data: Any, status: int = 200, meta: dict[str, Any] | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"data": data}
    if meta is not None:
        body["meta"] = meta
    return jsonify(body), status


def page(result: OffsetPage | CursorPage) -> tuple[Response, int]:
    return ok(result.items, meta=result.meta())


def no_content() -> tuple[str, int]:
    return "", 204


def caller() -> Caller:
    """The authenticated caller of this request (set by the contract check)."""
    return g.caller


def body() -> Any:
    """The request's JSON body, already validated against the spec."""
    return g.body


def query() -> dict[str, Any]:
    """The request's query parameters, coerced and validated against the spec."""
    return g.query


def time_param(value: str | None) -> datetime | None:
    """A date-time the contract has already checked (``…Z`` or an offset), or None."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
