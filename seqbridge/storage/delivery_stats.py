"""Aggregates over webhook deliveries for the console's overview, and its searches: every chart
is a GROUP BY over time buckets read from an index, never rows loaded into Python."""

from __future__ import annotations

import json
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import Integer, case, cast, column, func, literal_column, select, values
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from seqbridge.storage.schema import deliveries, delivery_keys, workers
from seqbridge.storage.types import UTCDateTime

#: Every delivery status: naming them all lets the planner read ix_deliveries_org_status_received
#: (status is its second column) as a covering index, one range per status.
ALL_STATUSES = ("queued", "processing", "processed", "failed", "dead", "rejected", "ignored")

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
        return (self._epoch(column) // seconds).label("bucket")  # integer division: few groups

    def _latency_ms(self) -> ColumnElement:
        if self.postgresql:
            return func.extract("epoch", deliveries.c.processed_at - deliveries.c.received_at) * 1000
        return (
            func.julianday(deliveries.c.processed_at) - func.julianday(deliveries.c.received_at)
        ) * 86_400_000

    def counts_by_bucket(self, org_id: str, edges: list[datetime], hook: str | None) -> list[dict[str, Any]]:
        """Per time bucket [edges[i], edges[i+1]): ``{"lo": edges[i], <status>: n, ...}``.

        One count per bucket and status, each a range of ix_deliveries_org_status_received read
        as a covering index: every row in the window is read once and nothing is sorted (a
        GROUP BY over a computed bucket sorted every row, 10x slower on SQLite)."""
        if self.postgresql:
            return self._counts_grouped(org_id, edges, hook)
        buckets = self._buckets(edges)
        counts = []
        for status in ALL_STATUSES:
            count = (
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.org_id == org_id,
                    deliveries.c.status == status,
                    deliveries.c.received_at >= buckets.c.lo,
                    deliveries.c.received_at < buckets.c.hi,
                )
            )
            if hook:
                count = count.where(deliveries.c.hook == hook)
            counts.append(count.scalar_subquery().label(status))
        query = select(buckets.c.lo, *counts)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def latency_histogram(self, org_id: str, edges: list[datetime], hook: str | None) -> list[dict[str, Any]]:
        """Per time bucket [edges[i], edges[i+1]): ``{"lo": edges[i], "n": processed deliveries,
        "le": [how many took at most LATENCY_BOUNDS_MS[k] from receipt to action, for each k]}``.

        One correlated subquery per bucket reads its range of ix_deliveries_org_status_received
        (covering) and aggregates it into a JSON array: no sort of the whole window (a GROUP BY
        bucket sorted every row). The inner query is kept from being flattened (LIMIT -1 on
        SQLite, OFFSET 0 on PostgreSQL) so each latency is computed once, not once per bound:
        on SQLite its two julianday() are most of the cost."""
        if self.postgresql:
            return self._latency_grouped(org_id, edges, hook)
        buckets = self._buckets(edges)
        timed = select(self._latency_ms().label("latency")).where(
            deliveries.c.org_id == org_id,
            deliveries.c.status.in_(("processed", "failed")),
            deliveries.c.received_at >= buckets.c.lo,
            deliveries.c.received_at < buckets.c.hi,
            deliveries.c.processed_at.is_not(None),
        )
        if hook:
            timed = timed.where(deliveries.c.hook == hook)
        timed = (timed.offset(0) if self.postgresql else timed.limit(-1)).correlate(buckets).subquery("timed")
        array = func.json_build_array if self.postgresql else func.json_array
        histogram = (
            select(
                array(
                    func.count(),
                    *(func.sum(case((timed.c.latency <= b, 1), else_=0)) for b in LATENCY_BOUNDS_MS),
                )
            )
            .select_from(timed)
            .scalar_subquery()
        )
        out = []
        for lo, packed in self.conn.execute(select(buckets.c.lo, histogram)):
            counts = packed if isinstance(packed, list) else json.loads(packed)
            out.append({"lo": lo, "n": int(counts[0]), "le": [int(c or 0) for c in counts[1:]]})
        return out

    # PostgreSQL aggregates a GROUP BY in a hash table (no sort), and a correlated subquery costs
    # it an executor start per bucket: there one grouped pass over the index is the cheaper plan.

    def _grouped(self, org_id: str, edges: list[datetime], hook: str | None, columns, statuses):
        size = int((edges[1] - edges[0]).total_seconds())
        bucket = self._bucket(deliveries.c.received_at, size)
        query = select(bucket, *columns).where(
            deliveries.c.org_id == org_id,
            deliveries.c.status.in_(statuses),
            deliveries.c.received_at >= edges[0],
            deliveries.c.received_at < edges[-1],
        )
        if hook:
            query = query.where(deliveries.c.hook == hook)
        return size, query

    def _counts_grouped(self, org_id: str, edges: list[datetime], hook: str | None) -> list[dict[str, Any]]:
        size, query = self._grouped(
            org_id, edges, hook, [deliveries.c.status, func.count().label("n")], ALL_STATUSES
        )
        found: dict[tuple[int, str], int] = {}
        for bucket, status, n in self.conn.execute(
            query.group_by(literal_column("bucket"), deliveries.c.status)
        ):
            found[(int(bucket), status)] = int(n)
        return [
            {"lo": lo, **{s: found.get((int(lo.timestamp()) // size, s), 0) for s in ALL_STATUSES}}
            for lo in edges[:-1]
        ]

    def _latency_grouped(self, org_id: str, edges: list[datetime], hook: str | None) -> list[dict[str, Any]]:
        latency = self._latency_ms()
        columns = [func.count().label("n")] + [
            func.sum(case((latency <= b, 1), else_=0)).label(f"le{i}")
            for i, b in enumerate(LATENCY_BOUNDS_MS)
        ]
        size, query = self._grouped(org_id, edges, hook, columns, ("processed", "failed"))
        query = query.where(deliveries.c.processed_at.is_not(None)).group_by(literal_column("bucket"))
        found = {int(r["bucket"]): r for r in self.conn.execute(query).mappings()}
        out = []
        for lo in edges[:-1]:
            row = found.get(int(lo.timestamp()) // size)
            n = int(row["n"]) if row else 0
            le = [int(row[f"le{i}"] or 0) if row else 0 for i in range(len(LATENCY_BOUNDS_MS))]
            out.append({"lo": lo, "n": n, "le": le})
        return out

    def _buckets(self, edges: list[datetime]):
        """A CTE of (lo, hi) rows, one per time bucket."""
        return (
            values(column("lo", UTCDateTime()), column("hi", UTCDateTime()), name="buckets")
            .data(list(pairwise(edges)))
            .cte("buckets")
        )

    def hooks_with_deliveries(self, org_id: str) -> list[str]:
        """Every hook that has a stored delivery (ix_deliveries_org_hook_received, in index order)."""
        query = select(deliveries.c.hook).where(deliveries.c.org_id == org_id).group_by(deliveries.c.hook)
        return list(self.conn.execute(query).scalars())

    def counts_by_hook(self, org_id: str, since: datetime, hooks: list[str]) -> dict[str, dict[str, int]]:
        """Deliveries received since ``since`` per hook and status, in one statement of covering
        counts: each hook's total from ix_deliveries_org_hook_received, its rarer statuses from
        ix_deliveries_org_status_received, and ``processed`` (most of them) as the difference."""
        if not hooks:
            return {}
        rare = [s for s in ALL_STATUSES if s != "processed"]
        counts = []
        for h, hook in enumerate(hooks):
            total = (
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.org_id == org_id,
                    deliveries.c.hook == hook,
                    deliveries.c.received_at >= since,
                )
            )
            counts.append(total.scalar_subquery().label(f"t{h}"))
            for status in rare:
                count = (
                    select(func.count())
                    .select_from(deliveries)
                    .where(
                        deliveries.c.org_id == org_id,
                        deliveries.c.status == status,
                        deliveries.c.received_at >= since,
                        deliveries.c.hook == hook,
                    )
                )
                counts.append(count.scalar_subquery().label(f"h{h}_{status}"))
        row = self.conn.execute(select(*counts)).mappings().first()
        out: dict[str, dict[str, int]] = {}
        for h, hook in enumerate(hooks):
            per = {s: int(row[f"h{h}_{s}"]) for s in rare}
            per["processed"] = int(row[f"t{h}"]) - sum(per.values())
            per = {s: n for s, n in per.items() if n}
            if per:
                out[hook] = dict(sorted(per.items()))
        return out

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
