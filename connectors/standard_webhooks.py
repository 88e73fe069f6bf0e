"""Standard Webhooks (Svix and many senders): verified with the ``standardwebhooks`` package,
which checks every signature in the header, in constant time, within a 5-minute tolerance.
Secret rotation: configure ``secrets`` (several) and any of them may have signed.

Svix sends ``svix-id``, ``svix-timestamp`` and ``svix-signature`` by default (the ``webhook-``
names are its white-label option); both spellings are read, and where a request carries both, the
``svix-`` ones win, as in Svix's own library."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    VerificationError,
    parse_json_body,
)

_REASONS = (
    ("missing required headers", "missing_signature"),
    ("too old", "timestamp_out_of_window"),
    ("too new", "timestamp_out_of_window"),
    ("invalid signature headers", "timestamp_out_of_window"),
    ("no matching signature", "signature_mismatch"),
)


_HEADERS = ("id", "timestamp", "signature")


def signed_headers(request: InboundRequest) -> dict[str, str]:
    """``webhook-id``, ``-timestamp`` and ``-signature``, from the ``svix-`` or ``webhook-`` names."""
    return {
        f"webhook-{name}": request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}", "")
        for name in _HEADERS
    }


class StandardWebhooks:
    name = "standard_webhooks"
    #: The body types this sender posts; anything else is answered 415.
    content_types = ("application/json",)

    def __init__(self, config: dict[str, Any]) -> None:
        secrets = config.get("secrets") or ([config["secret"]] if config.get("secret") else [])
        if not secrets:
            raise ValueError("missing setting(s): secret (or secrets, during a rotation)")
        self.verifiers = [Webhook(str(s)) for s in secrets]

    def verify(self, request: InboundRequest, now: datetime) -> None:
        headers = signed_headers(request)
        if not all(headers.values()):
            raise VerificationError(
                "missing_signature",
                "webhook-id, webhook-timestamp and webhook-signature (or svix-id, svix-timestamp and "
                "svix-signature) are required",
            )
        try:
            request.body.decode("utf-8")  # the library decodes it, and raises on anything else
        except UnicodeDecodeError:
            raise MalformedPayload(
                "the body is not UTF-8 text, and a Standard Webhooks sender signs text"
            ) from None
        problem = None
        for verifier in self.verifiers:
            try:
                verifier.verify(request.body, headers, json_parse=False)
                return
            except WebhookVerificationError as error:
                problem = str(error)
        message = (problem or "").lower()
        reason = next((code for phrase, code in _REASONS if phrase in message), "signature_mismatch")
        raise VerificationError(reason, problem or "signature mismatch")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        body = parse_json_body(request)
        kind = body.get("type") if isinstance(body, dict) else None
        msg_id = signed_headers(request)["webhook-id"]
        data = {"payload": body, "webhook_id": msg_id}
        return [InboundEvent(dedupe_key=msg_id, kind=str(kind or "event"), data=data)]
