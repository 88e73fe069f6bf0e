"""Console sign-in: an API key exchanged for a server-side session.

The browser gets a random 256-bit token in an HttpOnly cookie; only its SHA-256 is stored, and
the API key itself is never stored or sent back. Every request resumes the session through
:meth:`SessionService.resume`, which refuses a session that was signed out, has been idle for
``CONSOLE_IDLE_MINUTES``, is older than ``CONSOLE_SESSION_HOURS``, or whose key was revoked.
The CSRF token of a session is an HMAC of its token, so it needs no storage and is worthless
without the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.services.common import new_id
from seqbridge.services.keys import KeyService
from seqbridge.storage.db import Database

#: last_seen_at is written at most this often (a page view is a read, not a write).
TOUCH_EVERY = timedelta(seconds=60)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ConsoleSession:
    """A live console session: who is signed in, for which organization, with which scopes."""

    id: str
    org_id: str
    org_name: str
    key_id: str
    key_name: str
    key_prefix: str
    scopes: frozenset[str]
    csrf_token: str

    def caller(self, request_id: str | None) -> Caller:
        """The caller the services see: the key itself, exactly as on the API."""
        return Caller(self.org_id, Actor(ActorType.API_KEY, self.key_id), request_id, self.scopes)


class SessionService:
    def __init__(self, db: Database, clock: Clock, keys: KeyService, settings: dict[str, Any]) -> None:
        self.db = db
        self.clock = clock
        self.keys = keys
        self.idle = timedelta(minutes=settings["CONSOLE_IDLE_MINUTES"])
        self.lifetime = timedelta(hours=settings["CONSOLE_SESSION_HOURS"])

    @staticmethod
    def csrf_token_for(token: str) -> str:
        return hmac.new(token.encode(), b"seqbridge-console-csrf", hashlib.sha256).hexdigest()

    def sign_in(
        self, raw_key: str, user_agent: str | None, request_id: str | None
    ) -> tuple[str, ConsoleSession]:
        """Check the key and open a session; return (the cookie's token, the session).

        Raises :class:`Unauthorized` ``invalid_api_key`` for a wrong, malformed or revoked key.
        """
        principal = self.keys.authenticate((raw_key or "").strip())
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        row = {
            "id": new_id(),
            "token_hash": _hash(token),
            "org_id": principal.org_id,
            "key_id": principal.key_id,
            "user_agent": (user_agent or "")[:300] or None,
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + self.lifetime,
        }
        caller = Caller(principal.org_id, Actor(ActorType.API_KEY, principal.key_id), request_id)
        with self.db.transaction() as tx:
            tx.sessions.insert_session(row)
            record(
                tx,
                caller,
                tag_for(caller, "console_session", "created"),
                "console_session",
                row["id"],
                {"key_id": principal.key_id},
                now,
            )
        session = self.resume(token)
        assert session is not None
        return token, session

    def resume(self, token: str | None) -> ConsoleSession | None:
        """The live session for this cookie token, or None (no, unknown, ended, idle, expired or
        revoked). Moves the idle deadline on at most once a minute."""
        if not token or len(token) > 100:
            return None
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            row = tx.sessions.find_live_session(_hash(token), now)
        if row is None or row["last_seen_at"] + self.idle <= now:
            return None
        if now - row["last_seen_at"] >= TOUCH_EVERY:
            with self.db.transaction() as tx:
                tx.sessions.touch(row["id"], now)
        return ConsoleSession(
            row["id"],
            row["org_id"],
            row["org_name"],
            row["key_id"],
            row["key_name"],
            row["key_prefix"],
            frozenset(row["scopes"]),
            self.csrf_token_for(token),
        )

    def sign_out(self, token: str | None, request_id: str | None) -> None:
        """End the session (nothing happens for an unknown or already ended one)."""
        if not token:
            return
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.sessions.end_session(_hash(token), now)
            if row is not None:
                caller = Caller(row["org_id"], Actor(ActorType.API_KEY, row["key_id"]), request_id)
                record(
                    tx,
                    caller,
                    tag_for(caller, "console_session", "ended"),
                    "console_session",
                    row["id"],
                    {"key_id": row["key_id"]},
                    now,
                )
