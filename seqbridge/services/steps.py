"""Sequence steps on the job contract, the domain half: what a claimed task comes to, and what
each outcome writes. The worker half (sending email and webhooks) is
:mod:`seqbridge.worker.processor`.

- **Claim**: one transaction leases a batch of due tasks and reads what deciding them needs:
  each task with its enrollment, sequence and step, the contacts, the sends already recorded
  under the tasks' idempotency keys, and the steps of their sequences.
- **Decide**, per task, in memory (:meth:`StepService.decide`): everything is checked again at
  send time. An ineligible contact exits; a paused enrollment holds; a closed send window
  defers (no attempt used); a send recorded before a crash advances without sending again.
- **Settle** a batch's outcomes in one transaction (:meth:`StepService.settle`): the tasks
  finished, the sends recorded in the outbox under their keys, the next steps scheduled, the
  enrollments moved (completed, exited, failed), and the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.jobs import Dead, Done, Failed, Outcome, Retry
from seqbridge.services.contacts import TEXT_FIELDS
from seqbridge.services.enrolling import ineligibility
from seqbridge.services.lifecycle import LIVE, EnrollmentStatus, move
from seqbridge.services.scheduling import step_delay, task_idempotency_key, task_row
from seqbridge.services.windows import next_opening
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx

log = logging.getLogger("seqbridge.worker")

#: Why an ineligible contact leaves, as an exit reason.
_EXIT_REASON = {
    "contact_status:unsubscribed": "unsubscribed",
    "contact_status:bounced": "bounced",
    "contact_status:do_not_contact": "do_not_contact",
    "converted_customer": "converted",
    "active_ticket:open": "active_ticket",
}
_UPDATABLE = set(TEXT_FIELDS) | {"status", "converted", "timezone"}


class StepAction(StrEnum):
    RUN = "run"  # due and allowed: carry the step out (send it, or change the contact)
    ADVANCE = "advance"  # sent before a crash stopped the advance: advance, never send twice
    CANCEL = "cancel"  # nothing to run any more: the step or contact is gone, the enrollment ended
    HOLD = "hold"  # the enrollment is paused: the task waits for the resume
    EXIT = "exit"  # the contact may no longer be contacted: the enrollment exits


@dataclass
class Delivered:
    """A message a step produced: what the outbox records under the step's idempotency key."""

    status: str  # sent | captured | failed
    recipient: str
    subject: str | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


@dataclass(frozen=True)
class ClaimedTask:
    """A leased task with what deciding and running it needs."""

    task: dict[str, Any]
    contact: dict[str, Any] | None
    #: The status of the send already recorded under the task's key (a crash came after it).
    sent: str | None
    #: The steps of the task's sequence, in position order.
    steps: tuple[dict[str, Any], ...]

    @property
    def key(self) -> str:
        return task_idempotency_key(self.task)

    @property
    def recipient(self) -> str:
        """Who a send goes to: the webhook's URL, or the contact's email."""
        if self.task["action"] == "webhook":
            return self.task["webhook_url"] or ""
        return (self.contact or {}).get("email") or ""


@dataclass(frozen=True)
class StepResult:
    """What a finished task comes to (the result of a :class:`Done`)."""

    action: StepAction
    delivered: Delivered | None = None
    #: Why it was cancelled, or why the contact left.
    note: str | None = None
    exit_reason: str | None = None


