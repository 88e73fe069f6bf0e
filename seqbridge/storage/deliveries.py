"""The webhook inbox: store a delivery and its dedupe keys, claim due ones under a lease, finish,
retry, replay. Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, like the step processor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, and_, delete, func, or_, select, type_coerce, update
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import bulk_insert, insert_returning
from seqbridge.storage.schema import deliveries, delivery_keys

#: What the list view shows (the body and events are for the detail view).
_SUMMARY = [c for c in deliveries.c if c.name not in ("body", "events", "results", "headers", "query")]
#: What planning a stored delivery again needs (a mapping diff).
_TO_PLAN = ("id", "status", "received_at", "method", "content_type", "headers", "query", "body", "events")
#: Read without SQLAlchemy's conversion (see requests_to_plan).
_RAW = {"events", "received_at", "headers", "query"}


def _json(value: Any) -> Any:
    """A JSON column read as text (SQLite) or already decoded (psycopg decodes jsonb itself)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def stored_time(value: Any) -> datetime:
    """A ``received_at`` as the driver returns it (SQLite: text; PostgreSQL: a naive datetime), as
    an aware UTC datetime (what ``UTCDateTime`` returns)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DeliveryStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Ingest ------------------------------------------------------------------------------------

    def insert_delivery(self, row: dict[str, Any]) -> None:
        self.insert_deliveries([row])

    def insert_deliveries(self, rows: list[dict[str, Any]]) -> None:
        bulk_insert(self.conn, deliveries, rows)

    def claim_keys(
        self, claims: list[tuple[str, str, str, str]], now: datetime
    ) -> dict[tuple[str, str, str], str]:
        """Record dedupe keys, ``(org_id, hook, key, delivery_id)`` in order; return the owner of
        each key that was new. A key seen before (or earlier in ``claims``) is left to its first
        owner: concurrent claims of one key, exactly one wins."""
        rows = [
            {"org_id": o, "hook": h, "dedupe_key": k, "delivery_id": d, "created_at": now}
            for o, h, k, d in claims
        ]
        inserted = insert_returning(self.conn, delivery_keys, rows, ("org_id", "hook", "dedupe_key", "delivery_id"),
                                    skip_conflicts=True)  # fmt: skip
        return {(o, h, k): d for o, h, k, d in inserted}

    def key_owner(self, org_id: str, hook: str, key: str) -> str | None:
        """The delivery that first carried this dedupe key."""
        return self.conn.execute(
            select(delivery_keys.c.delivery_id).where(
                delivery_keys.c.org_id == org_id,
                delivery_keys.c.hook == hook,
                delivery_keys.c.dedupe_key == key,
            )
        ).scalar()

    def delete_deliveries(self, ids: list[str]) -> None:
        if ids:
            self.conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))

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

    def delivery_by_id(self, delivery_id: str) -> dict[str, Any] | None:
        """A delivery of any organization (the operator's CLI, which names it by id)."""
        row = self.conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().first()
        return dict(row) if row else None

    def requests_to_plan(
        self,
        org_id: str,
        hook: str,
        *,
        statuses: tuple[str, ...],
        since: datetime | None,
        before: tuple[datetime, str] | None,
        limit: int,
        parts: frozenset[str] = frozenset({"headers", "query"}),
    ) -> list[dict[str, Any]]:
        """A page of the hook's deliveries in ``statuses``, newest first, with the request and its
        events; ``before`` is the (received_at, id) of the last row of the previous page. A range
        of ix_deliveries_org_hook_received_id, in its order (no sort: each page reads only its rows).

        A mapping diff reads 100,000 of these, so the JSON and time columns skip SQLAlchemy's
        per-row conversion (most of the cost of the read): ``events`` is parsed here, ``headers``
        and ``query`` only if ``parts`` names them or the events are not stored (the connector
        reads the request), and ``received_at`` is left as the driver returns it, except the last
        row's (the next page's ``before``); :func:`stored_time` converts one."""
        columns = [type_coerce(deliveries.c[n], Text) if n in _RAW else deliveries.c[n] for n in _TO_PLAN]
        query = select(*columns).where(
            deliveries.c.org_id == org_id, deliveries.c.hook == hook, deliveries.c.status.in_(statuses)
        )
        if since:
            query = query.where(deliveries.c.received_at >= since)
        if before:  # "<= at" alone bounds the index range: with only the OR, each page scans from the newest
            at, last_id = before
            query = query.where(
                deliveries.c.received_at <= at, or_(deliveries.c.received_at < at, deliveries.c.id < last_id)
            )
        query = query.order_by(deliveries.c.received_at.desc(), deliveries.c.id.desc()).limit(limit)
        rows = [dict(zip(_TO_PLAN, row, strict=True)) for row in self.conn.execute(query)]
        for row in rows:
            row["events"] = events = _json(row["events"])
            for part in ("headers", "query"):
                row[part] = _json(row[part]) if part in parts or events is None else {}
        if rows:
            rows[-1]["received_at"] = stored_time(rows[-1]["received_at"])
        return rows

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

    def any_work(self, now: datetime) -> bool:
        """Is a delivery due, or a lease expired? (Two index probes on ix_deliveries_due.)"""
        due = select(deliveries.c.id).where(
            deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now
        )
        expired = select(deliveries.c.id).where(
            deliveries.c.status == "processing", deliveries.c.lease_expires_at < now
        )
        return any(self.conn.execute(q.limit(1)).first() is not None for q in (due, expired))

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

    def get_leased(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """The delivery, if ``worker_id`` holds its lease (no row lock: for reading before acting)."""
        row = self.conn.execute(
            select(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.status == "processing",
                                     deliveries.c.lease_owner == worker_id)
        ).mappings().first()  # fmt: skip
        return dict(row) if row else None

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

    # Retention -----------------------------------------------------------------------------------

    def prune_candidates(self, org_id: str, received_before: datetime, after: tuple[datetime, str] | None,
                         limit: int) -> list[dict[str, Any]]:  # fmt: skip
        """The organization's next ``limit`` deliveries received before ``received_before``, oldest
        first, after the (received_at, id) ``after`` (a range of ix_deliveries_org_received)."""
        query = select(deliveries.c.id, deliveries.c.status, deliveries.c.received_at, deliveries.c.updated_at)\
            .where(deliveries.c.org_id == org_id, deliveries.c.received_at < received_before)  # fmt: skip
        if after:
            at, last_id = after
            query = query.where(or_(deliveries.c.received_at > at,
                                    and_(deliveries.c.received_at == at, deliveries.c.id > last_id)))  # fmt: skip
        query = query.order_by(deliveries.c.received_at, deliveries.c.id).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def delete_finished(
        self, ids: list[str], statuses: tuple[str, ...], untouched_since: datetime
    ) -> tuple[int, int]:
        """Delete those of ``ids`` still in ``statuses`` and unchanged since ``untouched_since``, with
        their dedupe keys; return (deliveries, keys) deleted. The rows are locked first, so a replay
        racing the prune either wins (and the delivery stays) or finds it gone."""
        if not ids:
            return 0, 0
        locked = list(self.conn.execute(
            select(deliveries.c.id)
            .where(deliveries.c.id.in_(ids), deliveries.c.status.in_(statuses),
                   deliveries.c.updated_at < untouched_since)
            .with_for_update()
        ).scalars())  # fmt: skip
        if not locked:
            return 0, 0
        keys = self.conn.execute(
            delete(delivery_keys).where(delivery_keys.c.delivery_id.in_(locked))
        ).rowcount
        rows = self.conn.execute(delete(deliveries).where(deliveries.c.id.in_(locked))).rowcount
        return rows, keys
