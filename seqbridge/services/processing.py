"""Processing webhook deliveries on the job contract: claim a batch → run (plan, remote actions)
→ one outcome per delivery → settle (local actions, the delivery's mark and its audit events).

- **Claim**: one transaction leases a batch of due deliveries (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL) and reads them whole.
- **Run**, outside any transaction: plan each event with the hook's rules (pure), then call the
  remote targets, so no database lock is held over the network. Their idempotency keys are the
  same on every automatic retry (the remote replays its first answer) and new for an operator's
  replay (which should act again, e.g. after a fix).
- **Settle**: the local actions, the delivery's new status and the audit log commit together,
  so a crash leaves nothing half done; the lease then expires and another attempt starts clean.
  Trouble that may pass (a hook being fixed, a target down, the database) retries with the
  :class:`RetryPolicy`; a delivery out of attempts is dead.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from connectors.base import MalformedPayload
from connectors.remote import Transient
from seqbridge import metrics
from seqbridge.audit import record, redact
from seqbridge.clock import Clock
from seqbridge.jobs import Dead, Done, Failed, Outcome, OutcomeKind, Retry, RetryPolicy
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import PlannedEvent, plan_delivery
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.actions import LocalTarget
from seqbridge.services.common import format_time
from seqbridge.services.inbox import DeliveryStatus, delivery_tag, hook_caller
from seqbridge.storage.db import Database
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


class DeliveryProcessing:
    """Claims, runs and settles deliveries. ``services`` is :class:`seqbridge.services.Services`."""

    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any], services, registry) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.local = LocalTarget(services)
        self._registry = registry
        self.rng = random.Random()

    @property
    def registry(self) -> HookRegistry:
        return self._registry()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings["PROCESSOR_LEASE_SECONDS"])

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy.from_settings(self.settings, "DELIVERY")

    # Claim ---------------------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int) -> list[dict[str, Any]]:
        """Reclaim expired leases, then lease up to ``limit`` due deliveries, oldest first, and
        return them whole. An idle poll only reads: it must not take the write lock that webhook
        ingest is queueing on."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.deliveries.any_work(now):
                return []
        with self.db.transaction() as tx:
            tx.deliveries.reclaim_expired_leases(now)
            return tx.deliveries.claim_batch(now, worker_id, now + self.lease, limit)

    def leased(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """The delivery, if ``worker_id`` holds its lease (the inline path claims at ingest)."""
        with self.db.transaction(write=False) as tx:
            return tx.deliveries.get_leased(delivery_id, worker_id)

    def extend(self, worker_id: str, rows: list[dict[str, Any]]) -> None:
        with self.db.transaction() as tx:
            tx.deliveries.extend_leases([r["id"] for r in rows], worker_id, self.clock.now() + self.lease)

    def release(self, worker_id: str, rows: list[dict[str, Any]]) -> int:
        """Give back deliveries this worker claimed but will not run (it is stopping)."""
        with self.db.transaction() as tx:
            return tx.deliveries.release([r["id"] for r in rows], worker_id, self.clock.now())

    # Run -------------------------------------------------------------------------------------------

    def run(self, row: dict[str, Any]) -> Outcome:
        """Plan the delivery's events and run its remote actions; never raises for the delivery's
        own problems (a missing hook or a target that is down is a retry)."""
        try:
            hook = self._hook(row)
            try:
                planned = plan_delivery(hook, row, format_time(row["received_at"]))
            except MalformedPayload as error:
                return Failed(f"the stored body is not what {hook.connector_name} sends: {error}", [])
            events = tuple(
                PreparedEvent(event, self._run_remote(hook, row, e, event)) for e, event in enumerate(planned)
            )
        except Transient as error:
            return self.failed_attempt(row, error.message, error.retry_after, error.max_attempts)
        return Done(Prepared(hook, events))

    def _hook(self, row: dict[str, Any]) -> Hook:
        try:
            return self.registry.get(row["hook"])
        except (UnknownHook, BrokenHook) as error:
            kind = (
                "is no longer configured"
                if isinstance(error, UnknownHook)
                else "has an invalid configuration"
            )
            raise Transient(f"hook {row['hook']!r} {kind}") from None

    @staticmethod
    def _run_remote(
        hook: Hook, row: dict[str, Any], e: int, event: PlannedEvent
    ) -> dict[int, dict[str, Any]]:
        outcomes = {}
        for a, action in enumerate(event.actions if event.error is None else ()):
            if action["target"] == "local":
                continue
            target = hook.targets.get(action["target"])
            if target is None or target.client is None:
                outcomes[a] = {"status": "failed", "code": "unknown_target",
                               "message": f"no remote target {action['target']!r}"}  # fmt: skip
                continue
            try:  # Transient propagates: the delivery retries
                outcomes[a] = target.client.run(action, f"{row['id']}:r{row['replays']}:{e}:{a}")
            except ValueError as error:
                outcomes[a] = {"status": "failed", "code": "invalid_action", "message": str(error)}
        return outcomes

    def crashed(self, row: dict[str, Any], error: Exception) -> Outcome:
        """A run that raised: a bug or the database; logged by the worker, and retried."""
        return self.failed_attempt(row, _describe(error))

    def failed_attempt(self, row: dict[str, Any], error: str, retry_after: float | None = None,
                       max_attempts: int | None = None) -> Retry | Dead:  # fmt: skip
        """An attempt that failed for a reason that may pass: retry with backoff, or dead."""
        return self.policy.after_failure(row["attempts"], error, self.clock.now(), retry_after=retry_after,
                                         max_attempts=max_attempts, rng=self.rng)  # fmt: skip

    # Settle ----------------------------------------------------------------------------------------

    def settle(self, worker_id: str, ran: list[tuple[dict[str, Any], Outcome]]) -> list[Settled]:
        """Write each delivery's outcome; return the deliveries as settled (those whose lease was
        lost meanwhile are left out: another attempt owns them)."""
        settled = []
        for row, outcome in ran:
            result = self._settle_one(worker_id, row, outcome)
            if result is not None:
                self._observe(result)
                settled.append(result)
        return settled

    def _settle_one(self, worker_id: str, row: dict[str, Any], outcome: Outcome) -> Settled | None:
        if isinstance(outcome, Done):
            try:
                return self._act(worker_id, row, outcome.result)
            except Transient as error:
                outcome = self.failed_attempt(row, error.message, error.retry_after, error.max_attempts)
            except Exception as error:  # a bug or the database: logged, and retried too
                log.exception("delivery %s: attempt failed", row["id"], extra={"delivery_id": row["id"]})
                outcome = self.failed_attempt(row, _describe(error))
        with self.db.transaction() as tx:
            return self._finish(tx, worker_id, row, outcome)

    def _act(self, worker_id: str, row: dict[str, Any], prepared: Prepared) -> Settled | None:
        """The local actions and the delivery's mark, in one transaction."""
        with self.db.transaction() as tx:
            if tx.deliveries.load_leased(row["id"], worker_id) is None:
                return None  # the lease was lost while the remote calls ran
            results = self.act_locally(row, prepared)
            failed = _failed(prepared.hook, results)
            outcome: Outcome = Failed("an event or action failed", results) if failed else Done(results)
            settled = self._finish(tx, worker_id, row, outcome)
            if settled is None:
                raise Transient("the lease was lost")  # roll back every local action of this attempt
            return settled

    def act_locally(self, row: dict[str, Any], prepared: Prepared) -> list[dict[str, Any]]:
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
            caller = hook_caller(row["org_id"], prepared.hook.name, row["request_id"], delivery_id=row["id"],
                                 rule=", ".join(planned.rules) or None, event=planned.dedupe_key)  # fmt: skip
            for a, action in enumerate(planned.actions):
                outcome = event.remote[a] if a in event.remote else self.local.run(caller, action)
                entry["actions"].append({**redact(action), "outcome": outcome})
            results.append(entry)
        return results

    def _finish(self, tx: Tx, worker_id: str, row: dict[str, Any], outcome: Outcome) -> Settled | None:
        """Mark the delivery with ``outcome`` and record it; None if the lease was lost."""
        now = self.clock.now()
        caller = hook_caller(row["org_id"], row["hook"], row["request_id"], delivery_id=row["id"])
        values: dict[str, Any] = {"updated_at": now}
        if isinstance(outcome, Done | Failed) and outcome.result is not None:
            results = outcome.result
            status = DeliveryStatus.PROCESSED if isinstance(outcome, Done) else DeliveryStatus.FAILED
            values.update(status=status.value, results=results, processed_at=now)
            record(tx, caller, delivery_tag(caller, "failed" if isinstance(outcome, Failed) else "processed"),
                   "delivery", row["id"], {"hook": row["hook"], "status": status.value, **_summary(results)}, now)  # fmt: skip
        else:  # Retry or Dead: the attempt failed
            error = outcome.error if isinstance(outcome, Retry | Dead) else str(outcome)
            values["errors"] = [*(row["errors"] or []),
                                {"at": format_time(now), "attempt": row["attempts"], "error": error}]  # fmt: skip
            if isinstance(outcome, Dead):
                values.update(status=DeliveryStatus.DEAD.value, next_attempt_at=None)
                record(tx, caller, delivery_tag(caller, "dead"), "delivery", row["id"],
                       {"hook": row["hook"], "attempts": row["attempts"], "error": error}, now)  # fmt: skip
            else:
                values.update(status=DeliveryStatus.QUEUED.value, next_attempt_at=outcome.at)
        if not tx.deliveries.finish(row["id"], worker_id, values):
            return None
        return Settled({**row, **values, "lease_owner": None, "lease_expires_at": None}, outcome)

    @staticmethod
    def _observe(settled: Settled) -> None:
        """One log line and the counters per delivery attempt."""
        row = settled.row
        metrics.PROCESSED.labels(row["hook"], row["status"]).inc()
        if settled.outcome.kind in (OutcomeKind.DONE, OutcomeKind.FAILED) and row.get("processed_at"):
            metrics.INGEST_TO_ACTION.labels(row["hook"]).observe(
                max(0.0, (row["processed_at"] - row["received_at"]).total_seconds())
            )
            for entry in row.get("results") or []:
                for action in entry.get("actions", []):
                    metrics.ACTIONS.labels(
                        action["target"], action["action"], action["outcome"]["status"]
                    ).inc()
        log.info("delivery %s", row["status"], extra={"delivery_id": row["id"], "hook": row["hook"],
                 "org": row["org_id"], "request_id": row["request_id"]})  # fmt: skip


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


def _describe(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"[:1000]