class StepService:
    """Claims, decides and settles step tasks; ``scheduler`` mirrors a queue's next task onto its
    enrollment."""

    def __init__(self, db: Database, clock: Clock, scheduler) -> None:
        self.db = db
        self.clock = clock
        self.scheduler = scheduler

    # Claim -----------------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[ClaimedTask]:
        """Reclaim expired leases, lease up to ``limit`` due tasks and read what they need."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            reclaimed = tx.processor.reclaim_expired_leases(now)
            ids = tx.processor.claim_due_tasks(now, worker_id, now + lease, limit)
            tasks = tx.processor.load_tasks(ids)
            people = tx.processor.load_contacts([t["contact_id"] for t in tasks])
            sent = tx.processor.find_sends([task_idempotency_key(t) for t in tasks])
            steps: dict[str, list[dict[str, Any]]] = {}
            for step in tx.sequences.list_steps(list({t["sequence_id"] for t in tasks})):
                steps.setdefault(step["sequence_id"], []).append(step)
        if reclaimed:
            log.warning("worker %s: reclaimed %d tasks whose lease expired", worker_id, reclaimed)
        return [
            ClaimedTask(
                t,
                people.get(t["contact_id"]),
                sent.get(task_idempotency_key(t)),
                tuple(steps.get(t["sequence_id"], ())),
            )
            for t in tasks
        ]

    def extend(self, worker_id: str, items: list[ClaimedTask], lease: timedelta) -> None:
        with self.db.transaction() as tx:
            tx.processor.extend_leases(worker_id, [i.task["id"] for i in items], self.clock.now() + lease)

    def release(self, worker_id: str, items: list[ClaimedTask]) -> None:
        with self.db.transaction() as tx:
            tx.processor.release_tasks(worker_id, [i.task["id"] for i in items], self.clock.now())
        log.info("worker %s: stopping; released %d claimed tasks", worker_id, len(items))

    def heartbeat(self, worker_id: str, handled: int) -> None:
        with self.db.transaction() as tx:
            tx.processor.heartbeat(worker_id, self.clock.now(), handled)

    def stopped(self, worker_id: str) -> None:
        with self.db.transaction() as tx:
            tx.processor.worker_stopped(worker_id, self.clock.now())

    # Decide ----------------------------------------------------------------------------------

    def decide(self, item: ClaimedTask) -> Outcome | None:
        """What a task comes to before anything is sent, every check made again at send time;
        None when the step is due and allowed (the worker runs it)."""
        task, contact, now = item.task, item.contact, self.clock.now()
        if task["step_id"] is None or task["action"] is None or contact is None:
            return Done(StepResult(StepAction.CANCEL, note="the step or contact is gone"))
        if task["enrollment_status"] == EnrollmentStatus.PAUSED:
            return Done(StepResult(StepAction.HOLD))
        if task["enrollment_status"] != EnrollmentStatus.ACTIVE:
            return Done(StepResult(StepAction.CANCEL, note=f"enrollment {task['enrollment_status']}"))
        reason = ineligibility(contact)
        if reason is not None:  # an unsubscribe (or bounce, conversion) between two steps
            exit_reason = _EXIT_REASON.get(reason, "ineligible")
            return Done(
                StepResult(StepAction.EXIT, note=f"contact ineligible: {reason}", exit_reason=exit_reason)
            )
        opens = next_opening(now, task["send_window"], contact.get("timezone"))
        if opens > now:
            return Retry(opens, counts=False)  # the send window is closed: no attempt used
        if item.sent in ("sent", "captured"):
            return Done(StepResult(StepAction.ADVANCE))
        return None

    # Settle ----------------------------------------------------------------------------------

    def settle(self, worker_id: str, ran: list[tuple[ClaimedTask, Outcome]]) -> None:
        """Write a batch's outcomes in one transaction. A task whose lease was lost is left to
        the worker that holds it now."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            advancing = [
                (i, o.result) for i, o in ran if isinstance(o, Done) and o.result.action in _ADVANCING
            ]
            held = tx.processor.finish_tasks([i.task["id"] for i, _ in advancing], worker_id, "done", now)
            lost = [i.task["id"] for i, _ in advancing if i.task["id"] not in held]
            if lost:
                log.warning("worker %s: lost the lease on tasks %s before finishing them", worker_id, lost)
            advancing = [(i, r) for i, r in advancing if i.task["id"] in held]
            tx.processor.record_sends([_outbox_row(i, r.delivered, now) for i, r in advancing if r.delivered])
            for item, _ in advancing:
                _run_database_action(tx, item.task, now)
            self._advance(tx, worker_id, [i for i, _ in advancing], now)
            for item, outcome in ran:
                if not (isinstance(outcome, Done) and outcome.result.action in _ADVANCING):
                    self._settle_other(tx, worker_id, item, outcome, now)

    def _advance(self, tx: Tx, worker_id: str, items: list[ClaimedTask], now: datetime) -> None:
        """Schedule each next step from now (sequences), or complete enrollments with nothing left."""
        next_tasks, pointers, finished = [], [], []
        queue_enrollments = [i.task["enrollment_id"] for i in items if i.task["sequence_kind"] != "sequence"]
        still_open = tx.processor.enrollments_with_open_tasks(queue_enrollments)
        for item in items:
            task = item.task
            if task["sequence_kind"] == "sequence":
                current = next((s for s in item.steps if s["id"] == task["step_id"]), None)
                following = next(
                    (s for s in item.steps if current and s["position"] == current["position"] + 1), None
                )
                if following is not None:
                    at = now + step_delay(following)
                    next_tasks.append(task_row(_enrollment_of(task), following, at, now))
                    pointers.append(
                        {"enrollment_id": task["enrollment_id"], "step_id": following["id"], "at": at}
                    )
                    continue
            elif task["enrollment_id"] in still_open:
                self.scheduler.mirror(tx, task["enrollment_id"], now)
                continue
            finished.append(task)
        tx.enrollments.insert_tasks(next_tasks)
        tx.processor.point_enrollments(pointers, now)
        # Complete those still active (one may have been paused or exited since it was claimed).
        by_org: dict[str, list[dict[str, Any]]] = {}
        for enrollment in _current(tx, [t["enrollment_id"] for t in finished], (EnrollmentStatus.ACTIVE,)):
            by_org.setdefault(enrollment["org_id"], []).append(enrollment)
        for org_id, ended in by_org.items():
            caller = Caller(org_id, Actor(ActorType.WORKER, worker_id))
            move(tx, caller, ended, EnrollmentStatus.COMPLETED, now)

    def _settle_other(
        self, tx: Tx, worker_id: str, item: ClaimedTask, outcome: Outcome, now: datetime
    ) -> None:
        """Write an outcome other than an advance."""
        task, store = item.task, tx.processor
        caller = Caller(task["org_id"], Actor(ActorType.WORKER, worker_id))
        if isinstance(outcome, Done) and outcome.result.action is StepAction.CANCEL:
            store.finish_task(task["id"], worker_id, "cancelled", now, outcome.result.note)
        elif isinstance(outcome, Done) and outcome.result.action is StepAction.HOLD:
            store.hold_task(task["id"], worker_id, now)
        elif isinstance(outcome, Done) and outcome.result.action is StepAction.EXIT:
            if store.finish_task(task["id"], worker_id, "cancelled", now, outcome.result.note):
                live = _current(tx, [task["enrollment_id"]], LIVE)
                move(tx, caller, live, EnrollmentStatus.EXITED, now, reason=outcome.result.exit_reason)
        elif isinstance(outcome, Retry) and not outcome.counts:  # a closed send window
            if store.retry_task(task["id"], worker_id, outcome.at, now, None):
                store.uncount_attempt(task["id"])
        elif isinstance(outcome, Retry):
            if store.retry_task(task["id"], worker_id, outcome.at, now, outcome.error):
                log.info(
                    "worker %s: task %s failed (%s); retry at %s",
                    worker_id,
                    task["id"],
                    outcome.error,
                    outcome.at.isoformat(),
                )
        elif isinstance(outcome, Failed | Dead):
            error = (
                outcome.error
                if isinstance(outcome, Failed)
                else f"gave up after {outcome.attempts} attempts: {outcome.error}"
            )
            self._fail(tx, caller, item, error, now)

    def _fail(self, tx: Tx, caller: Caller, item: ClaimedTask, error: str, now: datetime) -> None:
        """A permanent failure: the task and its enrollment fail with the error, recorded in the outbox."""
        task = item.task
        if not tx.processor.finish_task(task["id"], caller.actor.id, "failed", now, error):
            return
        if task["action"] in ("email", "webhook"):
            tx.processor.record_sends(
                [_outbox_row(item, Delivered("failed", item.recipient, detail=error), now)]
            )
        live = _current(tx, [task["enrollment_id"]], LIVE)  # not one exited meanwhile
        move(tx, caller, live, EnrollmentStatus.FAILED, now, error=error)
        log.warning("worker %s: task %s failed permanently: %s", caller.actor.id, task["id"], error)


