"""The step processor: claim due tasks → run the step → record the send and advance, or retry.

Every step execution has a stable idempotency key (enrollment, step). A send is recorded in the
outbox under that key in the same transaction that finishes the task and schedules the next
step, so a crash between "sent" and "advanced" cannot happen; the key also travels with the
message (Message-ID, webhook-id) so a receiver can drop the one resend a crash during the
network call may cause. Emails with no SMTP configured, and the add_tag / update_contact
actions, are database-only and run exactly once.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from seqbridge.audit import record, record_many, tag_for
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.jobs import RetryPolicy
from seqbridge.services import Services
from seqbridge.services.common import format_time
from seqbridge.services.contacts import TEXT_FIELDS
from seqbridge.services.enrollment import ineligibility
from seqbridge.services.scheduling import step_delay, task_idempotency_key, task_row
from seqbridge.signing import master_secret
from seqbridge.storage.tx import Tx
from seqbridge.templating import render
from seqbridge.worker import StopFlag
from seqbridge.worker.channels import (
    Delivered,
    DeliveryFailure,
    PermanentFailure,
    SmtpSettings,
    TransientFailure,
    WebhookSender,
    build_email,
    email_headers,
    send_email,
    sender_of,
)
from seqbridge.worker.windows import next_opening

log = logging.getLogger("seqbridge.worker")

#: Why an ineligible contact leaves, as an exit reason.
_EXIT_REASON = {"contact_status:unsubscribed": "unsubscribed", "contact_status:bounced": "bounced",
                "contact_status:do_not_contact": "do_not_contact", "converted_customer": "converted",
                "active_ticket:open": "active_ticket"}  # fmt: skip
_UPDATABLE = set(TEXT_FIELDS) | {"status", "converted", "timezone"}


class StepProcessor:
    """A worker job. One call of :meth:`run_once` handles at most one batch."""

    name = "steps"

    def __init__(self, services: Services, *, stopping: StopFlag | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        settings = services.settings
        self.services = services
        self.db = services.db
        self.clock = services.clock
        self.stopping = stopping or StopFlag()
        self.rng = rng or random.Random()
        self.batch = settings["PROCESSOR_BATCH"]
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.max_attempts = settings["PROCESSOR_MAX_ATTEMPTS"]
        self.policy = RetryPolicy.from_settings(settings, "PROCESSOR")
        self.smtp = SmtpSettings.parse(settings["SMTP_URL"])
        self.smtp_timeout = settings["SMTP_TIMEOUT_SECONDS"]
        self.mail_from = settings["MAIL_FROM"]
        self._webhooks: WebhookSender | None = None
        self._last_heartbeat: datetime | None = None

    @property
    def webhooks(self) -> WebhookSender:
        if self._webhooks is None:
            settings = self.services.settings
            secret = master_secret(settings)
            self._webhooks = WebhookSender(
                secret, settings["WEBHOOK_TIMEOUT_SECONDS"], settings["ALLOW_PRIVATE_TARGETS"]
            )
        return self._webhooks

    # The loop -------------------------------------------------------------------------------

    def run_once(self, worker_id: str) -> int:
        """Claim one batch of due tasks and run them; return how many were handled.

        What a batch needs is read in the claiming transaction. Each task is decided in memory
        (and sent, for network channels); the outcomes are written together in one transaction,
        flushed at once after every network send so a crash can repeat at most the one message
        in flight.
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            reclaimed = tx.processor.reclaim_expired_leases(now)
            ids = tx.processor.claim_due_tasks(now, worker_id, now + self.lease, self.batch)
            tasks = tx.processor.load_tasks(ids)
            people = tx.processor.load_contacts([t["contact_id"] for t in tasks])
            sent = tx.processor.find_sends([task_idempotency_key(t) for t in tasks])
            steps = _steps_by_sequence(tx.sequences.list_steps(list({t["sequence_id"] for t in tasks})))
        if reclaimed:
            log.warning("worker %s: reclaimed %d tasks whose lease expired", worker_id, reclaimed)
        batch = _Batch(self, worker_id, steps)
        for index, task in enumerate(tasks):
            if self.stopping.is_set():
                batch.flush()
                rest = [t["id"] for t in tasks[index:]]
                with self.db.transaction() as tx:
                    tx.processor.release_tasks(worker_id, rest, self.clock.now())
                log.info("worker %s: stopping; released %d claimed tasks", worker_id, len(rest))
                break
            self._keep_leases(worker_id, tasks[index:])
            outcome = self._decide(task, people.get(task["contact_id"]), sent.get(task_idempotency_key(task)))
            batch.add(outcome)
            if outcome.delivered is not None and outcome.delivered.status == "sent":
                batch.flush()
        batch.flush()
        self._heartbeat(worker_id, batch.handled)
        if batch.handled:
            log.info("worker %s: ran %d steps", worker_id, batch.handled)
        return batch.handled

    def _heartbeat(self, worker_id: str, handled: int) -> None:
        """Record that this worker is alive: after work, and otherwise every third of a lease (an
        idle poll must not cost a write transaction each second)."""
        now = self.clock.now()
        if handled or self._last_heartbeat is None or now - self._last_heartbeat >= self.lease / 3:
            with self.db.transaction() as tx:
                tx.processor.heartbeat(worker_id, now, handled)
            self._last_heartbeat = now

    def stopped(self, worker_id: str) -> None:
        with self.db.transaction() as tx:
            tx.processor.worker_stopped(worker_id, self.clock.now())

    def _keep_leases(self, worker_id: str, remaining: list[dict[str, Any]]) -> None:
        """Heartbeat: extend the leases still held when half of the lease has gone by."""
        now = self.clock.now()
        if (
            remaining
            and remaining[0]["lease_expires_at"]
            and remaining[0]["lease_expires_at"] - now < self.lease / 2
        ):
            with self.db.transaction() as tx:
                tx.processor.extend_leases(worker_id, [t["id"] for t in remaining], now + self.lease)
            for task in remaining:
                task["lease_expires_at"] = now + self.lease

    # One task -------------------------------------------------------------------------------

    def _decide(
        self, task: dict[str, Any], contact: dict[str, Any] | None, sent_status: str | None
    ) -> Outcome:
        """What happens to one task: checks first (all re-made at send time), then the action."""
        now = self.clock.now()
        if task["step_id"] is None or task["action"] is None or contact is None:
            return Outcome(task, "cancel", error="the step or contact is gone")
        if task["enrollment_status"] == "paused":
            return Outcome(task, "hold")
        if task["enrollment_status"] != "active":
            return Outcome(task, "cancel", error=f"enrollment {task['enrollment_status']}")
        reason = ineligibility(contact)
        if reason is not None:
            # An unsubscribe (or bounce, conversion) between two steps ends the enrollment.
            return Outcome(task, "exit", error=f"contact ineligible: {reason}",
                           exit_reason=_EXIT_REASON.get(reason, "ineligible"))  # fmt: skip
        opens = next_opening(now, task["send_window"], contact.get("timezone"))
        if opens > now:
            return Outcome(task, "defer", at=opens)
        if sent_status in ("sent", "captured"):
            # Sent before a crash stopped the advance: advance now, never send twice.
            return Outcome(task, "done")
        try:
            return Outcome(task, "done", delivered=self._deliver(task, contact, now))
        except TransientFailure as failure:
            if task["attempts"] >= self.max_attempts:
                return Outcome(task, "fail", error=f"gave up after {task['attempts']} attempts: {failure}",
                               recipient=self._recipient(task, contact))  # fmt: skip
            delay = self.backoff(task["attempts"], failure.retry_after)
            return Outcome(task, "retry", at=now + timedelta(seconds=delay), error=str(failure))
        except DeliveryFailure as failure:
            return Outcome(task, "fail", error=str(failure), recipient=self._recipient(task, contact))

    @staticmethod
    def _recipient(task: dict[str, Any], contact: dict[str, Any]) -> str:
        return (task["webhook_url"] if task["action"] == "webhook" else contact.get("email")) or ""

    def _deliver(self, task: dict[str, Any], contact: dict[str, Any], now: datetime) -> Delivered | None:
        """Run the step's action. Email and webhook go out here; add_tag and update_contact are
        database changes made when the outcome is written (returns None)."""
        key = task_idempotency_key(task)
        action = task["action"]
        if action == "email":
            if not contact.get("email"):
                raise PermanentFailure("the contact has no email address")
            context = _template_context(contact, task)
            try:
                subject = render(task["subject"] or "", context)
                body = render(task["body"] or "", context)
            except Exception as error:  # a sandbox refusal or a runtime template error
                raise PermanentFailure(f"template error: {type(error).__name__}: {error}") from None
            sender = sender_of(task["from_email"], task["from_name"], self.mail_from)
            if self.smtp is None:
                headers = email_headers(key=key, sender=sender, to=contact["email"], reply_to=task["reply_to_email"],
                                        subject=subject)  # fmt: skip
                return Delivered("captured", contact["email"], subject, body, headers, "no SMTP configured")
            message = build_email(key=key, sender=sender, to=contact["email"], reply_to=task["reply_to_email"],
                                  subject=subject, body=body)  # fmt: skip
            answer = send_email(self.smtp, message, self.smtp_timeout)
            return Delivered(
                "sent", contact["email"], subject, body, {k: str(v) for k, v in message.items()}, answer
            )
        if action == "webhook":
            event = {
                "type": "sequence.step",
                "id": key,
                "timestamp": format_time(now),
                "data": {
                    "sequence": {
                        "id": task["sequence_id"],
                        "name": task["sequence_name"],
                        "kind": task["sequence_kind"],
                    },
                    "step": {"id": task["step_id"], "position": task["position"]},
                    "enrollment": {"id": task["enrollment_id"], "data": task["enrollment_data"] or {}},
                    "contact": {
                        k: contact.get(k) for k in ("id", "email", "phone", *TEXT_FIELDS, "attributes")
                    },
                },
            }
            answer = self.webhooks.post(task["webhook_url"], key, event)
            return Delivered("sent", task["webhook_url"], None, None, {"webhook-id": key}, answer)
        return None

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        return self.policy.delay(attempt, retry_after, self.rng)


