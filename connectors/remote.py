"""What every remote target shares: an HTTP session to one backend, timeouts, a concurrency
bound, and the map from a remote answer to an action *outcome*.

| remote answer                               | outcome                                           |
| ------------------------------------------- | ------------------------------------------------- |
| 200 / 201                                   | ``done``, with the remote ids                     |
| 409 ``already_enrolled``                    | ``skipped``: not a failure, not retried           |
| 422 (ineligible)                            | ``skipped``, with the remote reason               |
| 404                                         | ``failed``: names what was not found              |
| 401 / 403                                   | ``failed``: a hint about the key or the scope     |
| 429 / 5xx / connection error / timeout      | :class:`Transient`: the delivery retries later,   |
|                                             | honouring ``Retry-After``                         |

Writes carry an ``Idempotency-Key`` (the delivery, the action, the chunk), so a retry after a
timeout cannot enroll twice on a server that honours it. Redirects are never followed, and the
API key never appears in an outcome.
"""

from __future__ import annotations

import threading
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from connectors.net import AddressRefused, check_address


class Transient(Exception):
    """Worth retrying later (``retry_after`` seconds, when the server said); ``max_attempts`` is
    the target's own retry limit, when it sets one. Delivery processing raises it too, for its
    own passing trouble (a hook being fixed, a lost lease)."""

    def __init__(
        self, message: str, retry_after: float | None = None, max_attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.max_attempts = max_attempts


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def done(**extra: Any) -> dict[str, Any]:
    return {"status": "done", **extra}


def skipped(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "code": code, "message": message, **extra}


def failed(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "failed", "code": code, "message": message, **extra}


class RemoteTarget:
    """A backend reached over HTTP. Subclasses implement the actions of one dialect."""

    type = "remote"
    #: The actions this dialect can carry out (the mapping validator checks it).
    actions: frozenset[str] = frozenset()

    def __init__(self, name: str, settings: dict[str, Any], *, allow_private: bool = False) -> None:
        base_url = str(settings.get("base_url") or "").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL")
        if not settings.get("api_key"):
            raise ValueError("api_key is required (give it as ${ENV_VAR})")
        unknown = set(settings) - {
            "base_url",
            "api_key",
            "timeout_seconds",
            "connect_timeout_seconds",
            "max_concurrency",
            "max_attempts",
            "allow_private",
        }
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        self.name = name
        self.base_url = base_url
        self._api_key = str(settings["api_key"])
        self.timeout = (
            float(settings.get("connect_timeout_seconds", 3)),
            float(settings.get("timeout_seconds", 15)),
        )
        self.allow_private = bool(settings.get("allow_private", allow_private))
        self._slots = threading.BoundedSemaphore(int(settings.get("max_concurrency", 4)))
        #: Attempts before a delivery whose action keeps failing here goes dead (None: the global one).
        self.max_attempts = int(settings["max_attempts"]) if settings.get("max_attempts") else None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:  # never the key
        return f"<{type(self).__name__} {self.name} {self.base_url}>"

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers.update(
                {
                    "Authorization": f"Bearer {self._api_key}",
                    "User-Agent": "Seqbridge/0.1 (+target)",
                    "Accept": "application/json",
                }
            )
            self._session = session
        return self._session

    def run(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        """Carry out one planned action; return its outcome. Raises :class:`Transient`."""
        if action["action"] not in self.actions:
            return failed("unsupported_action", f"the {self.type} dialect cannot {action['action']}")
        try:
            check_address(self.base_url, self.allow_private)
        except AddressRefused as refused:
            if refused.transient:
                raise Transient(refused.message) from None
            return failed("address_refused", refused.message)
        try:
            return getattr(self, "_" + action["action"])(action, key)
        except Transient as transient:
            transient.max_attempts = self.max_attempts
            raise

    # HTTP ------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
        """One request. Raises :class:`Transient` for 429, 5xx, timeouts and connection errors."""
        headers = {"Idempotency-Key": key} if key else {}
        with self._slots:
            try:
                response = self.session.request(
                    method,
                    self.base_url + path,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.Timeout:
                raise Transient(f"{self.name}: {method} {path} timed out") from None
            except requests.ConnectionError as error:
                raise Transient(f"{self.name}: cannot connect ({type(error).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise Transient(
                f"{self.name}: {method} {path} answered {response.status_code}",
                _retry_after(response.headers.get("Retry-After")),
            )
        return response

    def outcome(self, response: requests.Response, what: str, **ids: Any) -> dict[str, Any]:
        """The outcome of a write, from the remote answer."""
        status = response.status_code
        error = _error_of(response)
        if status in (200, 201):
            return done(**ids)
        if status == 409 and error.get("code") == "already_enrolled":
            return skipped("already_enrolled", error.get("message") or "already enrolled", **ids)
        if status == 422:
            reason = (error.get("details") or {}).get("reason") or error.get("code")
            return skipped(
                error.get("code") or "unprocessable",
                error.get("message") or "not eligible",
                reason=reason,
                **ids,
            )
        if status == 404:
            return failed(
                "not_found",
                f"{self.name}: {what} was not found ({error.get('message') or 'HTTP 404'})",
                **ids,
            )
        if status == 401:
            return failed(
                "unauthorized", f"{self.name} refused the API key: check the target's api_key", **ids
            )
        if status == 403:
            return failed(
                "forbidden",
                f"{self.name}: the API key lacks a scope ({error.get('code') or 'HTTP 403'})",
                **ids,
            )
        if 300 <= status < 400:
            return failed("redirected", f"{self.name} answered a redirect, which is not followed", **ids)
        return failed(
            error.get("code") or f"http_{status}",
            f"{self.name}: {error.get('message') or f'HTTP {status}'}",
            **ids,
        )

    def resolve_sequence(self, action: dict[str, Any]) -> str:
        ref = action.get("queue") if "queue" in action else action.get("sequence")
        if not isinstance(ref, str) or not ref.strip():
            raise ValueError("the sequence or queue is empty for this event")
        return ref.strip()


def _error_of(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    if isinstance(body, dict) and isinstance(body.get("error"), str):  # some dialects: {"error": "code"}
        return {"code": body["error"], "message": body.get("message")}
    return {}


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def identifiers(items: list[Any]) -> list[str]:
    """A bulk action's contacts (emails, ids, or ``{email|id: …}``) as strings; an email has an @."""
    return [str(i.get("email") or i.get("id")) if isinstance(i, dict) else str(i) for i in items if i]


def contact_of(action: dict[str, Any]) -> dict[str, str]:
    contact = action.get("contact")
    return {k: str(v) for k, v in (contact or {}).items() if isinstance(v, str | int) and v != ""}
