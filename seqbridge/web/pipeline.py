"""What happens to every request before its view runs, in this order:

request id → route known? → authenticate → scope → query parameters → JSON body.

Authentication and scopes come from the contract (``x-required-scope``), so no route can forget them.
"""

from __future__ import annotations

import functools
import logging
import re
import time

import uuid_utils
from flask import Flask, current_app, g, request

from seqbridge import metrics
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import NotFound, ScopeDenied, SeqbridgeError, Unauthorized
from seqbridge.services import Services
from seqbridge.services.keys import scope_granted
from seqbridge.web.contract import Contract

access_log = logging.getLogger("seqbridge.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,100}")


@functools.lru_cache(maxsize=4096)
def _answered(route: str, method: str, status: int):
    """The request counter for this route, method and status (prometheus' ``labels()`` takes a
    lock and builds a key on every call; routes are few)."""
    return metrics.REQUESTS.labels(route, method, str(status))


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
    # Each runs for every request: the request and g are looked up once, not per attribute.
    @app.before_request
    def _assign_request_id():
        state = g._get_current_object()
        state.started = time.perf_counter()
        incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
        state.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid_utils.uuid4().hex
        state.query, state.body, state.caller = {}, None, None

    @app.before_request
    def _enforce_contract():
        req = request._get_current_object()
        if req.url_rule is None or req.method == "OPTIONS":
            return  # 404 / 405 are answered by the error handlers; OPTIONS runs no view
        if request.blueprint == "console":
            return  # browser pages, not API routes: the console checks its session, CSRF and scopes
        # HEAD runs the GET view, so it is checked exactly like GET.
        method = "GET" if req.method == "HEAD" else req.method
        c = contract()
        operation = c.operation_for(req.url_rule.rule, method)
        if any("\x00" in str(v) for v in (req.view_args or {}).values()):
            raise NotFound()  # no id contains NUL; PostgreSQL could not even compare it
        if operation is None:
            # Every route is in the spec (a test checks it); refuse rather than run unchecked.
            raise SeqbridgeError("This route is not in the API contract.", code="route_not_in_contract")
        state = g._get_current_object()
        if not operation.public:
            if req.headers.get("Authorization") is None:
                raise Unauthorized()
            principal = services().keys.authenticate(_bearer_token())
            if operation.scope and not scope_granted(principal.scopes, operation.scope):
                raise ScopeDenied(operation.scope)
            state.caller = Caller(
                principal.org_id,
                Actor(ActorType.API_KEY, principal.key_id),
                state.request_id,
                principal.scopes,
            )
        state.query = c.parse_query(operation, req.args)
        if operation.body_validator is not None:
            state.body = c.parse_body(operation, req.mimetype, req.get_data(cache=True))

    @app.after_request
    def _tag_response(response):
        req = request._get_current_object()
        request_id = getattr(g, "request_id", None) or uuid_utils.uuid4().hex
        response.headers["X-Request-Id"] = request_id
        route = req.url_rule.rule if req.url_rule is not None else "unmatched"
        code = None
        if route == HOOK_ROUTE and response.status_code >= 400 and response.is_json:
            code = ((response.get_json(silent=True) or {}).get("error") or {}).get("code", "error")
        account(
            route,
            req.method,
            req.path,
            response.status_code,
            started=getattr(g, "started", None),
            hook=(req.view_args or {}).get("hook_name"),
            error_code=code,
        )
        return response


#: The webhook route (its rejections are counted per hook and code).
HOOK_ROUTE = "/hooks/<hook_name>"


def account(
    route: str,
    method: str,
    path: str,
    status: int,
    *,
    started: float | None,
    hook: str | None = None,
    error_code: str | None = None,
    request_id: str | None = None,
) -> None:
    """What every answered request leaves behind: the request counter, a webhook's rejection by
    code, and one access-log line (the path without its query string: a ``?token=`` stays out
    of logs). Flask's requests call it after their view, the webhook lane after its answer."""
    _answered(route, method, status).inc()
    if error_code is not None:
        metrics.REJECTIONS.labels(
            "unknown" if error_code == "hook_not_found" else hook or "unknown", error_code
        ).inc()
    if not access_log.isEnabledFor(logging.INFO):
        return
    extra = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "hook": hook,
    }
    if request_id is not None:
        extra["request_id"] = request_id
    access_log.info("%s %s %s", method, path, status, extra=extra)