#: Outcomes that finish the task and move its enrollment on.
_ADVANCING = (StepAction.RUN, StepAction.ADVANCE)


def _run_database_action(tx: Tx, task: dict[str, Any], now: datetime) -> None:
    """The event-queue steps that change the contact, run as the task finishes."""
    if task["action"] == "add_tag":
        tx.contacts.add_tags(task["org_id"], task["contact_id"], [task["step_config"]["tag"]])
    elif task["action"] == "update_contact":
        fields = {k: v for k, v in (task["step_config"].get("fields") or {}).items() if k in _UPDATABLE}
        tx.contacts.update_contact(task["org_id"], task["contact_id"], {**fields, "updated_at": now})


def _current(
    tx: Tx, enrollment_ids: list[str], statuses: tuple[EnrollmentStatus, ...]
) -> list[dict[str, Any]]:
    """The enrollments as they are now, in the order given, those with one of ``statuses``."""
    current = tx.enrollments.get_enrollments(enrollment_ids)
    return [current[i] for i in enrollment_ids if i in current and current[i]["status"] in statuses]


def _enrollment_of(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": task["enrollment_id"],
        "org_id": task["org_id"],
        "sequence_id": task["sequence_id"],
        "contact_id": task["contact_id"],
        "status": task["enrollment_status"],
    }


def _outbox_row(item: ClaimedTask, delivered: Delivered, now: datetime) -> dict[str, Any]:
    task = item.task
    return {
        "org_id": task["org_id"],
        "idempotency_key": item.key,
        "task_id": task["id"],
        "sequence_id": task["sequence_id"],
        "enrollment_id": task["enrollment_id"],
        "contact_id": task["contact_id"],
        "channel": task["action"],
        "status": delivered.status,
        "recipient": delivered.recipient,
        "subject": delivered.subject,
        "body": delivered.body,
        "headers": delivered.headers,
        "detail": delivered.detail,
        "created_at": now,
    }
