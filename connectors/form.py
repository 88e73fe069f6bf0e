"""A plain HTML form posted by a browser: urlencoded or multipart.

Browsers cannot sign, so a form hook proves little about its sender. What it can do:
- a hidden honeypot field that people never fill and bots do: such a post is acknowledged
  (the bot learns nothing) and ignored;
- ``allowed_origins``: refuse a post whose ``Origin`` (or ``Referer``) is another site;
- an optional shared secret, like any token hook (``token``, ``public: true`` for none);
- ``redirect_to``: answer ``303 See Other`` to that page, so the visitor lands on a thank-you
  page instead of a JSON document.

Uploaded files are not stored; their field names and file names are kept. Bracketed names
(``contact[email]``) become nested, as for CRM forms.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data

from connectors.base import InboundEvent, InboundRequest, MalformedPayload, VerificationError, body_hash
from connectors.crm_form import nest
from connectors.token_auth import SharedSecret

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _origin(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


class Form:
    name = "form"
    content_types = FORM_TYPES

    def __init__(self, config: dict[str, Any]) -> None:
        self.auth = SharedSecret(config)
        self.honeypot = config.get("honeypot")
        self.redirect_to = config.get("redirect_to")
        if self.redirect_to is not None and urlsplit(str(self.redirect_to)).scheme not in ("http", "https"):
            raise ValueError("redirect_to must be an http(s) URL")
        origins = config.get("allowed_origins") or []
        if not isinstance(origins, list):
            raise ValueError("allowed_origins must be a list of origins such as https://example.com")
        self.allowed_origins = {_origin(o) for o in origins}
        if "" in self.allowed_origins:
            raise ValueError("allowed_origins must be origins such as https://example.com")

    def verify(self, request: InboundRequest, now: datetime) -> None:
        if self.allowed_origins:
            origin = _origin(request.header("Origin") or request.header("Referer") or "")
            if not origin:
                raise VerificationError("missing_origin", "the post has no Origin or Referer header")
            if origin not in self.allowed_origins:
                raise VerificationError(
                    "origin_not_allowed", "the post comes from a site this hook does not allow"
                )
        self.auth.check(request)

    def fields(self, request: InboundRequest) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The form's fields and uploaded file names, each by name."""
        content_type = request.content_type or ""
        if not content_type.startswith(FORM_TYPES):
            raise MalformedPayload("a form is urlencoded or multipart/form-data")
        environ = {
            "REQUEST_METHOD": "POST",
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(request.body)),
            "wsgi.input": io.BytesIO(request.body),
        }
        try:
            _, form, files = parse_form_data(environ, silent=False, max_form_parts=1000)
        except (HTTPException, ValueError) as error:
            raise MalformedPayload(f"the form cannot be read: {error}") from None
        files_by_name = {k: [f.filename or "" for f in v] for k, v in files.lists() if k is not None}
        return _lists(form), files_by_name

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        fields, files = self.fields(request)
        if self.honeypot and any(v.strip() for v in fields.get(self.honeypot, [])):
            return []  # a bot filled the trap: acknowledged, stored as ignored, never acted on
        fields.pop(self.honeypot, None) if self.honeypot else None
        if not fields and not files:
            raise MalformedPayload("an empty form")
        data = nest(fields)
        if files:
            data["_files"] = files
        return [
            InboundEvent(dedupe_key=body_hash(request.body), kind="form_submission", data=data, hashed=True)
        ]


def _lists(form: MultiDict) -> dict[str, list[str]]:
    """Each field's values by name. A multipart part whose name cannot be read (none, or a broken
    quote) comes back from werkzeug named None: no browser sends one, and no rule could name it."""
    return {key: list(values) for key, values in form.lists() if key is not None}