@dataclass
class Outcome:
    """What one task came to: done (sent or run), cancel, hold, exit, defer (send window),
    retry or fail."""

    task: dict[str, Any]
    kind: str
    delivered: Delivered | None = None
    at: datetime | None = None
    error: str | None = None
    exit_reason: str | None = None
    recipient: str | None = None


class _Batch:
    """Outcomes waiting to be written; :meth:`flush` writes them in one transaction."""

    def __init__(
        self, processor: StepProcessor, worker_id: str, steps: dict[str, list[dict[str, Any]]]
    ) -> None:
        self.processor = processor
        self.worker_id = worker_id
        self.steps = steps
        self.pending: list[Outcome] = []
        self.handled = 0

    def add(self, outcome: Outcome) -> None:
        self.pending.append(outcome)
        self.handled += 1

    def flush(self) -> None:
        if not self.pending:
            return
        outcomes, self.pending = self.pending, []
        processor = self.processor
        now = processor.clock.now()
        with processor.db.transaction() as tx:
            done = [o for o in outcomes if o.kind == "done"]
            held = tx.processor.finish_tasks([o.task["id"] for o in done], self.worker_id, "done", now)
            lost = [o.task["id"] for o in done if o.task["id"] not in held]
            if lost:
                log.warning(
                    "worker %s: lost the lease on tasks %s before finishing them", self.worker_id, lost
                )
            done = [o for o in done if o.task["id"] in held]
            tx.processor.record_sends([_outbox_row(o.task, o.delivered, now) for o in done if o.delivered])
            for outcome in done:
                self._run_database_action(tx, outcome.task, now)
            self._advance(tx, [o.task for o in done], now)
            for outcome in outcomes:
                if outcome.kind != "done":
                    self._settle(tx, outcome, now)

    def _run_database_action(self, tx: Tx, task: dict[str, Any], now: datetime) -> None:
        if task["action"] == "add_tag":
            tx.contacts.add_tags(task["org_id"], task["contact_id"], [task["step_config"]["tag"]])
        elif task["action"] == "update_contact":
            fields = {k: v for k, v in (task["step_config"].get("fields") or {}).items() if k in _UPDATABLE}
            tx.contacts.update_contact(task["org_id"], task["contact_id"], {**fields, "updated_at": now})

    def _advance(self, tx: Tx, tasks: list[dict[str, Any]], now: datetime) -> None:
        """Schedule each next step from now (sequences), or complete enrollments with nothing left."""
        next_tasks, pointers, finished = [], [], []
        queue_enrollments = [t["enrollment_id"] for t in tasks if t["sequence_kind"] != "sequence"]
        still_open = tx.processor.enrollments_with_open_tasks(queue_enrollments)
        for task in tasks:
            if task["sequence_kind"] == "sequence":
                steps = self.steps.get(task["sequence_id"], [])
                current = next((s for s in steps if s["id"] == task["step_id"]), None)
                following = next(
                    (s for s in steps if current and s["position"] == current["position"] + 1), None
                )
                if following is not None:
                    at = now + step_delay(following)
                    next_tasks.append(task_row(_enrollment_of(task), following, at, now))
                    pointers.append(
                        {"enrollment_id": task["enrollment_id"], "step_id": following["id"], "at": at}
                    )
                    continue
            elif task["enrollment_id"] in still_open:
                self.processor.services.scheduler.mirror(tx, task["enrollment_id"], now)
                continue
            finished.append(task)
        tx.enrollments.insert_tasks(next_tasks)
        tx.processor.point_enrollments(pointers, now)
        tx.processor.complete_enrollments([t["enrollment_id"] for t in finished], now)
        by_org: dict[str, list[dict[str, Any]]] = {}
        for task in finished:
            by_org.setdefault(task["org_id"], []).append(task)
        for org_id, org_tasks in by_org.items():
            caller = Caller(org_id, Actor(ActorType.WORKER, self.worker_id))
            record_many(tx, caller, [(tag_for(caller, "enrollment", "completed"), "enrollment", t["enrollment_id"],
                                      {"sequence_id": t["sequence_id"], "contact_id": t["contact_id"],
                                       "reason": "all steps sent"}) for t in org_tasks], now)  # fmt: skip

    def _settle(self, tx: Tx, outcome: Outcome, now: datetime) -> None:
        """Write an outcome other than done."""
        task, store, worker_id = outcome.task, tx.processor, self.worker_id
        caller = Caller(task["org_id"], Actor(ActorType.WORKER, worker_id))
        if outcome.kind == "cancel":
            store.finish_task(task["id"], worker_id, "cancelled", now, outcome.error)
        elif outcome.kind == "hold":
            store.hold_task(task["id"], worker_id, now)
        elif outcome.kind == "exit":
            if store.finish_task(task["id"], worker_id, "cancelled", now, outcome.error):
                self.processor.services.enrollment.end_in_tx(tx, caller, _enrollment_of(task), "exited",
                                                             outcome.exit_reason, now)  # fmt: skip
        elif outcome.kind == "defer":
            if store.retry_task(task["id"], worker_id, outcome.at, now, None):
                store.uncount_attempt(task["id"])
        elif outcome.kind == "retry":
            if store.retry_task(task["id"], worker_id, outcome.at, now, outcome.error):
                log.info("worker %s: task %s failed (%s); retry at %s", worker_id, task["id"], outcome.error,
                         format_time(outcome.at))  # fmt: skip
        elif outcome.kind == "fail":
            self._fail(tx, caller, outcome, now)

    def _fail(self, tx: Tx, caller: Caller, outcome: Outcome, now: datetime) -> None:
        """A permanent failure: the task and its enrollment fail with the error, recorded in the outbox."""
        task, error = outcome.task, outcome.error or "failed"
        if not tx.processor.finish_task(task["id"], self.worker_id, "failed", now, error):
            return
        if task["action"] in ("email", "webhook"):
            tx.processor.record_sends(
                [_outbox_row(task, Delivered("failed", outcome.recipient or "", detail=error), now)]
            )
        tx.enrollments.update_enrollment(task["enrollment_id"], {"status": "failed", "last_error": error,
                                                                 "next_send_at": None, "current_step_id": None,
                                                                 "updated_at": now})  # fmt: skip
        tx.enrollments.cancel_open_tasks(task["enrollment_id"], now, "enrollment failed")
        record(tx, caller, tag_for(caller, "enrollment", "failed"), "enrollment", task["enrollment_id"],
               {"sequence_id": task["sequence_id"], "contact_id": task["contact_id"], "error": error[:500]}, now)  # fmt: skip
        log.warning("worker %s: task %s failed permanently: %s", self.worker_id, task["id"], error)


def _steps_by_sequence(steps: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        grouped.setdefault(step["sequence_id"], []).append(step)
    return grouped


def _enrollment_of(task: dict[str, Any]) -> dict[str, Any]:
    return {"id": task["enrollment_id"], "org_id": task["org_id"], "sequence_id": task["sequence_id"],
            "contact_id": task["contact_id"]}  # fmt: skip


def _template_context(contact: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    context = {k: contact.get(k) for k in ("email", "phone", *TEXT_FIELDS, "timezone")}
    context["attributes"] = contact.get("attributes") or {}
    context["contact"] = dict(context)
    context["sequence"] = {"name": task["sequence_name"]}
    context["enrollment"] = {"data": task["enrollment_data"] or {}}
    return context


def _outbox_row(task: dict[str, Any], delivered: Delivered, now: datetime) -> dict[str, Any]:
    return {
        "org_id": task["org_id"],
        "idempotency_key": task_idempotency_key(task),
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
