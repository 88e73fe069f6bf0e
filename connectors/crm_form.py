"""Form-encoded CRM webhooks (ActiveCampaign "contact tag added" and alike): bracketed keys such
as ``contact[email]`` become nested fields; a shared secret in the URL or a header. These senders
do not retry, so every request is recorded; the dedupe key is a hash of the body."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from connectors.base import InboundEvent, InboundRequest, MalformedPayload, body_hash, parse_form_body
from connectors.token_auth import SharedSecret
from seqbridge.strictjson import MAX_DEPTH

_PART = re.compile(r"\[([^\[\]]*)\]")


def nest(fields: dict[str, list[str]]) -> dict[str, Any]:
    """``{"contact[email]": ["a@b.c"]}`` → ``{"contact": {"email": "a@b.c"}}``; ``x[]`` collects a list.

    Raises :class:`MalformedPayload` for a name nested deeper than JSON may be (``a[b][b]…``).
    """
    result: dict[str, Any] = {}
    for key, values in fields.items():
        head = key.split("[", 1)[0]
        parts = [head, *_PART.findall(key[len(head) :])]
        if len(parts) > MAX_DEPTH:
            raise MalformedPayload(f"the field {key[:40]!r}… is nested deeper than {MAX_DEPTH} levels")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        node[last if last else "_list"] = values if (last == "" or len(values) > 1) else values[0]
    return result


class CrmForm:
    name = "crm_form"
    #: The body types this sender posts; anything else is answered 415.
    content_types = ("application/x-www-form-urlencoded",)

    def __init__(self, config: dict[str, Any]) -> None:
        self.auth = SharedSecret(config)

    def verify(self, request: InboundRequest, now: datetime) -> None:
        self.auth.check(request)

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        fields = parse_form_body(request)
        if not fields:
            raise MalformedPayload("an empty form")
        data = nest(fields)
        return [
            InboundEvent(
                dedupe_key=body_hash(request.body),
                kind=str(data.get("type") or "event"),
                data=data,
                hashed=True,
            )
        ]


class ActiveCampaign(CrmForm):
    name = "activecampaign"
