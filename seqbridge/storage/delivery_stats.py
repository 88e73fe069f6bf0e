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
# SQLite's julianday() is a double of about 2.46e6 days: a difference of two is good to about
# 0.05 ms, so a delivery that took exactly a bound may come out a few hundredths above it.
JULIANDAY_SLACK_MS = 0.06


class DeliveryStatsStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.postgresql = conn.dialect.name == "postgresql"

    def _epoch(self, column) -> ColumnElement:
        """Seconds since 1970 of a timestamp column (stored as naive UTC on both engines)."""
        if self.postgresql:  # date_part is double precision; EXTRACT is numeric, several times slower
            return cast(func.date_part("epoch", column), Integer)
        return cast(func.strftime("%s", column), Integer)

    def _bucket(self, column, seconds: int) -> ColumnElement:
        return (self._epoch(column) // seconds).label("bucket")  # integer division: few groups

    def _latency_ms(self) -> ColumnElement:
        if self.postgresql:
            return func.date_part("epoch", deliveries.c.processed_at - deliveries.c.received_at) * 1000
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

        SQLite: one correlated subquery per bucket reads its range of
        ix_deliveries_org_status_received (covering) and aggregates it into a JSON array: no sort
        of the whole window (a GROUP BY bucket sorted every row). The inner query is kept from
        being flattened (LIMIT -1) so each latency is computed once, not once per bound: its two
        julianday() are most of the cost. PostgreSQL: one grouped pass (below)."""
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
        timed = timed.limit(-1).correlate(buckets).subquery("timed")
        histogram = (
            select(
                func.json_array(
                    func.count(),
                    *(
                        func.sum(case((timed.c.latency <= b + JULIANDAY_SLACK_MS, 1), else_=0))
                        for b in LATENCY_BOUNDS_MS
                    ),
                )
            )
            .select_from(timed)
            .scalar_subquery()
        )
        out = []
        for lo, packed in self.conn.execute(select(buckets.c.lo, histogram)):
            counts = json.loads(packed)
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

    def counts_and_latency(
        self, org_id: str, edges: list[datetime], hook: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`counts_by_bucket` and :meth:`latency_histogram` together. On PostgreSQL that
        is one grouped pass over the window (bucket, status, latency bin), half the rows read
        of the two apart; SQLite answers each from its covering index."""
        if self.postgresql:
            return self._grouped_pass(org_id, edges, hook, with_counts=True)
        return self.counts_by_bucket(org_id, edges, hook), self.latency_histogram(org_id, edges, hook)

    def _latency_grouped(self, org_id: str, edges: list[datetime], hook: str | None) -> list[dict[str, Any]]:
        return self._grouped_pass(org_id, edges, hook, with_counts=False)[1]

    def _grouped_pass(self, org_id: str, edges: list[datetime], hook: str | None, *, with_counts: bool):
        """PostgreSQL: one grouped pass, each timed row's latency put in its histogram bin by one
        ``width_bucket`` (not a CASE per bound: that was most of the cost), cumulated here;
        with the counts, every status is grouped and untimed rows have no bin."""
        bounds = literal_column("ARRAY[" + ",".join(str(b) for b in LATENCY_BOUNDS_MS) + "]::float8[]")
        # width_bucket gives how many bounds are <= the latency; a latency equal to a bound belongs
        # to that bound's bin ("at most"), hence the nudge below it.
        timed = deliveries.c.status.in_(("processed", "failed")) & deliveries.c.processed_at.is_not(None)
        bin_ = case((timed, func.width_bucket(self._latency_ms() - 0.000001, bounds))).label("bin")
        statuses = ALL_STATUSES if with_counts else ("processed", "failed")
        size, query = self._grouped(
            org_id, edges, hook, [deliveries.c.status, bin_, func.count().label("n")], statuses
        )
        if not with_counts:
            query = query.where(deliveries.c.processed_at.is_not(None))
        query = query.group_by(literal_column("bucket"), deliveries.c.status, literal_column("bin"))
        width = len(LATENCY_BOUNDS_MS) + 1
        binned: dict[int, list[int]] = {}
        counted: dict[tuple[int, str], int] = {}
        for bucket, status, bin_index, n in self.conn.execute(query):
            counted[(int(bucket), status)] = counted.get((int(bucket), status), 0) + int(n)
            if bin_index is not None:
                binned.setdefault(int(bucket), [0] * width)[int(bin_index)] += int(n)
        counts, latency = [], []
        for lo in edges[:-1]:
            key = int(lo.timestamp()) // size
            counts.append({"lo": lo, **{s: counted.get((key, s), 0) for s in ALL_STATUSES}})
            bins = binned.get(key, [0] * width)
            le, running = [], 0
            for count in bins[:-1]:  # bins[k]: latency in (bound k-1, bound k]; the last is open
                running += count
                le.append(running)
            latency.append({"lo": lo, "n": sum(bins), "le": le})
        return counts, latency

    def _buckets(self, edges: list[datetime]):
        """A CTE of (lo, hi) rows, one per time bucket."""
        return (
            values(column("lo", UTCDateTime()), column("hi", UTCDateTime()), name="buckets")
            .data(list(pairwise(edges)))
            .cte("buckets")
        )

    def hooks_with_deliveries(self, org_id: str) -> list[str]:
        """Every hook that has a stored delivery, in name order: a skip scan of
        ix_deliveries_org_hook_received_id, one index probe per hook (a GROUP BY read every
        delivery of the organization: 57 ms for 100,000 on PostgreSQL)."""
        first = select(func.min(deliveries.c.hook).label("hook")).where(deliveries.c.org_id == org_id)
        found = first.cte("found", recursive=True)
        following = (
            select(deliveries.c.hook)
            .where(deliveries.c.org_id == org_id, deliveries.c.hook > found.c.hook)
            .order_by(deliveries.c.hook)
            .limit(1)
            .scalar_subquery()
        )
        found = found.union_all(select(following.label("hook")).where(found.c.hook.is_not(None)))
        query = select(found.c.hook).where(found.c.hook.is_not(None))
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
