"""What the processor sent (or, with no SMTP configured, would have sent), and its health."""

from __future__ import annotations

from typing import Any

from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.services.common import CursorPage, decode_cursor, encode_cursor, format_time
from seqbridge.storage.db import Database


def outbox_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "idempotency_key": row["idempotency_key"],
        "channel": row["channel"],
        "status": row["status"],
        "recipient": row["recipient"],
        "subject": row["subject"],
        "body": row["body"],
        "headers": row["headers"] or {},
        "detail": row["detail"],
        "sequence_id": row["sequence_id"],
        "enrollment_id": row["enrollment_id"],
        "contact_id": row["contact_id"],
        "created_at": format_time(row["created_at"]),
    }


class OutboxService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def list_messages(
        self, caller: Caller, *, channel: str | None, status: str | None, cursor: str | None, limit: int
    ) -> CursorPage:
        """The caller's organization's outbox, newest first."""
        after = decode_cursor(cursor, {"after": int})["after"] if cursor else None
        with self.db.transaction(write=False) as tx:
            rows = tx.processor.list_outbox(
                caller.org_id, channel=channel, status=status, after_id=after, limit=limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return CursorPage(
            [outbox_to_api(r) for r in rows],
            limit,
            encode_cursor({"after": rows[-1]["id"]}) if more else None,
        )

    def processor_counts(self) -> dict[str, int]:
        """Due, leased, retrying and failed tasks; sent, captured and failed messages; live workers."""
        with self.db.transaction(write=False) as tx:
            return tx.processor.counts(self.clock.now())
