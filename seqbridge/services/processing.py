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
from datetime import timedelta
from typing import Any

from connectors.base import MalformedPayload
from connectors.remote import Transient
from seqbridge.clock import Clock, one_instant
from seqbridge.jobs import Dead, Done, Failed, Outcome, Retry, RetryPolicy
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.planner import PlannedEvent, plan_delivery
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.actions import STAGEABLE, LocalTarget
from seqbridge.services.common import format_time
from seqbridge.services.delivery_results import (
    Prepared,
    PreparedEvent,
    Settled,
    acted,
    events_to_store,
    observe,
    settled_values,
)
from seqbridge.services.receipts import record_receipts, sweep_receipts
from seqbridge.storage.db import Database
from seqbridge.storage.staged import NotStaged
from seqbridge.storage.tx import Tx

log = logging.getLogger("seqbridge.deliveries")


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
        return them whole: the urgent ones alone when some are due (an opt-out marked at receipt,
        see :meth:`~seqbridge.storage.deliveries.DeliveryStore.claim_batch`), unless the
        ``DELIVERY_PRIORITY`` setting is off. The same transaction writes the receipt events of the ones claimed,
        and of up to ``limit`` others no claim picks up (ignored and rejected deliveries): see
        :mod:`.receipts`. An idle poll only reads: it must not take the write lock that webhook
        ingest is queueing on."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.deliveries.any_work(now):
                return []
        with self.db.transaction() as tx:
            reclaimed = tx.deliveries.reclaim_expired_leases(now)
            claimed = tx.deliveries.claim_batch(
                now, worker_id, now + self.lease, limit, urgent_first=self.settings["DELIVERY_PRIORITY"]
            )
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
            observe(one)
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
                events = events_to_store(row, outcome)
                if isinstance(outcome, Done):
                    mark = tx.mark()
                    try:
                        outcome = acted(self.local, row, outcome.result)
                    except NotStaged:
                        raise  # not for this unit of work after all: every delivery runs alone
                    except Exception as error:
                        tx.rollback_to(mark)
                        outcome = self._attempt_failed_with(row, error)
                finished.append((row, outcome, settled_values(tx, row, outcome, self.clock.now(), events)))
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
        events = events_to_store(row, outcome)
        if isinstance(outcome, Done):
            try:
                with self.db.transaction() as tx:
                    if tx.deliveries.load_leased(row["id"], worker_id) is None:
                        return None  # the lease was lost while the remote calls ran
                    record_receipts(tx, [row["id"]])
                    return self._finish(tx, worker_id, row, acted(self.local, row, outcome.result), events)
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

    def _finish(
        self, tx: Tx, worker_id: str, row: dict[str, Any], outcome: Outcome, events: list | None = None
    ) -> Settled | None:
        """Mark one delivery with ``outcome``; None if the lease was lost (then ``tx`` must roll
        back: raise)."""
        values = settled_values(tx, row, outcome, self.clock.now(), events)
        if not tx.deliveries.finish(row["id"], worker_id, values):
            if isinstance(outcome, Done | Failed):
                raise Transient("the lease was lost")  # roll back every local action of this attempt
            return None
        return Settled({**row, **values, "lease_owner": None, "lease_expires_at": None}, outcome)


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


def _describe(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"[:1000]
