"""The append-only audit log and the per-organization hash chain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import bulk_insert, execute_raw, insert_returning
from seqbridge.storage.schema import audit_events, audit_heads


class AuditStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def start_chain(self, org_id: str) -> None:
        """Create the chain head for a new organization (before its first event)."""
        self.conn.execute(insert(audit_heads).values(org_id=org_id, last_event_id=0, last_hash=""))

    def _sql(self, statement: str) -> str:
        # These run for every audited change: plain SQL skips SQLAlchemy's statement building.
        return statement if self.conn.dialect.paramstyle == "qmark" else statement.replace("?", "%s")

    def lock_chain_head(self, org_id: str) -> dict[str, Any]:
        """Read the chain head and hold it until commit, so appends never fork the chain.

        PostgreSQL takes a row lock; SQLite is already serialised by BEGIN IMMEDIATE.
        """
        lock = " FOR UPDATE" if self.conn.dialect.name == "postgresql" else ""
        rows = execute_raw(
            self.conn,
            self._sql("SELECT last_event_id, last_hash FROM audit_heads WHERE org_id = ?" + lock),
            (org_id,),
        )
        row = rows[0] if rows else None
        if row is None:
            raise LookupError(f"organization {org_id} has no audit chain")
        return {"org_id": org_id, "last_event_id": row[0], "last_hash": row[1]}

    def append_events(self, org_id: str, rows: list[dict[str, Any]]) -> None:
        """Insert events (already chained, in order) and move the chain head to the last one.

        The caller holds the chain head (:meth:`lock_chain_head`), so this organization's newest
        event after the insert is the last row given.
        """
        if self.conn.dialect.name == "postgresql" and len(rows) > 50:  # COPY wins for bulk batches
            bulk_insert(self.conn, audit_events, rows)
            last_id = execute_raw(
                self.conn,
                self._sql("SELECT id FROM audit_events WHERE org_id = ? ORDER BY id DESC LIMIT 1"),
                (org_id,),
            )[0][0]
        else:  # the new ids come back with the insert
            last_id = max(r[0] for r in insert_returning(self.conn, audit_events, rows, ("id",)))
        execute_raw(
            self.conn,
            self._sql("UPDATE audit_heads SET last_event_id = ?, last_hash = ? WHERE org_id = ?"),
            (last_id, rows[-1]["hash"], org_id),
        )

    def list_events(
        self,
        org_id: str,
        *,
        tags: list[str] | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        actor_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        descending: bool = True,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """One page of events, keyset-paginated on the event id (stable under concurrent appends)."""
        query = select(audit_events).where(audit_events.c.org_id == org_id)
        if tags:
            query = query.where(audit_events.c.tag.in_(tags))
        if subject_type is not None:
            query = query.where(audit_events.c.subject_type == subject_type)
        if subject_id is not None:
            query = query.where(audit_events.c.subject_id == subject_id)
        if actor_id is not None:
            query = query.where(audit_events.c.actor_id == actor_id)
        if since is not None:
            query = query.where(audit_events.c.occurred_at >= since)
        if until is not None:
            query = query.where(audit_events.c.occurred_at < until)
        if after_id is not None:
            query = query.where(audit_events.c.id < after_id if descending else audit_events.c.id > after_id)
        order = audit_events.c.id.desc() if descending else audit_events.c.id.asc()
        return [dict(r) for r in self.conn.execute(query.order_by(order).limit(limit)).mappings()]

    def chain_heads(self) -> list[dict[str, Any]]:
        return [
            dict(r) for r in self.conn.execute(select(audit_heads).order_by(audit_heads.c.org_id)).mappings()
        ]

    def iter_chain(self, org_id: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every event of one organization in chain order, read in batches."""
        last = 0
        while True:
            query = (
                select(audit_events)
                .where(audit_events.c.org_id == org_id, audit_events.c.id > last)
                .order_by(audit_events.c.id)
                .limit(batch)
            )
            rows = [dict(r) for r in self.conn.execute(query).mappings()]
            if not rows:
                return
            yield from rows
            last = rows[-1]["id"]

    # The console -----------------------------------------------------------------------------

    def events_about(self, org_id: str, subjects: list[tuple[str, str]], limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events whose subject is one of ``subjects`` ((type, id) pairs),
        newest first: one range of ix_audit_events_org_subject per subject (an OR of them let
        SQLite walk the organization's whole log by id instead)."""
        found: list[dict[str, Any]] = []
        for subject_type, subject_id in dict.fromkeys(subjects):
            query = (
                select(audit_events)
                .where(
                    audit_events.c.org_id == org_id,
                    audit_events.c.subject_type == subject_type,
                    audit_events.c.subject_id == subject_id,
                )
                .order_by(audit_events.c.id.desc())
                .limit(limit)
            )
            found.extend(dict(r) for r in self.conn.execute(query).mappings())
        found.sort(key=lambda e: e["id"], reverse=True)
        return found[:limit]

    def events_by_actor_before(
        self, org_id: str, actor_id: str, before_id: int, limit: int
    ) -> list[dict[str, Any]]:
        """The actor's events just before ``before_id``, newest first (ix_audit_events_org_actor)."""
        query = (
            select(audit_events)
            .where(
                audit_events.c.org_id == org_id,
                audit_events.c.actor_id == actor_id,
                audit_events.c.id < before_id,
            )
            .order_by(audit_events.c.id.desc())
            .limit(limit)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]
