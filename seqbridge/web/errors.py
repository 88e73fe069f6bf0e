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


def _respond(status: int, code: str, message: str, details=None, headers=None):
    error = {"code": code, "message": message}
    if details:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(SeqbridgeError)
    def _seqbridge_error(error: SeqbridgeError):
        if error.status >= 500:
            log.warning(
                "request %s failed: %s (%s)", getattr(g, "request_id", "-"), error.code, error.message
            )
        headers = dict(error.headers)
        if error.status == 401 and "WWW-Authenticate" not in headers:
            # RFC 9110 and RFC 6750: every 401 carries a challenge.
            challenge = 'Bearer realm="seqbridge"'
            if error.code != "unauthorized":
                challenge += ', error="invalid_token"'
            headers["WWW-Authenticate"] = challenge
        return _respond(error.status, error.code, error.message, error.details, headers)

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
        request_id = getattr(g, "request_id", "-")
        log.exception("unexpected error in request %s %s %s", request_id, request.method, request.path)
        return _respond(
            500,
            "internal_error",
            f"An unexpected error occurred. Quote request id {request_id} when reporting it.",
            {"request_id": request_id},
        )
