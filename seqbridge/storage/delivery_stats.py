"""Aggregates over webhook deliveries for the console's overview, and its searches: every chart
is a GROUP BY over time buckets read from an index, never rows loaded into Python."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, case, cast, func, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from seqbridge.storage.schema import deliveries, delivery_keys, workers

#: Upper bounds (milliseconds) of the ingest-to-action latency histogram; the last is open.
LATENCY_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000)


class DeliveryStatsStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgresql = conn.dialect.name == "postgresql"

    def _epoch(self, column) -> ColumnElement:
        """Seconds since 1970 of a timestamp column (stored as naive UTC on both engines)."""
        if self.postgresql:
            return cast(func.extract("epoch", column), Integer)
        return cast(func.strftime("%s", column), Integer)

    def _bucket(self, column, seconds: int) -> ColumnElement:
        return (self._epoch(column) / seconds).label("bucket")

    def _latency_ms(self) -> ColumnElement:
        if self.postgresql:
            return func.extract("epoch", deliveries.c.processed_at - deliveries.c.received_at) * 1000
        return (
            func.julianday(deliveries.c.processed_at) - func.julianday(deliveries.c.received_at)
        ) * 86_400_000

    def counts_by_bucket(
        self, org_id: str, since: datetime, seconds: int, hook: str | None
    ) -> list[dict[str, Any]]:
        """(bucket, hook, status, n): deliveries received since ``since`` per time bucket of
        ``seconds`` (bucket = epoch seconds // seconds)."""
        bucket = self._bucket(deliveries.c.received_at, seconds)
        query = select(bucket, deliveries.c.hook, deliveries.c.status, func.count().label("n")).where(
            deliveries.c.org_id == org_id, deliveries.c.received_at >= since
        )
        if hook:
            query = query.where(deliveries.c.hook == hook)
        query = query.group_by(literal_column("bucket"), deliveries.c.hook, deliveries.c.status)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def latency_histogram(
        self, org_id: str, since: datetime, seconds: int, hook: str | None
    ) -> list[dict[str, Any]]:
        """(bucket, slot, n): processed deliveries per time bucket and latency slot, where slot i
        counts latencies up to ``LATENCY_BOUNDS_MS[i]`` (and the last slot everything above)."""
        latency = self._latency_ms()
        slot = case(
            *((latency <= bound, index) for index, bound in enumerate(LATENCY_BOUNDS_MS)),
            else_=len(LATENCY_BOUNDS_MS),
        ).label("slot")
        bucket = self._bucket(deliveries.c.received_at, seconds)
        query = select(bucket, slot, func.count().label("n")).where(
            deliveries.c.org_id == org_id,
            deliveries.c.received_at >= since,
            deliveries.c.status.in_(("processed", "failed")),
            deliveries.c.processed_at.is_not(None),
        )
        if hook:
            query = query.where(deliveries.c.hook == hook)
        query = query.group_by(literal_column("bucket"), literal_column("slot"))
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def status_summary(self, org_id: str, statuses: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Per status: how many, how many already attempted, and the oldest received_at (one range
        of ix_deliveries_org_status_received each)."""
        query = (
            select(
                deliveries.c.status,
                func.count().label("n"),
                func.sum(case((deliveries.c.attempts > 0, 1), else_=0)).label("attempted"),
                func.min(deliveries.c.received_at).label("oldest"),
            )
            .where(deliveries.c.org_id == org_id, deliveries.c.status.in_(statuses))
            .group_by(deliveries.c.status)
        )
        out = {}
        for row in self.conn.execute(query).mappings():
            oldest = row["oldest"]
            if isinstance(oldest, str):  # SQLite's min() returns the stored text, not a datetime
                oldest = deliveries.c.received_at.type.process_result_value(
                    datetime.fromisoformat(oldest), self.conn.dialect
                )
            elif oldest is not None and oldest.tzinfo is None:
                oldest = deliveries.c.received_at.type.process_result_value(oldest, self.conn.dialect)
            out[row["status"]] = {
                "count": int(row["n"]),
                "attempted": int(row["attempted"] or 0),
                "oldest": oldest,
            }
        return out

    def hooks_seen(self, org_id: str, since: datetime) -> list[str]:
        """The hooks that received anything since ``since`` (a range of ix_deliveries_org_received)."""
        query = (
            select(deliveries.c.hook)
            .where(deliveries.c.org_id == org_id, deliveries.c.received_at >= since)
            .group_by(deliveries.c.hook)
        )
        return sorted(self.conn.execute(query).scalars())

    def find_by_dedupe_key(self, org_id: str, key: str, limit: int = 20) -> list[str]:
        """Ids of the deliveries that carried this provider id (on any hook)."""
        query = (
            select(delivery_keys.c.delivery_id)
            .where(delivery_keys.c.org_id == org_id, delivery_keys.c.dedupe_key == key)
            .limit(limit)
        )
        return list(self.conn.execute(query).scalars())

    def summaries(self, org_id: str, ids: list[str], *, with_events: bool = False) -> list[dict[str, Any]]:
        """The list-view columns of these deliveries (and their parsed events), newest first."""
        if not ids:
            return []
        left_out = ("body", "results", "headers", "query") + (() if with_events else ("events",))
        columns = [c for c in deliveries.c if c.name not in left_out]
        query = (
            select(*columns)
            .where(deliveries.c.org_id == org_id, deliveries.c.id.in_(ids))
            .order_by(deliveries.c.received_at.desc(), deliveries.c.id.desc())
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def workers(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recently seen workers (running first)."""
        query = select(workers).order_by(workers.c.heartbeat_at.desc()).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]
