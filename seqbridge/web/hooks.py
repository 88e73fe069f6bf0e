"""``/hooks/<name>``: the front door for webhooks, in a fixed order —

detect the hook → rate limit → size and content type → verify → parse → deduplicate → store → answer.

Each refusal has its own code (``hook_not_found``, ``hook_misconfigured``, ``rate_limited``,
``payload_too_large``, ``unsupported_media_type``, the signature reasons, ``malformed_payload``).
"""

from __future__ import annotations

import functools
import json
import math

from flask import Blueprint, Request, Response, current_app, g, request
from werkzeug.utils import redirect

from connectors.base import InboundRequest, VerificationError
from seqbridge import metrics
from seqbridge.errors import (
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    TooManyRequests,
    UnsupportedMediaType,
)
from seqbridge.mapping.hooks import Hook
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


def answer_body(received: Received) -> bytes:
    """The JSON envelope of an answer, made directly: this runs for every webhook."""
    return (json.dumps({"data": received.to_api()}, separators=(",", ":")) + "\n").encode()


@functools.lru_cache(maxsize=1024)
def _delivered(hook: str, status: str):
    """The deliveries counter for this hook and outcome (``labels()`` costs a lock per call)."""
    return metrics.DELIVERIES.labels(hook, status)


def admit(inbox, hook_name: str) -> Hook:
    """The hook, if it exists, is configured, and is under its rate limit."""
    hook = inbox.hook(hook_name)
    wait = inbox.throttle(hook)
    if wait:
        raise TooManyRequests(
            f"Hook {hook_name!r} is over its rate limit.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return hook


def take(app, req: Request, hook: Hook, request_id: str) -> Received:
    """A POST (or PUT) to an admitted hook: size and content type → read → verify, parse,
    deduplicate and store (the inbox) → count. Raises the :class:`~seqbridge.errors.SeqbridgeError`
    of any refusal. Flask's view and the webhook lane (:mod:`seqbridge.web.hook_lane`) both call
    it, so every webhook passes the same checks in the same order."""
    inbox = app.extensions["seqbridge"].inbox
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
    received = inbox.receive(hook, inbound, request_id)
    _delivered(hook.name, received.status).inc()
    return received


def respond(app, hook: Hook, received: Received) -> Response:
    """The answer as a response object: a browser form's redirect, or the JSON envelope."""
    redirect_to = getattr(hook.connector, "redirect_to", None)
    if redirect_to:  # a browser form: land the visitor on a page, not on JSON
        return redirect(redirect_to, code=303, Response=app.response_class)
    return app.response_class(
        answer_body(received), status=received.http_status, content_type="application/json"
    )


@bp.route("/hooks/<hook_name>", methods=["GET", "POST", "PUT"])
def receive(hook_name: str):
    """Every webhook the lane in front of Flask leaves to it (GET handshakes, PUT, a query
    string, a chunked body, an unusual path), and every webhook when the lane is off."""
    req = request._get_current_object()  # looked up once
    app = current_app._get_current_object()
    hook = admit(app.extensions["seqbridge"].inbox, hook_name)
    if req.method == "GET":
        return _handshake(hook)
    return respond(app, hook, take(app, req, hook, g.request_id))


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
