"""``/hooks/<name>``: the front door for webhooks, in a fixed order —

detect the hook → rate limit → size and content type → verify → parse → deduplicate → store → answer.

Each refusal has its own code (``hook_not_found``, ``hook_misconfigured``, ``rate_limited``,
``payload_too_large``, ``unsupported_media_type``, the signature reasons, ``malformed_payload``).
"""

from __future__ import annotations

import functools
import json
import math

from flask import Blueprint, Request, Response, current_app, g, redirect, request

from connectors.base import InboundRequest, VerificationError
from seqbridge import metrics
from seqbridge.errors import (
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    TooManyRequests,
    UnsupportedMediaType,
)
from seqbridge.services.intake import Received

bp = Blueprint("hooks", __name__)


def _inbound(req: Request, body: bytes, connector, base_url: str) -> InboundRequest:
    environ = req.environ
    if not getattr(connector, "signs_url", False):
        url = ""  # only senders that sign the URL need it (building it costs per request)
    elif base_url:
        query = req.query_string.decode("latin-1")
        url = base_url.rstrip("/") + req.path + (f"?{query}" if query else "")
    else:
        url = req.url
    return InboundRequest(
        method=req.method,
        url=url,
        headers=_headers(environ),
        query=req.args.to_dict(flat=False) if environ.get("QUERY_STRING") else {},
        body=body,
        content_type=environ.get("CONTENT_TYPE", ""),
    )


def _body(req: Request, length: int | None) -> bytes:
    """The raw body. With a Content-Length (the view has checked it against the limit) exactly
    that many bytes are read from the server's stream, as WSGI asks; werkzeug's ``get_data``
    would wrap the stream in a guard that costs per request and has nothing to guard here."""
    if length is not None:
        return req.environ["wsgi.input"].read(length)
    return req.get_data(cache=False)  # chunked: read up to the limit, and no further


def _headers(environ: dict) -> dict[str, str]:
    """The request's headers, names lower-cased (what werkzeug's ``request.headers`` holds, read
    straight from the WSGI environ)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = value
    return headers


def _answer(app, received: Received) -> Response:
    """The JSON envelope, made directly: this runs for every webhook."""
    body = json.dumps({"data": received.to_api()}, separators=(",", ":"))
    return app.response_class(body + "\n", status=received.http_status, content_type="application/json")


@functools.lru_cache(maxsize=1024)
def _delivered(hook: str, status: str):
    """The deliveries counter for this hook and outcome (``labels()`` costs a lock per call)."""
    return metrics.DELIVERIES.labels(hook, status)


@bp.route("/hooks/<hook_name>", methods=["GET", "POST", "PUT"])
def receive(hook_name: str):
    req = request._get_current_object()  # looked up once: this view runs for every webhook
    app = current_app._get_current_object()
    inbox = app.extensions["seqbridge"].inbox
    hook = inbox.hook(hook_name)
    wait = inbox.throttle(hook)
    if wait:
        raise TooManyRequests(
            f"Hook {hook_name!r} is over its rate limit.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    if req.method == "GET":
        return _handshake(hook)
    limit = hook.max_body_bytes or app.config["MAX_CONTENT_LENGTH"]
    length = req.content_length  # werkzeug parses the header on every call: once here
    if (length or 0) > limit:
        raise PayloadTooLarge(details={"limit_bytes": limit})
    accepted = getattr(hook.connector, "content_types", ())
    if accepted and req.mimetype not in accepted:
        raise UnsupportedMediaType(
            f"{hook.connector_name} sends {' or '.join(accepted)}.", details={"accepted": list(accepted)}
        )
    body = _body(req, length)
    if len(body) > limit:
        raise PayloadTooLarge(details={"limit_bytes": limit})
    inbound = _inbound(req, body, hook.connector, app.config.get("PUBLIC_BASE_URL") or "")
    received = inbox.receive(hook, inbound, g.request_id)
    _delivered(hook.name, received.status).inc()
    redirect_to = getattr(hook.connector, "redirect_to", None)
    if redirect_to:  # a browser form: land the visitor on a page, not on JSON
        return redirect(redirect_to, code=303)
    return _answer(app, received)


def _handshake(hook):
    """A sender's subscription check (Meta's ``hub.challenge``); other hooks take no GET."""
    handshake = getattr(hook.connector, "handshake", None)
    if handshake is None:
        raise MethodNotAllowed(
            f"Hook {hook.name!r} accepts POST; {hook.connector_name} has no GET handshake."
        )
    try:
        challenge = handshake(
            _inbound(request, b"", hook.connector, current_app.config.get("PUBLIC_BASE_URL") or "")
        )
    except VerificationError as error:
        raise Forbidden(error.message, code=error.reason) from None
    return Response(challenge, status=200, mimetype="text/plain")
