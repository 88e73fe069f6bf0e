"""Webhook deliveries after the inbox stored them: process (map → act → record, or retry) and the
operator's view (list, show, replay).

- Processing runs the local actions, marks the delivery and writes the audit log in one
  transaction, so a crash mid-way leaves nothing half done; the lease then expires and another
  attempt runs. Remote actions run before that transaction, never inside it.
- Transient trouble retries with backoff and jitter (never sooner than a target's Retry-After);
  after ``DELIVERY_MAX_ATTEMPTS`` (or a target's ``max_attempts``) the delivery is dead. A replay
  queues it again.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.base import MalformedPayload
from connectors.remote import Transient
from seqbridge import metrics
from seqbridge.audit import record, redact
from seqbridge.audit import tag_for as _tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, Conflict, NotFound
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import plan_delivery
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.actions import LocalTarget
from seqbridge.services.common import CursorPage, decode_time_cursor, format_time, time_cursor
from seqbridge.services.inbox import REPLAYABLE, DeliveryStatus, Inbox, delivery_tag, hook_caller
from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.deliveries")


def delivery_to_api(row: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "hook": row["hook"],
        "status": row["status"],
        "received_at": format_time(row["received_at"]),
        "request_id": row["request_id"],
        "attempts": row["attempts"],
        "next_attempt_at": format_time(row["next_attempt_at"]) if row["status"] == "queued" else None,
        "processed_at": format_time(row["processed_at"]),
        "reject_reason": row["reject_reason"],
        "replays": row["replays"],
        "last_error": (row["errors"] or [None])[-1],
    }
    if detail:
        body = row["body"]
        text = None
        if body is not None:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        out["request"] = {
            "method": row["method"],
            "content_type": row["content_type"],
            "headers": row["headers"],
            "query": row["query"],
            "body": text,
            "body_size": row["body_size"],
        }
        out["events"] = row["events"]
        out["results"] = row["results"] or []
        out["errors"] = row["errors"] or []
    return out


class DeliveryService:
    """Processing (claim → map → act → record, or retry) and the operator's view of deliveries."""

    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any], services, inbox: Inbox) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.inbox = inbox
        self.local = LocalTarget(services)
        self.max_attempts = settings["DELIVERY_MAX_ATTEMPTS"]
        self.retry_base = settings["DELIVERY_RETRY_BASE_SECONDS"]
        self.retry_max = settings["DELIVERY_RETRY_MAX_SECONDS"]
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.rng = random.Random()

    @property
    def registry(self) -> HookRegistry:
        return self.inbox.registry

    # Processing --------------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int) -> list[str]:
        """Reclaim expired leases, then lease up to ``limit`` due deliveries. An idle poll only
        reads: it must not take the write lock that webhook ingest is queueing on."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.deliveries.any_work(now):
                return []
        with self.db.transaction() as tx:
            tx.deliveries.reclaim_expired_leases(now)
            return tx.deliveries.claim_due(now, worker_id, now + self.lease, limit)

    def release(self, ids: list[str], worker_id: str) -> int:
        """Give back deliveries this worker claimed but will not run (it is stopping)."""
        with self.db.transaction() as tx:
            return tx.deliveries.release(ids, worker_id, self.clock.now())

    def process(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """Run one leased delivery's events through its hook's rules and act. Returns the row as
        finished, or None if the lease was lost. Never raises for a delivery's own problems."""
        try:
            row = self._process(delivery_id, worker_id)
        except Transient as error:  # expected trouble that may pass: a hook being fixed, a target down
            row = self._retry_later(
                delivery_id, worker_id, error.message, error.retry_after, error.max_attempts
            )
        except Exception as error:  # anything else is a bug or the database: logged, and retried too
            log.exception("delivery %s: attempt failed", delivery_id, extra={"delivery_id": delivery_id})
            row = self._retry_later(delivery_id, worker_id, _describe(error))
        if row is not None:  # one line (and the counters) per processed delivery or attempt
            metrics.PROCESSED.labels(row["hook"], row["status"]).inc()
            if row["status"] in ("processed", "failed") and row.get("processed_at"):
                metrics.INGEST_TO_ACTION.labels(row["hook"]).observe(
                    max(0.0, (row["processed_at"] - row["received_at"]).total_seconds())
                )
                for entry in row.get("results") or []:
                    for action in entry.get("actions", []):
                        metrics.ACTIONS.labels(
                            action["target"], action["action"], action["outcome"]["status"]
                        ).inc()
            log.info("delivery %s", row["status"], extra={"delivery_id": delivery_id, "hook": row["hook"],
                     "org": row["org_id"], "request_id": row["request_id"]})  # fmt: skip
        return row

    def _process(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            row = tx.deliveries.get_leased(delivery_id, worker_id)
        if row is None:
            return None
        try:
            hook = self.registry.get(row["hook"])
        except (UnknownHook, BrokenHook) as error:
            kind = (
                "is no longer configured"
                if isinstance(error, UnknownHook)
                else "has an invalid configuration"
            )
            raise Transient(f"hook {row['hook']!r} {kind}") from None
        plans = self._plan(hook, row)
        # Remote actions first, outside any transaction: no database lock is held over the network.
        # Their keys are the same on every automatic retry (the remote replays its first answer)
        # and new for an operator's replay (which should act again, e.g. after a fix).
        remote: dict[tuple[int, int], dict[str, Any]] = {}
        for e, (_, plan, _) in enumerate(plans):
            for a, action in enumerate(plan.actions if plan else []):
                if action["target"] != "local":
                    remote[(e, a)] = self._run_remote(
                        hook, action, f"{delivery_id}:r{row['replays']}:{e}:{a}"
                    )
        with self.db.transaction() as tx:
            if tx.deliveries.load_leased(delivery_id, worker_id) is None:
                return None  # the lease was lost while the remote calls ran
            results, failed = [], False
            for e, (entry, plan, event) in enumerate(plans):
                if plan is None:
                    results.append(entry)
                    failed = True
                    continue
                if not plan.matched:
                    entry["unmatched"] = True
                    failed = failed or hook.on_unmatched == "fail"
                caller = hook_caller(row["org_id"], hook.name, row["request_id"], delivery_id=delivery_id,
                                     rule=", ".join(plan.rules) or None, event=event["dedupe_key"])  # fmt: skip
                for a, action in enumerate(plan.actions):
                    outcome = remote[(e, a)] if (e, a) in remote else self.local.run(caller, action)
                    entry["actions"].append({**_public(action), "outcome": outcome})
                    failed = failed or outcome["status"] == "failed"
                results.append(entry)
            status = DeliveryStatus.FAILED if failed else DeliveryStatus.PROCESSED
            if not tx.deliveries.finish(delivery_id, worker_id, {"status": status.value, "results": results,
                                                                 "processed_at": now, "updated_at": now}):  # fmt: skip
                raise Transient("the lease was lost")  # roll back every local action of this attempt
            caller = hook_caller(row["org_id"], hook.name, row["request_id"], delivery_id=delivery_id)
            record(tx, caller, delivery_tag(caller, "failed" if failed else "processed"), "delivery", delivery_id,
                   {"hook": hook.name, "status": status.value, **_summary(results)}, now)  # fmt: skip
            row.update(status=status.value, results=results, processed_at=now)
            return row

    @staticmethod
    def _plan(hook: Hook, row: dict[str, Any]) -> list[tuple[dict[str, Any], Any, dict[str, Any]]]:
        """Each event with its plan (None when the rules could not be evaluated for it)."""
        plans = []
        for event, planned in zip(
            row["events"], plan_delivery(hook, row, format_time(row["received_at"])), strict=True
        ):
            entry: dict[str, Any] = {"dedupe_key": planned.dedupe_key, "kind": planned.kind, "actions": []}
            if planned.error is not None:
                plans.append(({**entry, "rules": [], "error": planned.error}, None, event))
            else:
                plans.append(({**entry, "rules": list(planned.rules)}, planned, event))
        return plans

    @staticmethod
    def _run_remote(hook: Hook, action: dict[str, Any], key: str) -> dict[str, Any]:
        target = hook.targets.get(action["target"])
        if target is None or target.client is None:
            return {
                "status": "failed",
                "code": "unknown_target",
                "message": f"no remote target {action['target']!r}",
            }
        try:
            return target.client.run(action, key)  # Transient propagates: the delivery retries
        except ValueError as error:
            return {"status": "failed", "code": "invalid_action", "message": str(error)}

    def _retry_later(self, delivery_id: str, worker_id: str, message: str, retry_after: float | None = None,
                     max_attempts: int | None = None) -> dict[str, Any] | None:  # fmt: skip
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.deliveries.load_leased(delivery_id, worker_id)
            if row is None:
                return None
            errors = [
                *(row["errors"] or []),
                {"at": format_time(now), "attempt": row["attempts"], "error": message},
            ]
            caller = hook_caller(row["org_id"], row["hook"], row["request_id"], delivery_id=delivery_id)
            if row["attempts"] >= (max_attempts or self.max_attempts):
                values = {"status": DeliveryStatus.DEAD.value, "errors": errors, "next_attempt_at": None,
                          "updated_at": now}  # fmt: skip
                record(tx, caller, delivery_tag(caller, "dead"), "delivery", delivery_id,
                       {"hook": row["hook"], "attempts": row["attempts"], "error": message}, now)  # fmt: skip
            else:
                delay = min(self.retry_max, self.retry_base * 2 ** (row["attempts"] - 1))
                delay *= 0.5 + self.rng.random()  # jitter: a burst of failures does not retry in step
                delay = max(delay, min(retry_after or 0, self.retry_max))  # the server's Retry-After
                values = {"status": DeliveryStatus.QUEUED.value, "errors": errors, "updated_at": now,
                          "next_attempt_at": now + timedelta(seconds=delay)}  # fmt: skip
            tx.deliveries.finish(delivery_id, worker_id, values)
            row.update(values)
            return row

    # The operator's view -------------------------------------------------------------------------

    def list_deliveries(self, caller: Caller, *, hook: str | None, statuses: list[str] | None,
                        since: datetime | None, until: datetime | None, cursor: str | None,
                        limit: int) -> CursorPage:  # fmt: skip
        before = decode_time_cursor(cursor)
        with self.db.transaction(write=False) as tx:
            rows = tx.deliveries.list_deliveries(caller.org_id, hook=hook, statuses=statuses, since=since,
                                                 until=until, before=before, limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = time_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None
        return CursorPage([delivery_to_api(r) for r in rows], limit, next_cursor)

    def get_delivery(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
        if row is None:
            raise NotFound(f"No delivery with id {delivery_id}.")
        return delivery_to_api(row, detail=True)

    def replay(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        """Queue a processed, failed or dead delivery again. Raises :class:`NotFound`, or
        :class:`Conflict` ``not_replayable`` for one that is queued, in progress, rejected or ignored."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
            if row is None:
                raise NotFound(f"No delivery with id {delivery_id}.")
            if not tx.deliveries.requeue(caller.org_id, delivery_id, now, tuple(s.value for s in REPLAYABLE)):
                raise Conflict(f"A {row['status']} delivery cannot be replayed.", code="not_replayable",
                               details={"status": row["status"]})  # fmt: skip
            record(tx, caller, _tag_for(caller, "delivery", "replayed"), "delivery", delivery_id,
                   {"hook": row["hook"], "previous_status": row["status"]}, now)  # fmt: skip
            return delivery_to_api(tx.deliveries.get_delivery(caller.org_id, delivery_id), detail=True)

    def replay_many(self, caller_for_org, *, statuses: list[str], since: datetime | None, hook: str | None,
                    org_id: str | None, limit: int = 10_000) -> list[str]:  # fmt: skip
        """Replay every matching delivery (the CLI's bulk replay); return the ids queued again."""
        with self.db.transaction(write=False) as tx:
            targets = tx.deliveries.ids_to_replay(statuses, since, hook, org_id, limit)
        queued = []
        for target_org, delivery_id in targets:
            try:
                self.replay(caller_for_org(target_org), delivery_id)
                queued.append(delivery_id)
            except Exception as error:  # one bad row does not stop a bulk replay
                log.warning("replay of %s skipped: %s", delivery_id, error)
        return queued

    def mapping_statuses(self, caller: Caller) -> list[dict[str, Any]]:
        """The hooks that act for the caller's organization, with their status and problems."""
        return self.registry.statuses(self._org_name(caller))

    def dry_run(self, caller: Caller, hook_name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Parse ``spec`` (body, content_type, headers, query) as the hook would and plan each
        event. Nothing is stored or executed. Raises :class:`NotFound` for a hook of another
        organization, :class:`HookMisconfigured`, and :class:`BadRequest` ``malformed_payload``."""
        from seqbridge.mapping.testing import build_request, simulate

        hook = self.inbox.hook(hook_name)
        if hook.organization != self._org_name(caller):
            raise NotFound(f"No hook named {hook_name!r}.", code="hook_not_found")
        request = build_request(spec, Path(hook.file).parent, hook.name)
        try:
            results = simulate(hook, request, format_time(self.clock.now()))
        except MalformedPayload as error:
            raise BadRequest(f"The body is not what {hook.connector_name} sends: {error}",
                             code="malformed_payload") from None  # fmt: skip
        return {"hook": hook.name, "connector": hook.connector_name, "events": results}

    def _org_name(self, caller: Caller) -> str:
        with self.db.transaction(write=False) as tx:
            org = tx.orgs.get_org(caller.org_id)
        return org["name"] if org else ""

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Step tasks, deliveries and REST hook notifications by state, for the metrics' gauges."""
        with self.db.transaction(write=False) as tx:
            return {
                "steps": tx.processor.counts(self.clock.now()),
                "deliveries": tx.deliveries.count_by_status(),
                "rest_hooks": tx.subscriptions.count_by_status(),
            }


def _public(action: dict[str, Any]) -> dict[str, Any]:
    return redact(action)


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


def _describe(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"[:1000]


__all__ = ["DeliveryService", "DeliveryStatus"]
