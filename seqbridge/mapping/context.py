"""The context a rule sees for one event: the same whether the event comes from a live request,
a stored delivery being replayed, a dry run or a mapping test."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from connectors.base import MalformedPayload
from connectors.crm_form import nest
from seqbridge import strictjson


def parse_body(body: bytes | None, content_type: str | None) -> Any:
    """The body as data for ``body.…`` fields: JSON, a (nested) form, or the text; None if empty."""
    if not body:
        return None
    content_type = (content_type or "").lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        if "json" in content_type:
            return strictjson.loads(text)
        if content_type.startswith("application/x-www-form-urlencoded"):
            return nest(parse_qs(text, keep_blank_values=True))
    except (strictjson.JSONError, MalformedPayload):
        pass  # not what its content type says (a connector may read it another way): the text
    return text


def event_context(
    *,
    hook: str,
    event: dict[str, Any],
    body: Any,
    headers: dict[str, str],
    query: dict[str, Any],
    received_at: str | None,
) -> dict[str, Any]:
    return {
        "event": event.get("data") or {},
        "kind": event.get("kind"),
        "dedupe_key": event.get("dedupe_key"),
        "body": body,
        "headers": headers,
        "query": {k: (v[-1] if isinstance(v, list) and v else v) for k, v in query.items()},
        "hook": hook,
        "received_at": received_at,
    }
