"""A delivery's attempt, acted and recorded: its local actions carried out in order (the results
per event), whether it is done or failed, what its row becomes and its audit event, and its log
line and counters. :mod:`seqbridge.services.processing` calls these, once per delivery, inside
the settling transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from seqbridge import metrics
from seqbridge.audit import record, redact
from seqbridge.jobs import Dead, Done, Failed, Outcome, OutcomeKind
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import PlannedEvent
from seqbridge.services.actions import LocalTarget
from seqbridge.services.common import format_time
from seqbridge.services.inbox import DeliveryStatus, delivery_tag, hook_caller
from seqbridge.storage.tx import Tx

log = logging.getLogger("seqbridge.deliveries")


@dataclass(frozen=True)
class PreparedEvent:
    """One event of a delivery, planned, with the outcomes of its remote actions (by index)."""

    planned: PlannedEvent
    remote: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Prepared:
    """What running a delivery gave: its hook and its events, ready for the local actions."""

    hook: Hook
    events: tuple[PreparedEvent, ...]


@dataclass(frozen=True)
class Settled:
    """A delivery as its attempt left it (``row`` updated), for the log, metrics and the inline
    answer of ``respond: after_actions`` hooks."""

    row: dict[str, Any]
    outcome: Outcome


def acted(local: LocalTarget, row: dict[str, Any], prepared: Prepared) -> Done | Failed:
    """Carry out the local actions; the delivery is done, or failed if something failed."""
    results = act_locally(local, row, prepared)
    if _failed(prepared.hook, results):
        return Failed("an event or action failed", results)
    return Done(results)


def act_locally(local: LocalTarget, row: dict[str, Any], prepared: Prepared) -> list[dict[str, Any]]:
    """Carry out the local actions of every event, in order; return the results per event."""
    results = []
    for event in prepared.events:
        planned = event.planned
        entry: dict[str, Any] = {"dedupe_key": planned.dedupe_key, "kind": planned.kind, "actions": []}
        if planned.error is not None:
            results.append({**entry, "rules": [], "error": planned.error})
            continue
        entry["rules"] = list(planned.rules)
        if not planned.matched:
            entry["unmatched"] = True
        caller = hook_caller(
            row["org_id"],
            prepared.hook.name,
            row["request_id"],
            delivery_id=row["id"],
            rule=", ".join(planned.rules) or None,
            event=planned.dedupe_key,
        )
        for a, action in enumerate(planned.actions):
            outcome = event.remote[a] if a in event.remote else local.run(caller, action)
            entry["actions"].append({**redact(action), "outcome": outcome})
        results.append(entry)
    return results


def settled_values(
    tx: Tx, row: dict[str, Any], outcome: Outcome, now: datetime, events: list | None = None
) -> dict[str, Any]:
    """What the delivery's row becomes with ``outcome`` (the same columns whatever it is, and
    ``events`` when the inbox left them to be read), and its audit event (processed, failed
    or dead; an attempt that will be retried has none)."""
    caller = hook_caller(row["org_id"], row["hook"], row["request_id"], delivery_id=row["id"])
    values: dict[str, Any] = {
        "status": row["status"],
        "results": row["results"],
        "errors": row["errors"],
        "next_attempt_at": row["next_attempt_at"],
        "processed_at": row["processed_at"],
        "updated_at": now,
    }
    if events is not None:
        values["events"] = events
    if isinstance(outcome, Done | Failed):
        results = outcome.result
        status = DeliveryStatus.PROCESSED if isinstance(outcome, Done) else DeliveryStatus.FAILED
        values.update(status=status.value, results=results, processed_at=now)
        record(
            tx,
            caller,
            delivery_tag(caller, "failed" if isinstance(outcome, Failed) else "processed"),
            "delivery",
            row["id"],
            {"hook": row["hook"], "status": status.value, **_summary(results)},
            now,
        )
    else:  # Retry or Dead: the attempt failed
        values["errors"] = [
            *(row["errors"] or []),
            {"at": format_time(now), "attempt": row["attempts"], "error": outcome.error},
        ]
        if isinstance(outcome, Dead):
            values.update(status=DeliveryStatus.DEAD.value, next_attempt_at=None)
            record(
                tx,
                caller,
                delivery_tag(caller, "dead"),
                "delivery",
                row["id"],
                {"hook": row["hook"], "attempts": row["attempts"], "error": outcome.error},
                now,
            )
        else:
            values.update(status=DeliveryStatus.QUEUED.value, next_attempt_at=outcome.at)
    return values


@lru_cache(maxsize=1024)
def _child(metric, *labels: str):
    """The metric's child for these labels (``labels()`` takes a lock and builds a key each time:
    per delivery and action, that shows)."""
    return metric.labels(*labels)


def observe(settled: Settled) -> None:
    """One log line and the counters per delivery attempt."""
    row = settled.row
    _child(metrics.PROCESSED, row["hook"], row["status"]).inc()
    if settled.outcome.kind in (OutcomeKind.DONE, OutcomeKind.FAILED) and row.get("processed_at"):
        _child(metrics.INGEST_TO_ACTION, row["hook"]).observe(
            max(0.0, (row["processed_at"] - row["received_at"]).total_seconds())
        )
        for entry in row.get("results") or []:
            for action in entry.get("actions", []):
                outcome = action["outcome"]["status"]
                _child(metrics.ACTIONS, action["target"], action["action"], outcome).inc()
    if not log.isEnabledFor(logging.INFO):
        return
    log.info(
        "delivery %s",
        row["status"],
        extra={
            "delivery_id": row["id"],
            "hook": row["hook"],
            "org": row["org_id"],
            "request_id": row["request_id"],
        },
    )


def events_to_store(row: dict[str, Any], outcome: Outcome) -> list[dict[str, Any]] | None:
    """The events read from the stored request, when the inbox left them to be (kept with the
    delivery's mark, so the operator's view and mapping diffs need not read them again)."""
    if row.get("events") is not None or not isinstance(outcome, Done):
        return None
    return [
        {"dedupe_key": e.planned.dedupe_key, "kind": e.planned.kind, "data": e.planned.data}
        for e in outcome.result.events
    ]


def _failed(hook: Hook, results: list[dict[str, Any]]) -> bool:
    """A delivery fails when an event could not be evaluated, an action failed, or (on an
    ``on_unmatched: fail`` hook) no rule matched an event."""
    return any(
        "error" in entry
        or (entry.get("unmatched") and hook.on_unmatched == "fail")
        or any(a["outcome"]["status"] == "failed" for a in entry["actions"])
        for entry in results
    )


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for entry in results:
        for action in entry.get("actions", []):
            status = action["outcome"]["status"]
            counts[status] = counts.get(status, 0) + 1
    return {
        "events": len(results),
        "rules": sorted({r for e in results for r in e.get("rules", [])}),
        "unmatched": sum(1 for e in results if e.get("unmatched")),
        "actions": counts,
    }
