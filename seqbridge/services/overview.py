"""The console's overview: deliveries per minute by status, ingest-to-action latency, the
backlog and its oldest item, dead and failed counts, and whether a worker is alive.

Everything comes from GROUP BY queries over time buckets (:mod:`seqbridge.storage.delivery_stats`);
percentiles are read from a latency histogram, so their resolution is the histogram's slots
(10 ms … 1 h, interpolated linearly within a slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest
from seqbridge.services.common import format_time
from seqbridge.storage.db import Database
from seqbridge.storage.delivery_stats import LATENCY_BOUNDS_MS

#: Statuses in the order the charts stack them.
CHART_STATUSES = ("processed", "queued", "processing", "failed", "dead", "rejected", "ignored")


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    bucket_seconds: int
    label: str


WINDOWS = {
    "1h": Window("1h", timedelta(hours=1), 60, "last hour, per minute"),
    "24h": Window("24h", timedelta(hours=24), 600, "last 24 hours, per minute (10-minute averages)"),
}


def percentile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds of a histogram over ``LATENCY_BOUNDS_MS``."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for slot, n in enumerate(counts):
        if n and seen + n >= rank:
            if slot >= len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])
            low = LATENCY_BOUNDS_MS[slot - 1] if slot else 0
            high = LATENCY_BOUNDS_MS[slot]
            return low + (high - low) * (rank - seen) / n
        seen += n
    return float(LATENCY_BOUNDS_MS[-1])


class OverviewService:
    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any]) -> None:
        self.db = db
        self.clock = clock
        # A worker heartbeats at least every lease/3 (seqbridge.worker.processor).
        self.alive_within = timedelta(seconds=max(30, settings["PROCESSOR_LEASE_SECONDS"]))

    def window(self, name: str | None) -> Window:
        """The named chart window (``1h`` or ``24h``). Raises :class:`BadRequest` otherwise."""
        try:
            return WINDOWS[name or "1h"]
        except KeyError:
            raise BadRequest(f"range must be one of {', '.join(WINDOWS)}", code="invalid_range") from None

    def charts(
        self,
        caller: Caller,
        window: Window,
        hook: str | None,
        *,
        with_latency: bool = True,
        per_hook: bool = False,
    ) -> dict[str, Any]:
        """Deliveries per minute by status and latency p50 / p99, per time bucket of ``window``,
        and the window's totals (overall, per status, per hook). ``with_latency=False`` leaves
        the latency out (the costlier half: the overview page loads the day's latency apart);
        ``per_hook`` adds each hook's total."""
        now = self.clock.now()
        size = window.bucket_seconds
        first = int((now - window.span).timestamp()) // size + 1
        last = int(now.timestamp()) // size
        buckets = list(range(first, last + 1))
        edges = [datetime.fromtimestamp(b * size, tz=UTC) for b in [*buckets, last + 1]]
        with self.db.transaction(write=False) as tx:
            if with_latency:
                counts, latency = tx.delivery_stats.counts_and_latency(caller.org_id, edges, hook)
            else:
                counts, latency = tx.delivery_stats.counts_by_bucket(caller.org_id, edges, hook), []
            by_hook = {}
            if per_hook:
                hooks = [hook] if hook else tx.delivery_stats.hooks_with_deliveries(caller.org_id)
                by_hook = tx.delivery_stats.counts_by_hook(caller.org_id, edges[0], hooks)
        per_minute = 60 / size
        series = {s: [0.0] * len(buckets) for s in CHART_STATUSES}
        totals: dict[str, int] = dict.fromkeys(CHART_STATUSES, 0)
        for i, row in enumerate(counts):
            for status in CHART_STATUSES:
                series[status][i] = round(row[status] * per_minute, 3)
                totals[status] += row[status]
        histograms: list[list[int]] = [[0] * (len(LATENCY_BOUNDS_MS) + 1) for _ in buckets]
        overall = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for i, row in enumerate(latency):
            cumulative = [*row["le"], row["n"]]
            for slot, upto in enumerate(cumulative):
                n = upto - (cumulative[slot - 1] if slot else 0)
                histograms[i][slot] += n
                overall[slot] += n
        hook_totals = {h: sum(c.values()) for h, c in by_hook.items()}
        return {
            "window": window.name,
            "label": window.label,
            "hook": hook,
            "x": [b * size for b in buckets],
            "series": series,
            "totals": totals,
            "per_hook": dict(sorted(hook_totals.items(), key=lambda kv: -kv[1])),
            "has_latency": with_latency,
            "latency": {
                "p50": [percentile(h, 0.5) for h in histograms],
                "p99": [percentile(h, 0.99) for h in histograms],
            },
            "latency_overall": {
                "p50": percentile(overall, 0.5),
                "p99": percentile(overall, 0.99),
                "count": sum(overall),
            },
        }

    def health(self, caller: Caller) -> dict[str, Any]:
        """The backlog (queued, retrying, in progress) with the age of its oldest item, the dead
        and failed counts, and the workers with whether each is alive."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            summary = tx.delivery_stats.status_summary(
                caller.org_id, ("queued", "processing", "failed", "dead")
            )
            workers = tx.delivery_stats.workers()
            hooks = tx.delivery_stats.hooks_with_deliveries(caller.org_id)
        queued = summary.get("queued", {"count": 0, "attempted": 0, "oldest": None})
        processing = summary.get("processing", {"count": 0, "attempted": 0, "oldest": None})
        oldest = min((s["oldest"] for s in (queued, processing) if s["oldest"]), default=None)
        shown = []
        for w in workers:
            alive = w["stopped_at"] is None and now - w["heartbeat_at"] <= self.alive_within
            shown.append(
                {
                    "id": w["id"],
                    "alive": alive,
                    "started_at": format_time(w["started_at"]),
                    "heartbeat_at": format_time(w["heartbeat_at"]),
                    "stopped_at": format_time(w["stopped_at"]),
                    "processed": w["processed"],
                }
            )
        return {
            "backlog": {
                "queued": queued["count"] - queued["attempted"],
                "retrying": queued["attempted"],
                "processing": processing["count"],
                "oldest_at": format_time(oldest),
                "oldest_age_seconds": (now - oldest).total_seconds() if oldest else None,
            },
            "failed": summary.get("failed", {}).get("count", 0),
            "dead": summary.get("dead", {}).get("count", 0),
            "workers": shown,
            "worker_alive": any(w["alive"] for w in shown),
            "hooks": hooks,
        }
