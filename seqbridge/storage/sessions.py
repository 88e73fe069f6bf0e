"""Console sessions: the server side of a signed-in browser (only the token's hash is stored)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import api_keys, console_sessions, organizations


class SessionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_session(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(console_sessions).values(**row))

    def find_live_session(self, token_hash: str, now: datetime) -> dict[str, Any] | None:
        """The session with this token hash, with its key and organization, if it has not ended,
        has not passed its absolute end, and its key is not revoked (the idle check is the
        caller's: it knows the timeout)."""
        query = (
            select(
                console_sessions,
                api_keys.c.name.label("key_name"),
                api_keys.c.prefix.label("key_prefix"),
                api_keys.c.scopes.label("scopes"),
                organizations.c.name.label("org_name"),
            )
            .join(api_keys, api_keys.c.id == console_sessions.c.key_id)
            .join(organizations, organizations.c.id == console_sessions.c.org_id)
            .where(
                console_sessions.c.token_hash == token_hash,
                console_sessions.c.ended_at.is_(None),
                console_sessions.c.expires_at > now,
                api_keys.c.revoked_at.is_(None),
            )
        )
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def touch(self, session_id: str, now: datetime) -> None:
        self.conn.execute(
            update(console_sessions).where(console_sessions.c.id == session_id).values(last_seen_at=now)
        )

    def end_session(self, token_hash: str, now: datetime) -> dict[str, Any] | None:
        """End the live session with this token hash; return it (None if there was none)."""
        row = (
            self.conn.execute(
                select(console_sessions).where(
                    console_sessions.c.token_hash == token_hash, console_sessions.c.ended_at.is_(None)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        self.conn.execute(
            update(console_sessions).where(console_sessions.c.id == row["id"]).values(ended_at=now)
        )
        return dict(row)

    def end_sessions_of_key(self, key_id: str, now: datetime) -> int:
        return self.conn.execute(
            update(console_sessions)
            .where(console_sessions.c.key_id == key_id, console_sessions.c.ended_at.is_(None))
            .values(ended_at=now)
        ).rowcount
