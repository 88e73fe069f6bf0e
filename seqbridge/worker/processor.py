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
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from seqbridge.audit import record, tag_for
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.services import Services
from seqbridge.services.common import format_time
from seqbridge.services.contacts import TEXT_FIELDS
from seqbridge.services.enrollment import ineligibility
from seqbridge.services.scheduling import step_delay, task_idempotency_key, task_row
from seqbridge.storage.tx import Tx
from seqbridge.templating import render
from seqbridge.worker.channels import (
    Delivered,
    DeliveryFailure,
    PermanentFailure,
    SmtpSettings,
    TransientFailure,
    WebhookSender,
    build_email,
    send_email,
    sender_of,
    webhook_secret,
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

    def __init__(self, services: Services, *, stopping: threading.Event | None = None,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        settings = services.settings
        self.services = services
        self.db = services.db
        self.clock = services.clock
        self.stopping = stopping or threading.Event()
        self.rng = rng or random.Random()
        self.batch = settings["PROCESSOR_BATCH"]
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.max_attempts = settings["PROCESSOR_MAX_ATTEMPTS"]
        self.retry_base = settings["RETRY_BASE_SECONDS"]
        self.retry_max = settings["RETRY_MAX_SECONDS"]
        self.smtp = SmtpSettings.parse(settings["SMTP_URL"])
        self.smtp_timeout = settings["SMTP_TIMEOUT_SECONDS"]
        self.mail_from = settings["MAIL_FROM"]
        self._webhooks: WebhookSender | None = None
        self._var_dir = Path(settings.get("VAR_DIR") or Path.cwd() / "var")

    @property
    def webhooks(self) -> WebhookSender:
        if self._webhooks is None:
            settings = self.services.settings
            secret = webhook_secret(settings["WEBHOOK_SECRET"], self._var_dir)
            self._webhooks = WebhookSender(
                secret, settings["WEBHOOK_TIMEOUT_SECONDS"], settings["ALLOW_PRIVATE_TARGETS"]
            )
        return self._webhooks

    # The loop -------------------------------------------------------------------------------

    def run_once(self, worker_id: str) -> int:
        """Claim one batch of due tasks and run them; return how many were handled."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            reclaimed = tx.processor.reclaim_expired_leases(now)
            ids = tx.processor.claim_due_tasks(now, worker_id, now + self.lease, self.batch)
            tasks = tx.processor.load_tasks(ids)
        if reclaimed:
            log.warning("worker %s: reclaimed %d tasks whose lease expired", worker_id, reclaimed)
        handled = 0
        for index, task in enumerate(tasks):
            if self.stopping.is_set():
                rest = [t["id"] for t in tasks[index:]]
                with self.db.transaction() as tx:
                    tx.processor.release_tasks(worker_id, rest, self.clock.now())
                log.info("worker %s: stopping; released %d claimed tasks", worker_id, len(rest))
                break
            self._keep_leases(worker_id, tasks[index:])
            self._run(task, worker_id)
            handled += 1
        with self.db.transaction() as tx:
            tx.processor.heartbeat(worker_id, self.clock.now(), handled)
        if handled:
            log.info("worker %s: ran %d steps", worker_id, handled)
        return handled

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

    def _run(self, task: dict[str, Any], worker_id: str) -> None:
        now = self.clock.now()
        caller = Caller(task["org_id"], Actor(ActorType.WORKER, worker_id))
        with self.db.transaction() as tx:
            contact = tx.processor.load_contact(task["contact_id"])
            if task["step_id"] is None or task["action"] is None or contact is None:
                tx.processor.finish_task(
                    task["id"], worker_id, "cancelled", now, "the step or contact is gone"
                )
                return
            if task["enrollment_status"] == "paused":
                tx.processor.hold_task(task["id"], worker_id, now)
                return
            if task["enrollment_status"] != "active":
                tx.processor.finish_task(
                    task["id"], worker_id, "cancelled", now, f"enrollment {task['enrollment_status']}"
                )
                return
            reason = ineligibility(contact)
            if reason is not None:
                # Re-checked at send time: an unsubscribe between two steps ends the enrollment.
                if tx.processor.finish_task(
                    task["id"], worker_id, "cancelled", now, f"contact ineligible: {reason}"
                ):
                    self.services.enrollment.end_in_tx(tx, caller, _enrollment_of(task), "exited",
                                                       _EXIT_REASON.get(reason, "ineligible"), now)  # fmt: skip
                return
            opens = next_opening(now, task["send_window"], contact.get("timezone"))
            if opens > now:
                tx.processor.retry_task(task["id"], worker_id, opens, now, None)
                tx.processor.uncount_attempt(task["id"])
                return
            already = tx.processor.find_send(task_idempotency_key(task))
        if already is not None and already["status"] in ("sent", "captured"):
            # Sent before a crash stopped the advance: advance now, never send twice.
            self._complete(task, worker_id, caller, None, contact)
            return
        try:
            delivered = self._deliver(task, contact, now)
        except TransientFailure as failure:
            self._retry_or_fail(task, worker_id, caller, failure)
        except (PermanentFailure, DeliveryFailure) as failure:
            self._fail(task, worker_id, caller, str(failure), contact)
        else:
            self._complete(task, worker_id, caller, delivered, contact)

    def _deliver(self, task: dict[str, Any], contact: dict[str, Any], now: datetime) -> Delivered | None:
        """Run the step's action. Email and webhook go out here; add_tag and update_contact are
        database changes made in the completing transaction (returns None)."""
        key = task_idempotency_key(task)
        action = task["action"]
        context = _template_context(contact, task)
        if action == "email":
            if not contact.get("email"):
                raise PermanentFailure("the contact has no email address")
            try:
                subject = render(task["subject"] or "", context)
                body = render(task["body"] or "", context)
            except Exception as error:  # a sandbox refusal or a runtime template error
                raise PermanentFailure(f"template error: {type(error).__name__}: {error}") from None
            sender = sender_of(task["from_email"], task["from_name"], self.mail_from)
            message = build_email(key=key, sender=sender, to=contact["email"], reply_to=task["reply_to_email"],
                                  subject=subject, body=body)  # fmt: skip
            headers = {k: str(v) for k, v in message.items()}
            if self.smtp is None:
                return Delivered("captured", contact["email"], subject, body, headers, "no SMTP configured")
            answer = send_email(self.smtp, message, self.smtp_timeout)
            return Delivered("sent", contact["email"], subject, body, headers, answer)
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

    # Outcomes -------------------------------------------------------------------------------

    def _complete(self, task, worker_id, caller, delivered: Delivered | None, contact) -> None:
        """Record the send, finish the task and schedule what comes next, in one transaction."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            if not tx.processor.finish_task(task["id"], worker_id, "done", now):
                log.warning("worker %s: lost the lease on task %s before finishing it", worker_id, task["id"])
                return
            if delivered is not None:
                tx.processor.record_send(_outbox_row(task, delivered, now))
            elif task["action"] == "add_tag":
                tx.contacts.add_tags(task["org_id"], task["contact_id"], [task["step_config"]["tag"]])
            elif task["action"] == "update_contact":
                fields = {
                    k: v for k, v in (task["step_config"].get("fields") or {}).items() if k in _UPDATABLE
                }
                tx.contacts.update_contact(task["org_id"], task["contact_id"], {**fields, "updated_at": now})
            self._advance(tx, task, caller, now)

    def _advance(self, tx: Tx, task: dict[str, Any], caller: Caller, now: datetime) -> None:
        """Schedule the next step from now (sequences), or complete the enrollment when nothing is left."""
        enrollment = _enrollment_of(task)
        if task["sequence_kind"] == "sequence":
            steps = tx.sequences.list_steps([task["sequence_id"]])
            current = next((s for s in steps if s["id"] == task["step_id"]), None)
            following = next((s for s in steps if current and s["position"] == current["position"] + 1), None)
            if following is not None:
                tx.enrollments.insert_tasks(
                    [task_row(enrollment, following, now + step_delay(following), now)]
                )
                self.services.scheduler.mirror(tx, enrollment["id"], now)
                return
        elif tx.enrollments.open_tasks(enrollment["id"]):
            self.services.scheduler.mirror(tx, enrollment["id"], now)
            return
        tx.enrollments.update_enrollment(enrollment["id"], {"status": "completed", "completed_at": now,
                                                            "next_send_at": None, "current_step_id": None,
                                                            "updated_at": now})  # fmt: skip
        record(tx, caller, tag_for(caller, "enrollment", "completed"), "enrollment", enrollment["id"],
               {"sequence_id": task["sequence_id"], "contact_id": task["contact_id"], "reason": "all steps sent"}, now)  # fmt: skip

    def _retry_or_fail(self, task, worker_id, caller, failure: TransientFailure) -> None:
        if task["attempts"] >= self.max_attempts:
            self._fail(task, worker_id, caller, f"gave up after {task['attempts']} attempts: {failure}", None)
            return
        now = self.clock.now()
        delay = self.backoff(task["attempts"], failure.retry_after)
        with self.db.transaction() as tx:
            tx.processor.retry_task(task["id"], worker_id, now + timedelta(seconds=delay), now, str(failure))
        log.info("worker %s: task %s failed (%s); retry %d in %.0f s", worker_id, task["id"], failure,
                 task["attempts"], delay)  # fmt: skip

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` + 1: the server's Retry-After when given, else
        exponential from RETRY_BASE_SECONDS with ±20% jitter, capped at RETRY_MAX_SECONDS."""
        if retry_after is not None:
            return min(max(retry_after, 1.0), 86400.0)
        exponential = min(self.retry_max, self.retry_base * 2 ** max(0, attempt - 1))
        return exponential * self.rng.uniform(0.8, 1.2)

    def _fail(self, task, worker_id, caller, error: str, contact) -> None:
        """A permanent failure: the task and its enrollment fail with the error, recorded in the outbox."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            if not tx.processor.finish_task(task["id"], worker_id, "failed", now, error):
                return
            if (
                task["action"] in ("email", "webhook")
                and tx.processor.find_send(task_idempotency_key(task)) is None
            ):
                recipient = (
                    task["webhook_url"] if task["action"] == "webhook" else (contact or {}).get("email")
                )
                tx.processor.record_send(
                    _outbox_row(task, Delivered("failed", recipient or "", detail=error), now)
                )
            tx.enrollments.update_enrollment(task["enrollment_id"], {"status": "failed", "last_error": error,
                                                                     "next_send_at": None, "current_step_id": None,
                                                                     "updated_at": now})  # fmt: skip
            tx.enrollments.cancel_open_tasks(task["enrollment_id"], now, "enrollment failed")
            record(tx, caller, tag_for(caller, "enrollment", "failed"), "enrollment", task["enrollment_id"],
                   {"sequence_id": task["sequence_id"], "contact_id": task["contact_id"], "error": error[:500]}, now)  # fmt: skip
        log.warning("worker %s: task %s failed permanently: %s", worker_id, task["id"], error)


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
