"""What every inbound source connector works with. No Flask here: the web layer builds an
:class:`InboundRequest` and the connector verifies it, then parses it into events.

A connector verifies the raw body before parsing anything, compares secrets in constant time,
and gives each event a dedupe key taken from the provider's own id (or a hash where there is
none), so a retried delivery is recognised before anything acts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from seqbridge import strictjson


class VerificationError(Exception):
    """The request could not be shown to come from the configured sender. ``reason`` is the
    machine code (``missing_signature``, ``signature_mismatch``, ``timestamp_out_of_window``, …)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class MalformedPayload(Exception):
    """The (verified) body is not what this sender sends."""


@dataclass(frozen=True)
class InboundRequest:
    method: str
    #: The URL the sender called, as it saw it (the configured public base URL + path + query).
    url: str
    #: Header names lower-cased.
    headers: dict[str, str]
    query: dict[str, list[str]]
    body: bytes
    content_type: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def first(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class InboundEvent:
    #: The provider's own id for this event, or a hash of it where the provider has none.
    dedupe_key: str
    #: What happened, in the provider's terms (``message``, ``form_response``, ``contact_tag_added`` …).
    kind: str
    #: The event, normalised for mapping rules.
    data: dict[str, Any] = field(default_factory=dict)
    #: The key is a hash of the body, not an id the sender gave (Zapier or a form with no
    #: Idempotency-Key): the same body again may be meant, so it is a duplicate only within
    #: the hook's ``dedupe`` window.
    hashed: bool = False


def same(given: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if given is None:
        return False
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_hash(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


def parse_json_body(request: InboundRequest) -> Any:
    """The body as JSON, read strictly (:mod:`seqbridge.strictjson`: UTF-8, no duplicate names, no
    unpaired surrogates, bounded nesting). Raises :class:`MalformedPayload`."""
    try:
        return strictjson.loads(request.body)
    except strictjson.JSONError as error:
        raise MalformedPayload(f"the body is not JSON: {error}") from None


def dict_at(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is an object (None reads as empty), else :class:`MalformedPayload`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} is not an object")
    return value


def dicts_at(value: Any, what: str) -> list[dict[str, Any]]:
    """``value`` if it is a list of objects (None reads as empty), else :class:`MalformedPayload`."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedPayload(f"{what} is not a list of objects")
    return value


def parse_form_body(request: InboundRequest) -> dict[str, list[str]]:
    try:
        return parse_qs(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as error:
        raise MalformedPayload(f"the form is not UTF-8: {error}") from None


def require(config: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if not config.get(n)]
    if missing:
        raise ValueError(f"missing setting(s): {', '.join(missing)}")


__all__ = ["InboundEvent", "InboundRequest", "MalformedPayload", "VerificationError", "datetime"]
