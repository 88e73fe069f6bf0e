"""What happens to every request before its view runs, in this order:

request id → route known? → authenticate → scope → query parameters → JSON body.

Authentication and scopes come from the contract (``x-required-scope``), so no route can forget them.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, current_app, g, request

from seqbridge import metrics
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import NotFound, ScopeDenied, SeqbridgeError, Unauthorized
from seqbridge.services import Services
from seqbridge.services.keys import scope_granted
from seqbridge.web.contract import Contract

access_log = logging.getLogger("seqbridge.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,100}")


def services() -> Services:
    return current_app.extensions["seqbridge"]


def contract() -> Contract:
    return current_app.extensions["seqbridge.contract"]


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def init_app(app: Flask) -> None:
    @app.before_request
    def _assign_request_id():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.query, g.body, g.caller = {}, None, None

    @app.before_request
    def _enforce_contract():
        if request.url_rule is None or request.method == "OPTIONS":
            return  # 404 / 405 are answered by the error handlers; OPTIONS runs no view
        if request.blueprint == "console":
            return  # browser pages, not API routes: the console checks its session, CSRF and scopes
        # HEAD runs the GET view, so it is checked exactly like GET.
        method = "GET" if request.method == "HEAD" else request.method
        operation = contract().operation_for(request.url_rule.rule, method)
        if any("\x00" in str(v) for v in (request.view_args or {}).values()):
            raise NotFound()  # no id contains NUL; PostgreSQL could not even compare it
        if operation is None:
            # Every route is in the spec (a test checks it); refuse rather than run unchecked.
            raise SeqbridgeError("This route is not in the API contract.", code="route_not_in_contract")
        if not operation.public:
            if request.headers.get("Authorization") is None:
                raise Unauthorized()
            principal = services().keys.authenticate(_bearer_token())
            if operation.scope and not scope_granted(principal.scopes, operation.scope):
                raise ScopeDenied(operation.scope)
            g.caller = Caller(
                principal.org_id, Actor(ActorType.API_KEY, principal.key_id), g.request_id, principal.scopes
            )
        c = contract()
        g.query = c.parse_query(operation, request.args)
        if operation.body_validator is not None:
            g.body = c.parse_body(operation, request.mimetype, request.get_data(cache=True))

    @app.after_request
    def _tag_response(response):
        response.headers["X-Request-Id"] = getattr(g, "request_id", None) or uuid.uuid4().hex
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if route == "/hooks/<hook_name>" and response.status_code >= 400 and response.is_json:
            code = ((response.get_json(silent=True) or {}).get("error") or {}).get("code", "error")
            hook = (
                "unknown"
                if code == "hook_not_found"
                else (request.view_args or {}).get("hook_name", "unknown")
            )
            metrics.REJECTIONS.labels(hook, code).inc()
        # One line per request: the path without its query string (a ?token= stays out of logs).
        started = getattr(g, "started", None)
        access_log.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
                   "hook": (request.view_args or {}).get("hook_name")},
        )  # fmt: skip
        return response
