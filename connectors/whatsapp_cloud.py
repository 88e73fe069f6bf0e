"""Meta's WhatsApp Cloud API: the GET handshake, X-Hub-Signature-256, one event per message."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    VerificationError,
    parse_json_body,
    require,
    same,
)


class WhatsAppCloud:
    name = "whatsapp_cloud"
    #: The body types this sender posts; anything else is answered 415.
    content_types = ("application/json",)

    def __init__(self, config: dict[str, Any]) -> None:
        require(config, "app_secret", "verify_token")
        self.app_secret = str(config["app_secret"]).encode()
        self.verify_token = str(config["verify_token"])

    def handshake(self, request: InboundRequest) -> str:
        """Answer Meta's subscription check with the challenge. Raises :class:`VerificationError`."""
        if request.first("hub.mode") != "subscribe" or not same(
            request.first("hub.verify_token"), self.verify_token
        ):
            raise VerificationError("verify_token_mismatch", "hub.mode or hub.verify_token does not match")
        return request.first("hub.challenge") or ""

    def verify(self, request: InboundRequest, now: datetime) -> None:
        given = request.header("X-Hub-Signature-256")
        if not given:
            raise VerificationError("missing_signature", "X-Hub-Signature-256 is missing")
        expected = "sha256=" + hmac.new(self.app_secret, request.body, hashlib.sha256).hexdigest()
        if not same(given.strip().lower(), expected):
            raise VerificationError("signature_mismatch", "X-Hub-Signature-256 does not match the body")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """One event per ``entry[].changes[].value.messages[]``; status-only deliveries give none."""
        body = parse_json_body(request)
        if not isinstance(body, dict) or body.get("object") != "whatsapp_business_account":
            raise MalformedPayload("not a WhatsApp Business Account notification")
        events = []
        for entry in body.get("entry") or []:
            for change in entry.get("changes") or []:
                value = change.get("value") or {}
                names = {
                    c.get("wa_id"): (c.get("profile") or {}).get("name") for c in value.get("contacts") or []
                }
                metadata = value.get("metadata") or {}
                for message in value.get("messages") or []:
                    sender = str(message.get("from") or "")
                    message_id = message.get("id")
                    if not message_id:
                        raise MalformedPayload("a message without an id")
                    events.append(InboundEvent(
                        dedupe_key=str(message_id),
                        kind="message",
                        data={
                            "channel": "whatsapp",
                            "message_id": message_id,
                            "from": f"+{sender}" if sender and not sender.startswith("+") else sender,
                            "wa_id": sender,
                            "profile_name": names.get(sender),
                            "type": message.get("type"),
                            "text": (message.get("text") or {}).get("body"),
                            "timestamp": message.get("timestamp"),
                            "phone_number_id": metadata.get("phone_number_id"),
                            "business_account_id": entry.get("id"),
                            "message": message,
                        },
                    ))  # fmt: skip
        return events
