"""Idempotency-Key for authenticated POST requests: replay the kept answer, or run and keep it."""

from __future__ import annotations

import re

from flask import Flask, Response, g, request

from seqbridge.errors import BadRequest
from seqbridge.services.idempotency import request_hash
from seqbridge.web.pipeline import services

_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def init_app(app: Flask) -> None:
    """Register after the pipeline: the caller is authenticated and the body validated first."""

    @app.before_request
    def _replay_or_claim():
        g.idempotency_key = None
        if request.method != "POST" or g.get("caller") is None:  # webhooks have no caller
            return None
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not _KEY.fullmatch(key):
            raise BadRequest(
                "Idempotency-Key must be 1-255 visible ASCII characters.", code="invalid_idempotency_key"
            )
        fingerprint = request_hash(
            request.method, request.path, request.query_string, request.get_data(cache=True)
        )
        kept = services().idempotency.begin(g.caller, key, request.method, request.path, fingerprint)
        if kept is not None:
            response = Response(kept.body, status=kept.status, content_type=kept.content_type)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        g.idempotency_key = key
        return None

    @app.after_request
    def _keep(response: Response) -> Response:
        key = g.get("idempotency_key")
        if key:
            g.idempotency_key = None
            services().idempotency.finish(
                g.caller, key, response.status_code, response.content_type, response.get_data()
            )
        return response
