"""How steps reach people and systems: email over SMTP (or captured in the outbox), and
webhooks signed with the Standard Webhooks scheme.

Each channel raises :class:`TransientFailure` for what a later try may fix (SMTP 4xx, connection
errors, HTTP 429 and 5xx, timeouts; with the server's Retry-After when given) and
:class:`PermanentFailure` for what it will not (SMTP 5xx, other HTTP 4xx, a refused address).
"""

from __future__ import annotations

import json
import random
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from standardwebhooks.webhooks import Webhook

from connectors.net import AddressRefused, check_address
from seqbridge.jobs import Done, Failed, Outcome, RetryPolicy


class DeliveryFailure(Exception):
    """A step could not be delivered."""


class TransientFailure(DeliveryFailure):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(DeliveryFailure):
    pass


class Gone(PermanentFailure):
    """The receiver answered 410 Gone: it wants no more (REST hooks: unsubscribe)."""


def attempt(
    send: Callable[[], Any],
    policy: RetryPolicy,
    attempts: int,
    now: datetime,
    rng: random.Random,
    *,
    failed: Callable[[PermanentFailure], Failed] = lambda failure: Failed(str(failure)),
) -> Outcome:
    """Send once: :class:`Done` with what ``send`` returned; after a :class:`TransientFailure`
    (the ``attempts``-th), a retry or dead by ``policy``, honouring the server's Retry-After;
    after a :class:`PermanentFailure`, ``failed(failure)``."""
    try:
        return Done(send())
    except TransientFailure as failure:
        return policy.after_failure(attempts, str(failure), now, retry_after=failure.retry_after, rng=rng)
    except PermanentFailure as failure:
        return failed(failure)


# Email ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str | None
    password: str | None
    implicit_tls: bool
    starttls: str  # "auto" | "require" | "never"

    @classmethod
    def parse(cls, url: str) -> SmtpSettings | None:
        """``smtp://user:pass@host:587?starttls=require`` or ``smtps://host:465``; None when empty."""
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                "SEQBRIDGE_SMTP_URL must look like smtp://user:pass@host:587 or smtps://host:465"
            )
        options = parse_qs(parts.query)
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587),
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=(options.get("starttls") or ["auto"])[0],
        )


def email_headers(*, key: str, sender: str, to: str, reply_to: str | None, subject: str) -> dict[str, str]:
    """The headers of a step's email, in order."""
    headers = {"From": sender, "To": to}
    if reply_to:
        headers["Reply-To"] = reply_to
    headers["Subject"] = subject
    # The idempotency key travels in the Message-ID: a resend after a crash is recognisable.
    headers["Message-ID"] = message_id(key)
    unsubscribe = reply_to or sender
    address = (
        unsubscribe[unsubscribe.find("<") + 1 : unsubscribe.rfind(">")] if "<" in unsubscribe else unsubscribe
    )
    headers["List-Unsubscribe"] = f"<mailto:{address}?subject=unsubscribe>"
    return headers


def build_email(
    *, key: str, sender: str, to: str, reply_to: str | None, subject: str, body: str
) -> EmailMessage:
    """The MIME message for SMTP (captured emails only need :func:`email_headers`)."""
    message = EmailMessage()
    for name, value in email_headers(
        key=key, sender=sender, to=to, reply_to=reply_to, subject=subject
    ).items():
        message[name] = value
    message.set_content(body)
    return message


def message_id(key: str) -> str:
    """The Message-ID for an idempotency key (``:`` is not allowed in its left part)."""
    return f"<{key.replace(':', '.')}@seqbridge>"


def sender_of(from_email: str | None, from_name: str | None, default: str) -> str:
    return formataddr((from_name or "", from_email)) if from_email else default


def send_email(settings: SmtpSettings, message: EmailMessage, timeout: float) -> str:
    """Send over SMTP; return the server's answer. Raises Transient/PermanentFailure."""
    try:
        if settings.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
        with client:
            client.ehlo()
            if not settings.implicit_tls and settings.starttls != "never":
                if client.has_extn("starttls"):
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                elif settings.starttls == "require":
                    raise PermanentFailure("the SMTP server does not offer STARTTLS, and it is required")
            if settings.user:
                client.login(settings.user, settings.password or "")
            refused = client.send_message(message)
            if refused:
                code, reason = next(iter(refused.values()))
                raise _smtp_failure(code, reason)
        return "accepted"
    except smtplib.SMTPRecipientsRefused as error:
        code, reason = next(iter(error.recipients.values()))
        raise _smtp_failure(code, reason) from None
    except smtplib.SMTPResponseException as error:
        raise _smtp_failure(error.smtp_code, error.smtp_error) from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as error:
        raise TransientFailure(f"SMTP connection failed: {type(error).__name__}: {error}") from None


def _smtp_failure(code: int, reason: bytes | str) -> DeliveryFailure:
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    message = f"SMTP {code}: {text}"
    return TransientFailure(message) if 400 <= code < 500 else PermanentFailure(message)


# Webhooks -------------------------------------------------------------------------------------


def check_target(url: str, allow_private: bool) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts that resolve to private addresses."""
    try:
        check_address(url, allow_private)
    except AddressRefused as refused:
        raise (TransientFailure if refused.transient else PermanentFailure)(refused.message) from None


class WebhookSender:
    def __init__(
        self,
        secret: str | None,
        timeout: float,
        allow_private: bool,
        *,
        user_agent: str = "Seqbridge/0.1 (+webhook step)",
    ) -> None:
        self.signer = Webhook(secret) if secret else None
        self.timeout = timeout
        self.allow_private = allow_private
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent

    def post(self, url: str, key: str, event: dict[str, Any], *, secret: str | None = None) -> str:
        """POST the event signed with ``secret`` (default: the sender's); return "HTTP <status>".
        Redirects are not followed; 410 raises :class:`Gone`.

        The signature's timestamp is wall-clock time (never the scheduling clock): receivers
        check it against their own clock.
        """
        check_target(url, self.allow_private)
        signer = Webhook(secret) if secret else self.signer
        if signer is None:
            raise PermanentFailure("no signing secret")
        now = datetime.now(UTC)
        payload = json.dumps(event, separators=(",", ":"), default=str)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(key, now, payload),
        }
        try:
            response = self.session.post(
                url, data=payload.encode(), headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout:
            raise TransientFailure(f"timed out after {self.timeout} s") from None
        except requests.RequestException as error:
            raise TransientFailure(f"connection failed: {type(error).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        if status == 429 or status >= 500:
            raise TransientFailure(
                f"HTTP {status}", retry_after=_retry_after(response.headers.get("Retry-After"), now)
            )
        if status == 410:
            raise Gone("HTTP 410")
        raise PermanentFailure(
            f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        )


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, (parsedate_to_datetime(value) - now).total_seconds())
    except (TypeError, ValueError):
        return None


__all__ = [
    "Gone",
    "PermanentFailure",
    "SmtpSettings",
    "TransientFailure",
    "WebhookSender",
    "make_msgid",
]
