"""The webhook inbox: store a delivery and its dedupe keys, claim due ones under a lease, finish,
retry, replay. Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, like the step processor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import deliveries, delivery_keys

#: What the list view shows (the body and events are for the detail view).
_SUMMARY = [c for c in deliveries.c if c.name not in ("body", "events", "results", "headers", "query")]


class DeliveryStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Ingest ------------------------------------------------------------------------------------

    def insert_delivery(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(deliveries), row)

    def claim_keys(
        self, org_id: str, hook: str, keys: list[str], delivery_id: str, now: datetime
    ) -> set[str]:
        """Record the dedupe keys for ``delivery_id``; return the ones that were new (the rest
        belong to an earlier delivery). Concurrent claims of one key: exactly one wins."""
        build = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        statement = (
            build(delivery_keys)
            .values([{"org_id": org_id, "hook": hook, "dedupe_key": k, "delivery_id": delivery_id,
                      "created_at": now} for k in keys])
            .on_conflict_do_nothing()
            .returning(delivery_keys.c.dedupe_key)
        )  # fmt: skip
        return set(self.conn.execute(statement).scalars())

    def key_owner(self, org_id: str, hook: str, key: str) -> str | None:
        """The delivery that first carried this dedupe key."""
        return self.conn.execute(
            select(delivery_keys.c.delivery_id).where(
                delivery_keys.c.org_id == org_id,
                delivery_keys.c.hook == hook,
                delivery_keys.c.dedupe_key == key,
            )
        ).scalar()

    def delete_delivery(self, delivery_id: str) -> None:
        self.conn.execute(delete(deliveries).where(deliveries.c.id == delivery_id))

    def set_events(self, delivery_id: str, events: list[dict[str, Any]]) -> None:
        self.conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(events=events))

    # Reads ---------------------------------------------------------------------------------------

    def get_delivery(self, org_id: str, delivery_id: str) -> dict[str, Any] | None:
        row = (
            self.conn.execute(
                select(deliveries).where(deliveries.c.org_id == org_id, deliveries.c.id == delivery_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def list_deliveries(
        self,
        org_id: str,
        *,
        hook: str | None,
        statuses: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is the (received_at, id) of the last row of the previous page."""
        query = select(*_SUMMARY).where(deliveries.c.org_id == org_id)
        if hook:
            query = query.where(deliveries.c.hook == hook)
        if statuses:
            query = query.where(deliveries.c.status.in_(statuses))
        if since:
            query = query.where(deliveries.c.received_at >= since)
        if until:
            query = query.where(deliveries.c.received_at < until)
        if before:
            at, last_id = before
            query = query.where(or_(deliveries.c.received_at < at,
                                    and_(deliveries.c.received_at == at, deliveries.c.id < last_id)))  # fmt: skip
        query = query.order_by(deliveries.c.received_at.desc(), deliveries.c.id.desc()).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def ids_to_replay(self, statuses: list[str], since: datetime | None, hook: str | None,
                      org_id: str | None, limit: int) -> list[tuple[str, str]]:  # fmt: skip
        """(org_id, id) of deliveries in these statuses, oldest first."""
        query = select(deliveries.c.org_id, deliveries.c.id).where(deliveries.c.status.in_(statuses))
        if since:
            query = query.where(deliveries.c.received_at >= since)
        if hook:
            query = query.where(deliveries.c.hook == hook)
        if org_id:
            query = query.where(deliveries.c.org_id == org_id)
        query = query.order_by(deliveries.c.received_at, deliveries.c.id).limit(limit)
        return [(r[0], r[1]) for r in self.conn.execute(query)]

    def count_by_status(self) -> dict[str, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        return {status: n for status, n in self.conn.execute(query)}

    # Processing ----------------------------------------------------------------------------------

    def reclaim_expired_leases(self, now: datetime) -> int:
        """Deliveries whose worker stopped mid-way go back in the queue."""
        return self.conn.execute(
            update(deliveries)
            .where(deliveries.c.status == "processing", deliveries.c.lease_expires_at < now)
            .values(status="queued", lease_owner=None, lease_expires_at=None, next_attempt_at=now, updated_at=now)
        ).rowcount  # fmt: skip

    def claim_due(self, now: datetime, worker_id: str, lease_until: datetime, limit: int) -> list[str]:
        """Lease up to ``limit`` queued deliveries that are due, oldest first."""
        due = (
            select(deliveries.c.id)
            .where(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now)
            .order_by(deliveries.c.next_attempt_at, deliveries.c.received_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(self.conn.execute(due).scalars())
        if ids:
            self.lease(ids, worker_id, lease_until, now)
        return ids

    def lease(self, ids: list[str], worker_id: str, lease_until: datetime, now: datetime) -> set[str]:
        """Lease these queued deliveries to ``worker_id``; return the ones it got."""
        result = self.conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), deliveries.c.status == "queued")
            .values(status="processing", lease_owner=worker_id, lease_expires_at=lease_until,
                    attempts=deliveries.c.attempts + 1, updated_at=now)
            .returning(deliveries.c.id)
        )  # fmt: skip
        return set(result.scalars())

    def release(self, ids: list[str], worker_id: str, now: datetime) -> int:
        """Back to the queue, due at once, without counting the attempt."""
        return self.conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), deliveries.c.status == "processing", deliveries.c.lease_owner == worker_id)
            .values(status="queued", lease_owner=None, lease_expires_at=None, next_attempt_at=now,
                    attempts=deliveries.c.attempts - 1, updated_at=now)
        ).rowcount  # fmt: skip

    def load_leased(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """The delivery, if ``worker_id`` still holds its lease (locked for the rest of the transaction)."""
        row = self.conn.execute(
            select(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.status == "processing",
                   deliveries.c.lease_owner == worker_id)
            .with_for_update()
        ).mappings().first()  # fmt: skip
        return dict(row) if row else None

    def finish(self, delivery_id: str, worker_id: str, values: dict[str, Any]) -> bool:
        """Leave the processing state with ``values`` (status, results, errors, ...); False if the
        lease was lost in the meantime."""
        result = self.conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.status == "processing",
                   deliveries.c.lease_owner == worker_id)
            .values(lease_owner=None, lease_expires_at=None, **values)
        )  # fmt: skip
        return result.rowcount == 1

    def requeue(self, org_id: str, delivery_id: str, now: datetime, statuses: tuple[str, ...]) -> bool:
        """Queue a delivery again (a replay): attempts start over, the history stays."""
        result = self.conn.execute(
            update(deliveries)
            .where(deliveries.c.org_id == org_id, deliveries.c.id == delivery_id, deliveries.c.status.in_(statuses))
            .values(status="queued", attempts=0, next_attempt_at=now, lease_owner=None, lease_expires_at=None,
                    replays=deliveries.c.replays + 1, updated_at=now)
        )  # fmt: skip
        return result.rowcount == 1
