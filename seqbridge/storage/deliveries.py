"""The webhook inbox: store a delivery and its dedupe keys, claim due ones under a lease, finish,
retry, replay. Claims take ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, like the step processor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

from sqlalchemy import Text, and_, delete, false, func, or_, select, true, type_coerce, update
from sqlalchemy.engine import Connection

from seqbridge.storage.bulk import bulk_insert, bulk_update, execute_count, execute_raw
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


#: What a receipt's audit event is made of.
_RECEIPT_COLUMNS = (
    "id",
    "org_id",
    "hook",
    "status",
    "received_at",
    "request_id",
    "reject_reason",
    "body_size",
)
_RECEIPT = [deliveries.c[name] for name in _RECEIPT_COLUMNS]
#: The due urgent deliveries, with the predicate of the partial index ix_deliveries_urgent
#: written out as it is there (see DeliveryStore.due_urgent).
_URGENT_SQLITE = (
    "SELECT id FROM deliveries INDEXED BY ix_deliveries_urgent WHERE status = 'queued' AND priority > 0"
    " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
)
_URGENT_POSTGRESQL = (
    "SELECT id FROM deliveries WHERE status = 'queued' AND priority > 0"
    " AND next_attempt_at <= %s ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
#: The receipts no claim picks up, which the worker sweeps into the audit log: written out with
#: the predicate of the partial index ix_deliveries_unaudited (a bound parameter would not match
#: it) and, on SQLite, naming it (the planner would rather walk ix_deliveries_due over every
#: ignored delivery ever kept).
_UNAUDITED_SQLITE = (
    "SELECT id FROM deliveries INDEXED BY ix_deliveries_unaudited"
    " WHERE receipt_audited = 0 AND status IN ('ignored', 'rejected') ORDER BY id LIMIT ?"
)
_UNAUDITED_POSTGRESQL = (
    "SELECT id FROM deliveries WHERE NOT receipt_audited AND status IN ('ignored', 'rejected')"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
#: A receipt's columns (every column of ``deliveries``, in the table's order): the order of the
#: values :meth:`DeliveryStore.insert_receipts` takes (see ``services.intake.receipt_values``).
RECEIPT_COLUMNS = tuple(deliveries.c.keys())


def receipt_time(dialect_name: str) -> Callable[[datetime | None], Any]:
    """How a time goes to this database's driver in a receipt (what ``UTCDateTime`` and the
    dialect would send: naive UTC; on SQLite as the text SQLAlchemy stores). For the request
    threads, which prepare their receipt before the write lock."""
    if dialect_name == "sqlite":
        return lambda moment: (
            None
            if moment is None
            else moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        )
    return lambda moment: None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _marks(paramstyle: str, columns: int, rows: int) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([mark] * columns) + ")"
    return ", ".join([row] * rows)


@lru_cache(maxsize=256)
def _receipts_sql(paramstyle: str, rows: int) -> str:
    return f"INSERT INTO deliveries ({', '.join(RECEIPT_COLUMNS)}) VALUES {_marks(paramstyle, len(RECEIPT_COLUMNS), rows)}"


@lru_cache(maxsize=256)
def _claims_sql(paramstyle: str, rows: int) -> str:
    # The claim's created_at is its own value, so "expired" compares the old key's end with it.
    return (
        "INSERT INTO delivery_keys (org_id, hook, dedupe_key, delivery_id, expires_at, created_at) VALUES "
        + _marks(paramstyle, 6, rows)
        + " ON CONFLICT (org_id, hook, dedupe_key) DO UPDATE SET delivery_id = excluded.delivery_id,"
        " created_at = excluded.created_at, expires_at = excluded.expires_at"
        " WHERE delivery_keys.expires_at <= excluded.created_at"
    )


class DeliveryStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # Ingest ------------------------------------------------------------------------------------
    # The webhook's request path: every statement here runs for each batch of receipts, on the
    # DBAPI cursor (SQLAlchemy's per-statement work would cost more than the statements), with
    # values the request threads converted before the write lock (:func:`receipt_time`).

    def insert_receipts(self, receipts: list[tuple]) -> None:
        """Insert receipts in one statement, each a tuple of :data:`RECEIPT_COLUMNS` values
        already in the driver's form."""
        sql = _receipts_sql(self.conn.dialect.paramstyle, len(receipts))
        execute_raw(self.conn, sql, tuple(chain.from_iterable(receipts)))

    def insert_delivery(self, row: dict[str, Any]) -> None:
        """Insert one delivery given as a dict of column values (tests and tools; the inbox uses
        :meth:`insert_receipts`)."""
        bulk_insert(self.conn, deliveries, [row])

    def claim_keys(
        self, claims: list[tuple[str, str, str, str, datetime | None]], now: datetime
    ) -> dict[tuple[str, str, str], tuple[str, datetime | None]]:
        """Claim dedupe keys, ``(org_id, hook, key, delivery_id, expires_at)`` with each key at
        most once; return ``(owner, expires_at)`` of every key once claimed. A new key, or one whose ``expires_at`` has passed (a body hash after the
        hook's dedupe window), goes to the claiming delivery; any other stays with its owner:
        of concurrent claims of one key, exactly one wins. One statement when every key was
        new or expired, as usual; the owners are read back only when some were not."""
        if not claims:
            return {}
        sql = _claims_sql(self.conn.dialect.paramstyle, len(claims))
        time = receipt_time(self.conn.dialect.name)
        stamp = time(now)
        params = tuple(chain.from_iterable((o, h, k, d, time(e), stamp) for o, h, k, d, e in claims))
        taken = execute_count(self.conn, sql, params)
        if taken == len(claims):
            return {(o, h, k): (d, e) for o, h, k, d, e in claims}
        owners: dict[tuple[str, str, str], tuple[str, Any]] = {}
        by_hook: dict[tuple[str, str], list[str]] = {}
        for o, h, k, _, _ in claims:
            by_hook.setdefault((o, h), []).append(k)
        for (org_id, hook), keys in by_hook.items():
            query = select(
                delivery_keys.c.dedupe_key, delivery_keys.c.delivery_id, delivery_keys.c.expires_at
            ).where(
                delivery_keys.c.org_id == org_id,
                delivery_keys.c.hook == hook,
                delivery_keys.c.dedupe_key.in_(keys),
            )
            for key, owner, expires in self.conn.execute(query):
                owners[(org_id, hook, key)] = (owner, expires)
        return owners

    def summaries(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Status and receipt time of these deliveries, by id (what a duplicate's answer says of
        its original)."""
        if not ids:
            return {}
        query = select(deliveries.c.id, deliveries.c.status, deliveries.c.received_at).where(
            deliveries.c.id.in_(ids)
        )
        return {r.id: {"status": r.status, "received_at": r.received_at} for r in self.conn.execute(query)}

    def delete_deliveries(self, ids: list[str]) -> None:
        if ids:
            self.conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))

    def set_events(self, delivery_id: str, events: list[dict[str, Any]]) -> None:
        self.conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(events=events))

    # Receipts ------------------------------------------------------------------------------------

    def mark_receipts_audited(self, ids: list[str]) -> list[dict[str, Any]]:
        """Mark the receipts of these deliveries audited, and return the ones this call marked,
        with what their audit event says. A delivery already marked (by an earlier claim, or by
        another worker at the same moment: its row lock serialises the two) is not returned, so
        each receipt is recorded exactly once."""
        if not ids:
            return []
        result = self.conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids), deliveries.c.receipt_audited == false())
            .values(receipt_audited=True)
            .returning(*_RECEIPT)
        )
        names = tuple(result.keys())
        return [dict(zip(names, r, strict=True)) for r in result]

    def unaudited_receipts(self, limit: int) -> list[str]:
        """The ids of the oldest ignored and rejected deliveries whose receipt is not in the audit
        log yet (the partial index ix_deliveries_unaudited holds only those: the others are
        audited when they are claimed). Rows another transaction has locked are skipped on
        PostgreSQL."""
        sql = _UNAUDITED_SQLITE if self.conn.dialect.name == "sqlite" else _UNAUDITED_POSTGRESQL
        return [r[0] for r in execute_raw(self.conn, sql, (limit,))]

    def keys_of(self, ids: list[str]) -> dict[str, list[str]]:
        """The dedupe keys each of these deliveries owns, sorted."""
        if not ids:
            return {}
        query = select(delivery_keys.c.delivery_id, delivery_keys.c.dedupe_key).where(
            delivery_keys.c.delivery_id.in_(ids)
        )
        out: dict[str, list[str]] = {}
        for delivery_id, key in self.conn.execute(query):
            out.setdefault(delivery_id, []).append(key)
        return {delivery_id: sorted(keys) for delivery_id, keys in out.items()}

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
            query = query.where(
                or_(
                    deliveries.c.received_at < at,
                    and_(deliveries.c.received_at == at, deliveries.c.id < last_id),
                )
            )
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

    def ids_to_replay(
        self, statuses: list[str], since: datetime | None, hook: str | None, org_id: str | None, limit: int
    ) -> list[tuple[str, str]]:
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

    def backlog(self, now: datetime) -> dict[str, Any]:
        """What the worker has to get through: due, processing and retrying deliveries, and how
        long the oldest due one has waited (ranges of ix_deliveries_due, never the whole table)."""
        queued = deliveries.c.status == "queued"

        def count(*conditions) -> int:
            return self.conn.execute(
                select(func.count()).select_from(deliveries).where(*conditions)
            ).scalar_one()

        oldest = self.conn.execute(select(func.min(deliveries.c.next_attempt_at)).where(queued)).scalar()
        return {
            "due": count(queued, deliveries.c.next_attempt_at <= now),
            "processing": count(deliveries.c.status == "processing"),
            "retrying": count(queued, deliveries.c.next_attempt_at > now),
            "oldest_due_seconds": max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
        }

    def count_by_status(self) -> dict[str, int]:
        query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        return {status: n for status, n in self.conn.execute(query)}

    # Processing ----------------------------------------------------------------------------------

    def any_work(self, now: datetime) -> bool:
        """Is a delivery due, a lease expired or an ignored or rejected receipt not audited yet?
        (Three index probes: two on ix_deliveries_due, one on ix_deliveries_unaudited.)"""
        due = select(deliveries.c.id).where(
            deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now
        )
        expired = select(deliveries.c.id).where(
            deliveries.c.status == "processing", deliveries.c.lease_expires_at < now
        )
        if any(self.conn.execute(q.limit(1)).first() is not None for q in (due, expired)):
            return True
        return bool(self.unaudited_receipts(1))

    def reclaim_expired_leases(self, now: datetime) -> int:
        """Deliveries whose worker stopped mid-way go back in the queue."""
        return self.conn.execute(
            update(deliveries)
            .where(deliveries.c.status == "processing", deliveries.c.lease_expires_at < now)
            .values(
                status="queued", lease_owner=None, lease_expires_at=None, next_attempt_at=now, updated_at=now
            )
        ).rowcount

    def claim_due(self, now: datetime, worker_id: str, lease_until: datetime, limit: int) -> list[str]:
        """Lease up to ``limit`` queued deliveries that are due, oldest first."""
        ids = self.due_ids(now, limit)
        if ids:
            self.lease(ids, worker_id, lease_until, now)
        return ids

    def claim_batch(
        self, now: datetime, worker_id: str, lease_until: datetime, limit: int, *, urgent_first: bool = True
    ) -> list[dict[str, Any]]:
        """Lease up to ``limit`` queued deliveries that are due and return them whole: the
        urgent ones (``priority > 0``) if any is due, else the ordinary ones, oldest first.

        Oldest first is by due time, then by id (time-ordered, so arrival order even for
        deliveries stored at the same instant: a contact's STOP and START stay in order); that is
        the order of ix_deliveries_urgent and ix_deliveries_due, so a claim reads only the rows it
        takes. A claim that finds urgent deliveries takes only those, so they settle in a small
        batch of their own instead of waiting for a full one; a deep queue of ordinary deliveries
        costs the urgent probe one look into an index that holds only the queued urgent ones.
        ``urgent_first=False`` claims strictly in due order, whatever the priority.

        The due ones are picked ``FOR UPDATE SKIP LOCKED`` in a statement of their own: as a
        subquery of the UPDATE, PostgreSQL may run it again for each row and lease far more than
        ``limit``."""
        ids = self.due_urgent(now, limit) if urgent_first else []
        if not ids:
            ids = self.due_ids(now, limit)
        if not ids:
            return []
        claimed = self.conn.execute(_leasing(ids, worker_id, lease_until, now).returning(*deliveries.c))
        names = tuple(claimed.keys())
        rows = [dict(zip(names, r, strict=True)) for r in claimed]
        rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
        return rows

    def due_urgent(self, now: datetime, limit: int) -> list[str]:
        """The ids of up to ``limit`` due urgent deliveries, oldest first, locked (``SKIP LOCKED``
        on PostgreSQL). The predicate is written out as the partial index ix_deliveries_urgent
        has it (a bound parameter would not match it), and SQLite is told to use that index:
        even with statistics it would rather walk ix_deliveries_due, which is in due order too,
        over every queued delivery."""
        sqlite = self.conn.dialect.name == "sqlite"
        stamp = receipt_time(self.conn.dialect.name)(now)
        return [
            r[0]
            for r in execute_raw(self.conn, _URGENT_SQLITE if sqlite else _URGENT_POSTGRESQL, (stamp, limit))
        ]

    def due_ids(self, now: datetime, limit: int) -> list[str]:
        """The ids of up to ``limit`` due deliveries of any priority, oldest first, locked
        (``SKIP LOCKED`` on PostgreSQL): a range of ix_deliveries_due."""
        query = (
            select(deliveries.c.id)
            .where(deliveries.c.status == "queued", deliveries.c.next_attempt_at <= now)
            .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(self.conn.execute(query).scalars())

    def extend_leases(self, ids: list[str], worker_id: str, lease_until: datetime) -> None:
        """Keep holding deliveries this worker still has in hand (a long batch)."""
        if ids:
            self.conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id.in_(ids),
                    deliveries.c.status == "processing",
                    deliveries.c.lease_owner == worker_id,
                )
                .values(lease_expires_at=lease_until)
            )

    def lease(self, ids: list[str], worker_id: str, lease_until: datetime, now: datetime) -> set[str]:
        """Lease these queued deliveries to ``worker_id``; return the ones it got."""
        result = self.conn.execute(_leasing(ids, worker_id, lease_until, now).returning(deliveries.c.id))
        return set(result.scalars())

    def release(self, ids: list[str], worker_id: str, now: datetime) -> int:
        """Back to the queue, due at once, without counting the attempt."""
        return self.conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_(ids),
                deliveries.c.status == "processing",
                deliveries.c.lease_owner == worker_id,
            )
            .values(
                status="queued",
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=now,
                attempts=deliveries.c.attempts - 1,
                updated_at=now,
            )
        ).rowcount

    def get_leased(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """The delivery, if ``worker_id`` holds its lease (no row lock: for reading before acting)."""
        row = (
            self.conn.execute(
                select(deliveries).where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == "processing",
                    deliveries.c.lease_owner == worker_id,
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def load_leased(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """The delivery, if ``worker_id`` still holds its lease (locked for the rest of the transaction)."""
        row = (
            self.conn.execute(
                select(deliveries)
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == "processing",
                    deliveries.c.lease_owner == worker_id,
                )
                .with_for_update()
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def lock_leased(self, ids: list[str], worker_id: str) -> set[str]:
        """Which of these deliveries ``worker_id`` still holds, locked for the rest of the
        transaction (PostgreSQL; SQLite's write transaction already excludes every other writer)."""
        if not ids:
            return set()
        query = select(deliveries.c.id).where(
            deliveries.c.id.in_(ids),
            deliveries.c.status == "processing",
            deliveries.c.lease_owner == worker_id,
        )
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return set(self.conn.execute(query).scalars())

    def finish_many(self, worker_id: str, rows: list[dict[str, Any]]) -> set[str]:
        """Leave the processing state, each delivery with its own values (``{"id", column: …}``,
        the same columns in every row), in one statement per set of columns; return the ids this
        worker still held."""
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(row), []).append(
                {**row, "lease_owner": None, "lease_expires_at": None}
            )
        held: set[str] = set()
        for group in by_columns.values():
            where = "t.status = 'processing' AND t.lease_owner = ?"
            held.update(
                bulk_update(
                    self.conn, deliveries, group, where=where, where_params=(worker_id,), returning=True
                )
            )
        return held

    def finish(self, delivery_id: str, worker_id: str, values: dict[str, Any]) -> bool:
        """Leave the processing state with ``values`` (status, results, errors, ...); False if the
        lease was lost in the meantime."""
        result = self.conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == delivery_id,
                deliveries.c.status == "processing",
                deliveries.c.lease_owner == worker_id,
            )
            .values(lease_owner=None, lease_expires_at=None, **values)
        )
        return result.rowcount == 1

    def requeue(self, org_id: str, delivery_id: str, now: datetime, statuses: tuple[str, ...]) -> bool:
        """Queue a delivery again (a replay): attempts start over, the history stays."""
        result = self.conn.execute(
            update(deliveries)
            .where(
                deliveries.c.org_id == org_id,
                deliveries.c.id == delivery_id,
                deliveries.c.status.in_(statuses),
            )
            .values(
                status="queued",
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_expires_at=None,
                replays=deliveries.c.replays + 1,
                updated_at=now,
            )
        )
        return result.rowcount == 1

    # Retention -----------------------------------------------------------------------------------

    def prune_candidates(
        self, org_id: str, received_before: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """The organization's next ``limit`` deliveries received before ``received_before``, oldest
        first, after the (received_at, id) ``after`` (a range of ix_deliveries_org_received)."""
        query = select(
            deliveries.c.id, deliveries.c.status, deliveries.c.received_at, deliveries.c.updated_at
        ).where(deliveries.c.org_id == org_id, deliveries.c.received_at < received_before)
        if after:
            at, last_id = after
            query = query.where(
                or_(
                    deliveries.c.received_at > at,
                    and_(deliveries.c.received_at == at, deliveries.c.id > last_id),
                )
            )
        query = query.order_by(deliveries.c.received_at, deliveries.c.id).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def delete_finished(
        self, ids: list[str], statuses: tuple[str, ...], untouched_since: datetime
    ) -> tuple[int, int]:
        """Delete those of ``ids`` still in ``statuses`` and unchanged since ``untouched_since``, with
        their dedupe keys; return (deliveries, keys) deleted. The rows are locked first, so a replay
        racing the prune either wins (and the delivery stays) or finds it gone. A delivery whose
        receipt the worker has not audited yet stays until it has."""
        if not ids:
            return 0, 0
        locked = list(
            self.conn.execute(
                select(deliveries.c.id)
                .where(
                    deliveries.c.id.in_(ids),
                    deliveries.c.status.in_(statuses),
                    deliveries.c.updated_at < untouched_since,
                    deliveries.c.receipt_audited == true(),  # else its audit event is still to come
                )
                .with_for_update()
            ).scalars()
        )
        if not locked:
            return 0, 0
        keys = self.conn.execute(
            delete(delivery_keys).where(delivery_keys.c.delivery_id.in_(locked))
        ).rowcount
        rows = self.conn.execute(delete(deliveries).where(deliveries.c.id.in_(locked))).rowcount
        return rows, keys


def _leasing(ids: list[str], worker_id: str, lease_until: datetime, now: datetime):
    """The update that leases these queued deliveries to ``worker_id`` (an attempt counted)."""
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(ids), deliveries.c.status == "queued")
        .values(
            status="processing",
            lease_owner=worker_id,
            lease_expires_at=lease_until,
            attempts=deliveries.c.attempts + 1,
            updated_at=now,
        )
    )
