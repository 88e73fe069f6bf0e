"""``/hooks/<name>``: the front door for webhooks, in a fixed order —

detect the hook → rate limit → size and content type → verify → parse → deduplicate → store → answer.

Each refusal has its own code (``hook_not_found``, ``hook_misconfigured``, ``rate_limited``,
``payload_too_large``, ``unsupported_media_type``, the signature reasons, ``malformed_payload``).
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, g, redirect, request

from connectors.base import InboundRequest, VerificationError
from seqbridge import metrics
from seqbridge.errors import (
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    TooManyRequests,
    UnsupportedMediaType,
)
from seqbridge.web.envelope import ok
from seqbridge.web.pipeline import services

bp = Blueprint("hooks", __name__)


def _inbound(body: bytes, connector) -> InboundRequest:
    base = current_app.config.get("PUBLIC_BASE_URL") or ""
    if not getattr(connector, "signs_url", False):
        url = ""  # only senders that sign the URL need it (building it costs per request)
    elif base:
        query = request.query_string.decode("latin-1")
        url = base.rstrip("/") + request.path + (f"?{query}" if query else "")
    else:
        url = request.url
    return InboundRequest(
        method=request.method,
        url=url,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=request.args.to_dict(flat=False),
        body=body,
        content_type=request.content_type or "",
    )


@bp.route("/hooks/<hook_name>", methods=["GET", "POST", "PUT"])
def receive(hook_name: str):
    inbox = services().inbox
    hook = inbox.hook(hook_name)
    wait = inbox.throttle(hook)
    if wait:
        raise TooManyRequests(f"Hook {hook_name!r} is over its rate limit.",
                              headers={"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip
    if request.method == "GET":
        return _handshake(hook)
    limit = hook.max_body_bytes or current_app.config["MAX_CONTENT_LENGTH"]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(details={"limit_bytes": limit})
    accepted = getattr(hook.connector, "content_types", ())
    if accepted and request.mimetype not in accepted:
        raise UnsupportedMediaType(f"{hook.connector_name} sends {' or '.join(accepted)}.",
                                   details={"accepted": list(accepted)})  # fmt: skip
    body = request.get_data(cache=False)
    if len(body) > limit:
        raise PayloadTooLarge(details={"limit_bytes": limit})
    received = inbox.receive(hook, _inbound(body, hook.connector), g.request_id)
    metrics.DELIVERIES.labels(hook.name, received.status).inc()
    redirect_to = getattr(hook.connector, "redirect_to", None)
    if redirect_to:  # a browser form: land the visitor on a page, not on JSON
        return redirect(redirect_to, code=303)
    data = {"delivery_id": received.delivery_id, "status": received.status}
    if received.results is not None:
        data["results"] = received.results
    return ok(data, received.http_status)


def _handshake(hook):
    """A sender's subscription check (Meta's ``hub.challenge``); other hooks take no GET."""
    handshake = getattr(hook.connector, "handshake", None)
    if handshake is None:
        raise MethodNotAllowed(
            f"Hook {hook.name!r} accepts POST; {hook.connector_name} has no GET handshake."
        )
    try:
        challenge = handshake(_inbound(b"", hook.connector))
    except VerificationError as error:
        raise Forbidden(error.message, code=error.reason) from None
    return Response(challenge, status=200, mimetype="text/plain")
