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
    dict_at,
    dicts_at,
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
        for entry in dicts_at(body.get("entry"), "entry"):
            for change in dicts_at(entry.get("changes"), "entry[].changes"):
                value = dict_at(change.get("value"), "changes[].value")
                names = {
                    c["wa_id"]: dict_at(c.get("profile"), "contacts[].profile").get("name")
                    for c in dicts_at(value.get("contacts"), "value.contacts")
                    if isinstance(c.get("wa_id"), str)
                }
                metadata = dict_at(value.get("metadata"), "value.metadata")
                for message in dicts_at(value.get("messages"), "value.messages"):
                    sender = str(message.get("from") or "")
                    message_id = message.get("id")
                    if not message_id or not isinstance(message_id, str):
                        raise MalformedPayload("a message without an id")
                    text = dict_at(message.get("text"), "messages[].text").get("body")
                    events.append(
                        InboundEvent(
                            dedupe_key=str(message_id),
                            kind="message",
                            data={
                                "channel": "whatsapp",
                                "message_id": message_id,
                                "from": f"+{sender}" if sender and not sender.startswith("+") else sender,
                                "wa_id": sender,
                                "profile_name": names.get(sender),
                                "type": message.get("type"),
                                "text": text,
                                "timestamp": message.get("timestamp"),
                                "phone_number_id": metadata.get("phone_number_id"),
                                "business_account_id": entry.get("id"),
                                "message": message,
                            },
                        )
                    )
        return events
