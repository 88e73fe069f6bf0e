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
from seqbridge.clock import Clock, one_instant
from seqbridge.jobs import Dead, Done, Failed, Outcome, OutcomeKind, Retry, RetryPolicy
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import PlannedEvent, plan_delivery
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.actions import STAGEABLE, LocalTarget
from seqbridge.services.common import format_time
from seqbridge.services.inbox import DeliveryStatus, delivery_tag, hook_caller
from seqbridge.services.receipts import record_receipts, sweep_receipts
from seqbridge.storage.db import Database
from seqbridge.storage.staged import NotStaged
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
        #: False: every delivery in a plain transaction of its own, through the plain stores (the
        #: path a batch falls back to; tests compare the two).
        self.together = True

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
        return them whole. The same transaction writes the receipt events of the ones claimed,
        and of up to ``limit`` others no claim picks up (ignored and rejected deliveries): see
        :mod:`.receipts`. An idle poll only reads: it must not take the write lock that webhook
        ingest is queueing on."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.deliveries.any_work(now):
                return []
        with self.db.transaction() as tx:
            reclaimed = tx.deliveries.reclaim_expired_leases(now)
            claimed = tx.deliveries.claim_batch(now, worker_id, now + self.lease, limit)
            record_receipts(tx, [row["id"] for row in claimed])
            sweep_receipts(tx, limit)
        if reclaimed:
            log.warning("worker %s: reclaimed %d deliveries whose lease expired", worker_id, reclaimed)
        return claimed

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
                outcomes[a] = {
                    "status": "failed",
                    "code": "unknown_target",
                    "message": f"no remote target {action['target']!r}",
                }
                continue
            try:  # Transient propagates: the delivery retries
                outcomes[a] = target.client.run(action, f"{row['id']}:r{row['replays']}:{e}:{a}")
            except ValueError as error:
                outcomes[a] = {"status": "failed", "code": "invalid_action", "message": str(error)}
        return outcomes

    def crashed(self, row: dict[str, Any], error: Exception) -> Outcome:
        """A run that raised: a bug or the database; logged by the worker, and retried."""
        return self.failed_attempt(row, _describe(error))

    def failed_attempt(
        self,
        row: dict[str, Any],
        error: str,
        retry_after: float | None = None,
        max_attempts: int | None = None,
    ) -> Retry | Dead:
        """An attempt that failed for a reason that may pass: retry with backoff, or dead."""
        return self.policy.after_failure(
            row["attempts"],
            error,
            self.clock.now(),
            retry_after=retry_after,
            max_attempts=max_attempts,
            rng=self.rng,
        )

    # Settle ----------------------------------------------------------------------------------------

    def settle(self, worker_id: str, ran: list[tuple[dict[str, Any], Outcome]]) -> list[Settled]:
        """Write each delivery's outcome, in order; return the deliveries as settled (those whose
        lease was lost meanwhile are left out: another attempt owns them).

        Runs of deliveries whose local actions the batch's unit of work can carry share one
        transaction (:meth:`_settle_together`); a delivery that needs more (a bulk enrollment)
        runs alone between them, so every contact still sees its deliveries in order. If a
        shared transaction fails as a whole (the database refused the grouped writes), each of
        its deliveries runs again alone, and only the one at fault is retried.
        """
        settled: list[Settled] = []
        for together, segment in _segments(ran):
            if together and self.together:
                try:
                    settled += self._settle_together(worker_id, segment)
                    continue
                except Exception as error:
                    log.warning(
                        "a batch of %d deliveries could not be settled together (%s); settling each alone",
                        len(segment),
                        _describe(error),
                    )
            for row, outcome in segment:
                one = self._settle_one(worker_id, row, outcome)
                if one is not None:
                    settled.append(one)
        for one in settled:
            self._observe(one)
        return settled

    def _settle_together(self, worker_id: str, ran: list[tuple[dict[str, Any], Outcome]]) -> list[Settled]:
        """One transaction for the whole run: the local actions through the batch's unit of work
        (one query per kind of lookup, grouped writes), then every delivery's mark in one
        statement. A delivery whose actions raise is undone alone and retried."""
        with one_instant(self.clock), self.db.transaction(staged=True) as tx:
            held = tx.deliveries.lock_leased([row["id"] for row, _ in ran], worker_id)
            ran = [(row, outcome) for row, outcome in ran if row["id"] in held]
            # Claimed by a worker, their receipts are audited already (this writes nothing); run
            # at once by the request (respond: after_actions), they are audited here, first.
            record_receipts(tx, [row["id"] for row, _ in ran])
            by_org: dict[str, list[dict[str, Any]]] = {}
            for row, outcome in ran:
                if isinstance(outcome, Done):
                    actions = [
                        a for e in outcome.result.events if e.planned.error is None for a in e.planned.actions
                    ]
                    by_org.setdefault(row["org_id"], []).extend(actions)
            for org_id, actions in by_org.items():
                tx.staging.prefetch(self.local.lookups(org_id, actions))
            finished = []
            for row, outcome in ran:
                events = _events_to_store(row, outcome)
                if isinstance(outcome, Done):
                    mark = tx.mark()
                    try:
                        outcome = self._acted(row, outcome.result)
                    except NotStaged:
                        raise  # not for this unit of work after all: every delivery runs alone
                    except Exception as error:
                        tx.rollback_to(mark)
                        outcome = self._attempt_failed_with(row, error)
                finished.append((row, outcome, self._values(tx, row, outcome, events)))
            tx.flush()
            rows = [{"id": row["id"], **values} for row, _, values in finished]
            if len(tx.deliveries.finish_many(worker_id, rows)) != len(rows):
                raise Transient("a lease was lost while settling")  # cannot happen under the locks
        return [
            Settled({**row, **values, "lease_owner": None, "lease_expires_at": None}, outcome)
            for row, outcome, values in finished
        ]

    def _settle_one(self, worker_id: str, row: dict[str, Any], outcome: Outcome) -> Settled | None:
        """One delivery in a plain transaction of its own, through the plain stores."""
        events = _events_to_store(row, outcome)
        if isinstance(outcome, Done):
            try:
                with self.db.transaction() as tx:
                    if tx.deliveries.load_leased(row["id"], worker_id) is None:
                        return None  # the lease was lost while the remote calls ran
                    record_receipts(tx, [row["id"]])
                    return self._finish(tx, worker_id, row, self._acted(row, outcome.result), events)
            except Exception as error:
                outcome = self._attempt_failed_with(row, error)
        with self.db.transaction() as tx:
            record_receipts(tx, [row["id"]])
            return self._finish(tx, worker_id, row, outcome, events)

    def _attempt_failed_with(self, row: dict[str, Any], error: Exception) -> Retry | Dead:
        if isinstance(error, Transient):
            return self.failed_attempt(row, error.message, error.retry_after, error.max_attempts)
        log.exception("delivery %s: attempt failed", row["id"], extra={"delivery_id": row["id"]})
        return self.failed_attempt(row, _describe(error))

    def _acted(self, row: dict[str, Any], prepared: Prepared) -> Done | Failed:
        """Carry out the local actions; the delivery is done, or failed if something failed."""
        results = self.act_locally(row, prepared)
        if _failed(prepared.hook, results):
            return Failed("an event or action failed", results)
        return Done(results)

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
            caller = hook_caller(
                row["org_id"],
                prepared.hook.name,
                row["request_id"],
                delivery_id=row["id"],
                rule=", ".join(planned.rules) or None,
                event=planned.dedupe_key,
            )
            for a, action in enumerate(planned.actions):
                outcome = event.remote[a] if a in event.remote else self.local.run(caller, action)
                entry["actions"].append({**redact(action), "outcome": outcome})
            results.append(entry)
        return results

    def _finish(
        self, tx: Tx, worker_id: str, row: dict[str, Any], outcome: Outcome, events: list | None = None
    ) -> Settled | None:
        """Mark one delivery with ``outcome``; None if the lease was lost (then ``tx`` must roll
        back: raise)."""
        values = self._values(tx, row, outcome, events)
        if not tx.deliveries.finish(row["id"], worker_id, values):
            if isinstance(outcome, Done | Failed):
                raise Transient("the lease was lost")  # roll back every local action of this attempt
            return None
        return Settled({**row, **values, "lease_owner": None, "lease_expires_at": None}, outcome)

    def _values(
        self, tx: Tx, row: dict[str, Any], outcome: Outcome, events: list | None = None
    ) -> dict[str, Any]:
        """What the delivery's row becomes with ``outcome`` (the same columns whatever it is, and
        ``events`` when the inbox left them to be read), and its audit event (processed, failed
        or dead; an attempt that will be retried has none)."""
        now = self.clock.now()
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


def _events_to_store(row: dict[str, Any], outcome: Outcome) -> list[dict[str, Any]] | None:
    """The events read from the stored request, when the inbox left them to be (kept with the
    delivery's mark, so the operator's view and mapping diffs need not read them again)."""
    if row.get("events") is not None or not isinstance(outcome, Done):
        return None
    return [
        {"dedupe_key": e.planned.dedupe_key, "kind": e.planned.kind, "data": e.planned.data}
        for e in outcome.result.events
    ]


def _segments(ran: list[tuple[dict[str, Any], Outcome]]):
    """Split a batch, in order, into runs settled together and deliveries settled alone (their
    local actions go beyond what a batch's unit of work carries)."""
    together: list[tuple[dict[str, Any], Outcome]] = []
    for item in ran:
        _, outcome = item
        alone = isinstance(outcome, Done) and any(
            a["target"] == "local" and a["action"] not in STAGEABLE
            for e in outcome.result.events
            if e.planned.error is None
            for a in e.planned.actions
        )
        if alone:
            if together:
                yield True, together
                together = []
            yield False, [item]
        else:
            together.append(item)
    if together:
        yield True, together


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
