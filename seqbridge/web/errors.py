"""The one place errors become responses: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from seqbridge.errors import SeqbridgeError

log = logging.getLogger("seqbridge.web")

_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    404: ("not_found", "No such route."),
    405: ("method_not_allowed", "This method is not allowed on this route."),
    413: ("payload_too_large", "The request body is larger than this server accepts."),
    415: ("unsupported_media_type", "This content type is not supported here."),
}


def error_payload(code: str, message: str, details=None) -> dict:
    """The error envelope: ``{"error": {"code", "message"[, "details"]}}``."""
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def seqbridge_error(error: SeqbridgeError, request_id: str | None) -> tuple[int, dict[str, str], dict]:
    """A service's refusal as an answer: its status, headers and envelope (shared by Flask's
    error handler and the webhook lane, :mod:`seqbridge.web.hook_lane`)."""
    if error.status >= 500:
        log.warning("request %s failed: %s (%s)", request_id or "-", error.code, error.message)
    headers = dict(error.headers)
    if error.status == 401 and "WWW-Authenticate" not in headers:
        # RFC 9110 and RFC 6750: every 401 carries a challenge.
        challenge = 'Bearer realm="seqbridge"'
        if error.code != "unauthorized":
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    return error.status, headers, error_payload(error.code, error.message, error.details)


def unexpected_error(request_id: str | None, method: str, path: str) -> tuple[int, dict]:
    """A bug, logged with its traceback (call it from the ``except``); the caller gets the request
    id to quote and nothing of the error itself."""
    request_id = request_id or "-"
    log.exception("unexpected error in request %s %s %s", request_id, method, path)
    return 500, error_payload(
        "internal_error",
        f"An unexpected error occurred. Quote request id {request_id} when reporting it.",
        {"request_id": request_id},
    )


def _respond(status: int, code: str, message: str, details=None, headers=None):
    return _json(status, error_payload(code, message, details), headers)


def _json(status: int, payload: dict, headers=None):
    response = jsonify(payload)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(SeqbridgeError)
    def _seqbridge_error(error: SeqbridgeError):
        status, headers, payload = seqbridge_error(error, getattr(g, "request_id", None))
        return _json(status, payload, headers)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        code, message = _HTTP_CODES.get(status, (error.name.lower().replace(" ", "_"), error.description))
        headers = {}
        details = None
        if status == 404:
            message = f"No route {request.method} {request.path}."
        if status == 405:
            allowed = sorted(m for m in (error.valid_methods or []) if m not in ("HEAD", "OPTIONS"))
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}."
            details = {"allowed": allowed}
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            details = {"limit_bytes": limit}
            message = f"The request body is larger than {limit} bytes."
        return _respond(status, code, message, details, headers)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        status, payload = unexpected_error(getattr(g, "request_id", None), request.method, request.path)
        return _json(status, payload)
