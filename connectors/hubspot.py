"""HubSpot webhooks v3: ``X-HubSpot-Signature-v3`` over method + URI + body + timestamp, with a
5-minute window; the body is an array of events, each its own event. HubSpot's ``eventId`` is not
unique, so the dedupe key is a hash of the event's fields."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from typing import Any

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    VerificationError,
    canonical_hash,
    parse_json_body,
    require,
    same,
)

WINDOW_MS = 5 * 60 * 1000
#: ASCII digits only: str.isdigit() also takes "²", which int() refuses, and 5000-digit numbers.
_MILLISECONDS = re.compile(r"[0-9]{1,16}")


class HubSpot:
    name = "hubspot"
    #: The body types this sender posts; anything else is answered 415.
    #: The signature covers the URL the sender called (see SEQBRIDGE_PUBLIC_BASE_URL).
    signs_url = True
    content_types = ("application/json",)

    def __init__(self, config: dict[str, Any]) -> None:
        require(config, "client_secret")
        self.secret = str(config["client_secret"]).encode()

    def verify(self, request: InboundRequest, now: datetime) -> None:
        given = request.header("X-HubSpot-Signature-v3")
        stamp = request.header("X-HubSpot-Request-Timestamp")
        if not given or not stamp:
            raise VerificationError(
                "missing_signature", "X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp are required"
            )
        if not _MILLISECONDS.fullmatch(stamp) or abs(now.timestamp() * 1000 - int(stamp)) > WINDOW_MS:
            raise VerificationError(
                "timestamp_out_of_window", "the request timestamp is more than 5 minutes away"
            )
        signed = request.method.upper().encode() + request.url.encode() + request.body + stamp.encode()
        expected = base64.b64encode(hmac.new(self.secret, signed, hashlib.sha256).digest()).decode()
        if not same(given.strip(), expected):
            raise VerificationError("signature_mismatch", "X-HubSpot-Signature-v3 does not match")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        body = parse_json_body(request)
        if not isinstance(body, list) or not all(isinstance(e, dict) for e in body):
            raise MalformedPayload("HubSpot sends a JSON array of events")
        # HubSpot's eventId is not unique, and attemptNumber grows on each retry: the key is a
        # hash of everything else, so a retried event is recognised.
        return [
            InboundEvent(
                dedupe_key=canonical_hash({k: v for k, v in event.items() if k != "attemptNumber"}),
                kind=str(event.get("subscriptionType") or "event"),
                data=event,
            )
            for event in body
        ]
