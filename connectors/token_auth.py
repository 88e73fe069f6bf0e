"""Senders with no signature scheme (Zapier, n8n, CRMs, HTML forms) prove themselves with a
shared secret: a header token, HTTP basic auth, or a ``?token=`` in the URL."""

from __future__ import annotations

import base64
from typing import Any

from connectors.base import InboundRequest, VerificationError, same


class SharedSecret:
    """Checks whichever of token / basic auth the hook configures. With none configured, the
    hook is open (a public HTML form); that is an explicit choice in its configuration."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.token = config.get("token")
        self.header = str(config.get("token_header") or "X-Seqbridge-Token")
        self.basic = (
            (config.get("basic_user"), config.get("basic_password")) if config.get("basic_user") else None
        )
        if not self.token and not self.basic and not config.get("public"):
            raise ValueError("set token (header or ?token=), basic_user/basic_password, or public: true")

    def check(self, request: InboundRequest) -> None:
        if self.token:
            bearer = (request.header("Authorization") or "").removeprefix("Bearer ").strip() or None
            given = request.header(self.header) or request.first("token") or bearer
            if given is None:
                raise VerificationError("missing_token", f"send the hook token in {self.header} or ?token=")
            if not same(given, str(self.token)):
                raise VerificationError("token_mismatch", "the hook token does not match")
            return
        if self.basic:
            header = request.header("Authorization") or ""
            if not header.lower().startswith("basic "):
                raise VerificationError("missing_token", "HTTP basic authentication is required")
            try:
                user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise VerificationError("token_mismatch", "malformed basic authentication") from None
            if not (same(user, str(self.basic[0])) & same(password, str(self.basic[1] or ""))):
                raise VerificationError("token_mismatch", "basic authentication does not match")
