"""Twilio SMS and WhatsApp: X-Twilio-Signature over the public URL and the sorted POST parameters
(or, for JSON bodies, over the URL carrying ``bodySHA256``); one event per message.

The check is Twilio's published algorithm (a base64 HMAC-SHA1 keyed with the auth token), kept
here rather than pulling in the whole Twilio SDK; the tests sign with the SDK's RequestValidator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    VerificationError,
    body_hash,
    parse_form_body,
    parse_json_body,
    require,
    same,
)


def _signature(token: bytes, url: str, params: dict[str, list[str]]) -> str:
    # As Twilio computes it: names sorted, each distinct value sorted.
    data = url + "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))
    return base64.b64encode(hmac.new(token, data.encode(), hashlib.sha1).digest()).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, with the default port added, and with it removed (Twilio signs either)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if parts.port is None and default:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    elif parts.port == default:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


class Twilio:
    name = "twilio"
    #: The body types this sender posts; anything else is answered 415.
    #: The signature covers the URL the sender called (see SEQBRIDGE_PUBLIC_BASE_URL).
    signs_url = True
    content_types = ("application/json", "application/x-www-form-urlencoded")

    def __init__(self, config: dict[str, Any]) -> None:
        require(config, "auth_token")
        self.token = str(config["auth_token"]).encode()

    def verify(self, request: InboundRequest, now: datetime) -> None:
        given = request.header("X-Twilio-Signature")
        if not given:
            raise VerificationError("missing_signature", "X-Twilio-Signature is missing")
        body_sha = request.first("bodySHA256")
        if body_sha is not None:
            if not same(body_sha, body_hash(request.body)):
                raise VerificationError("body_hash_mismatch", "bodySHA256 does not match the body")
            params: dict[str, list[str]] = {}
        else:
            params = parse_form_body(request)
        if not any(same(given, _signature(self.token, url, params)) for url in _url_variants(request.url)):
            raise VerificationError(
                "signature_mismatch", "X-Twilio-Signature does not match this URL and body"
            )

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        if request.first("bodySHA256") is not None:
            body = parse_json_body(request)
            if not isinstance(body, dict):
                raise MalformedPayload("the JSON body is not an object")
            fields = {k: str(v) for k, v in body.items()}
        else:
            fields = {k: v[-1] for k, v in parse_form_body(request).items()}
        sid = fields.get("MessageSid") or fields.get("SmsSid")
        if not sid:
            raise MalformedPayload("no MessageSid")
        sender = fields.get("From", "")
        whatsapp = sender.startswith("whatsapp:")
        return [
            InboundEvent(
                dedupe_key=sid,
                kind="message",
                data={
                    "channel": "whatsapp" if whatsapp else "sms",
                    "message_id": sid,
                    "from": sender.removeprefix("whatsapp:"),
                    "to": fields.get("To", "").removeprefix("whatsapp:"),
                    "text": fields.get("Body"),
                    "profile_name": fields.get("ProfileName"),
                    "wa_id": fields.get("WaId"),
                    "account_sid": fields.get("AccountSid"),
                    "fields": fields,
                },
            )
        ]


__all__ = ["Twilio", "parse_qs"]
