"""Idempotency keys of the API's POST routes: claim a key, keep the answer, release on failure."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from seqbridge.storage.schema import idempotency_keys


class IdempotencyStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get_key(self, org_id: str, key: str) -> dict[str, Any] | None:
        row = (
            self.conn.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.org_id == org_id, idempotency_keys.c.key == key
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def insert_key(self, row: dict[str, Any]) -> bool:
        """Claim a new key; False if it exists already (another request holds or held it)."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(idempotency_keys.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def take_over(self, org_id: str, key: str, row: dict[str, Any], now: datetime) -> bool:
        """Reclaim a key whose holder died (lock expired) or whose answer has expired."""
        result = self.conn.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.key == key,
                ((idempotency_keys.c.state == "in_progress") & (idempotency_keys.c.locked_until < now))
                | (idempotency_keys.c.created_at < row["expired_before"]),
            )
            .values(**{k: v for k, v in row.items() if k not in ("org_id", "key", "expired_before")})
        )
        return result.rowcount == 1

    def finish(self, org_id: str, key: str, status: int, content_type: str | None, body: bytes) -> None:
        self.conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.org_id == org_id, idempotency_keys.c.key == key)
            .values(state="done", response_status=status, response_type=content_type, response_body=body)
        )

    def release(self, org_id: str, key: str) -> None:
        self.conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.org_id == org_id, idempotency_keys.c.key == key)
        )

    def expired_keys(self, created_before: datetime, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (org_id, key) created before ``created_before`` and not held by a live
        request, oldest first (ix_idempotency_keys_created)."""
        query = (
            select(idempotency_keys.c.org_id, idempotency_keys.c.key)
            .where(
                idempotency_keys.c.created_at < created_before,
                (idempotency_keys.c.state == "done") | (idempotency_keys.c.locked_until < now),
            )
            .order_by(idempotency_keys.c.created_at)
            .limit(limit)
        )
        return [(r[0], r[1]) for r in self.conn.execute(query)]

    def delete_expired(self, org_id: str, keys: list[str], created_before: datetime) -> int:
        """Delete these keys of one organization if they are still older than ``created_before``
        (a retry may have taken one over since)."""
        return self.conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.key.in_(keys),
                idempotency_keys.c.created_at < created_before,
            )
        ).rowcount
