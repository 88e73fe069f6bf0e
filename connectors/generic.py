"""Zapier, n8n and other low-code senders: JSON or form bodies behind a shared secret; the
``Idempotency-Key`` header is the dedupe key when present, else a hash of the body."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    body_hash,
    parse_form_body,
    parse_json_body,
)
from connectors.token_auth import SharedSecret


class Generic:
    name = "generic"
    #: The body types this sender posts; anything else is answered 415.
    content_types = ("application/json", "application/x-www-form-urlencoded")

    def __init__(self, config: dict[str, Any]) -> None:
        self.auth = SharedSecret(config)

    def verify(self, request: InboundRequest, now: datetime) -> None:
        self.auth.check(request)

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        if request.content_type.startswith("application/x-www-form-urlencoded"):
            # A key sent more than once keeps all its values, as the form connectors do.
            payload: Any = {k: v[0] if len(v) == 1 else v for k, v in parse_form_body(request).items()}
        else:
            payload = parse_json_body(request)
        if not isinstance(payload, dict | list):
            raise MalformedPayload("the body must be a JSON object or array, or a form")
        given = request.header("Idempotency-Key")
        key = given or body_hash(request.body)
        return [InboundEvent(dedupe_key=key, kind="event", data={"payload": payload}, hashed=not given)]


class Zapier(Generic):
    name = "zapier"


class N8n(Generic):
    name = "n8n"
