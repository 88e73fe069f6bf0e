"""Standard Webhooks (Svix and many senders): verified with the ``standardwebhooks`` package,
which checks every signature in the header, in constant time, within a 5-minute tolerance.
Secret rotation: configure ``secrets`` (several) and any of them may have signed."""

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
        headers = {
            k: request.headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
        }
        if not all(headers.values()):
            raise VerificationError(
                "missing_signature", "webhook-id, webhook-timestamp and webhook-signature are required"
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
        return [InboundEvent(dedupe_key=request.headers["webhook-id"], kind=str(kind or "event"),
                             data={"payload": body, "webhook_id": request.headers["webhook-id"]})]  # fmt: skip
