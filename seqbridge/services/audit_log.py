"""Reading the audit log (writing it is :func:`seqbridge.audit.record`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from seqbridge.context import Caller
from seqbridge.errors import BadRequest
from seqbridge.services.common import CursorPage, decode_cursor, encode_cursor, format_time
from seqbridge.storage.db import Database


def event_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "occurred_at": format_time(row["occurred_at"]),
        "actor": {"type": row["actor_type"], "id": row["actor_id"]},
        "tag": row["tag"],
        "subject": {"type": row["subject_type"], "id": row["subject_id"]},
        "request_id": row["request_id"],
        "data": row["data"],
        "hash": row["hash"],
        "prev_hash": row["prev_hash"],
    }


class AuditLogService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list_events(
        self,
        caller: Caller,
        *,
        tags: list[str] | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        actor_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: str = "desc",
        cursor: str | None = None,
        limit: int = 50,
    ) -> CursorPage:
        """One page of the caller's organization's events, newest first unless ``order="asc"``.

        Raises :class:`BadRequest` for a cursor that was not made by this endpoint.
        """
        after_id = None
        if cursor:
            position = decode_cursor(cursor, {"after": int, "order": str})
            after_id, order = position["after"], position["order"]
            if order not in ("asc", "desc"):
                raise BadRequest(
                    "cursor is not valid; pass the next_cursor of a previous page", code="invalid_cursor"
                )
        with self.db.transaction(write=False) as tx:
            rows = tx.audit.list_events(
                caller.org_id,
                tags=tags,
                subject_type=subject_type,
                subject_id=subject_id,
                actor_id=actor_id,
                since=since,
                until=until,
                after_id=after_id,
                descending=order != "asc",
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor({"after": rows[-1]["id"], "order": order}) if more else None
        return CursorPage([event_to_api(r) for r in rows], limit, next_cursor)
