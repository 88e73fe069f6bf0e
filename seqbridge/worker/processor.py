"""The step processor, the worker half: claim due tasks → decide, then send (email, signed
webhook) → one outcome per task → settle the batch, all but the sending through
:class:`seqbridge.services.steps.StepService`.

Every step execution has a stable idempotency key (enrollment, step). A send is recorded in the
outbox under that key in the same transaction that finishes the task and schedules the next
step, and the batch settles right after every message that went out over the network, so a
crash between "sent" and "advanced" can repeat at most that one message; the key travels with
it (Message-ID, webhook-id) so the receiver can drop the repeat. Emails with no SMTP
configured, and the add_tag / update_contact actions, are database-only and run exactly once.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from seqbridge.jobs import Done, Outcome, RetryPolicy
from seqbridge.services import Services
from seqbridge.services.common import format_time
from seqbridge.services.contacts import TEXT_FIELDS
from seqbridge.services.steps import ClaimedTask, Delivered, StepAction, StepResult
from seqbridge.signing import master_secret
from seqbridge.templating import render
from seqbridge.worker import Batches, StopFlag
from seqbridge.worker.channels import (
    PermanentFailure,
    SmtpSettings,
    WebhookSender,
    attempt,
    build_email,
    email_headers,
    send_email,
    sender_of,
)

log = logging.getLogger("seqbridge.worker")


class StepJob:
    """Sequence steps on the job contract (a :class:`seqbridge.worker.BatchJob`)."""

    name = "steps"
    settle_every = 5.0  # seconds: a batch of slow sends still settles what it has

    def __init__(self, services: Services, *, rng: random.Random | None = None) -> None:
        settings = services.settings
        self.services = services
        self.steps = services.steps
        self.clock = services.clock
        self.rng = rng or random.Random()
        self.batch = settings["PROCESSOR_BATCH"]
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.policy = RetryPolicy.from_settings(settings, "PROCESSOR")
        self.smtp = SmtpSettings.parse(settings["SMTP_URL"])  # raises ValueError for a bad URL
        self.smtp_timeout = settings["SMTP_TIMEOUT_SECONDS"]
        self.mail_from = settings["MAIL_FROM"]
        self._webhooks: WebhookSender | None = None

    @property
    def webhooks(self) -> WebhookSender:
        if self._webhooks is None:
            settings = self.services.settings
            self._webhooks = WebhookSender(
                master_secret(settings),
                settings["WEBHOOK_TIMEOUT_SECONDS"],
                settings["ALLOW_PRIVATE_TARGETS"],
            )
        return self._webhooks

    # The contract ----------------------------------------------------------------------------

    def claim(self, worker_id: str) -> list[ClaimedTask]:
        return self.steps.claim(worker_id, self.batch, self.lease)

    def run(self, worker_id: str, item: ClaimedTask) -> Outcome:
        """Decide the task (the service's checks), then carry the step out."""
        decided = self.steps.decide(item)
        if decided is not None:
            return decided
        now = self.clock.now()
        outcome = attempt(lambda: self._deliver(item, now), self.policy, item.task["attempts"], now, self.rng)
        if isinstance(outcome, Done):
            return Done(StepResult(StepAction.RUN, delivered=outcome.result))
        return outcome

    def crashed(self, item: ClaimedTask, error: Exception) -> Outcome:
        return self.policy.after_failure(
            item.task["attempts"], f"{type(error).__name__}: {error}", self.clock.now()
        )

    def checkpoint(self, item: ClaimedTask, outcome: Outcome) -> bool:
        """A message went out over the network: record it before the next one."""
        delivered = outcome.result.delivered if isinstance(outcome, Done) else None
        return delivered is not None and delivered.status == "sent"

    def settle(self, worker_id: str, ran: list[tuple[ClaimedTask, Outcome]]) -> None:
        self.steps.settle(worker_id, ran)

    def extend(self, worker_id: str, items: list[ClaimedTask]) -> None:
        self.steps.extend(worker_id, items, self.lease)

    def release(self, worker_id: str, items: list[ClaimedTask]) -> None:
        self.steps.release(worker_id, items)

    # Carrying a step out ---------------------------------------------------------------------

    def _deliver(self, item: ClaimedTask, now: datetime) -> Delivered | None:
        """Run the step's action. Email and webhook go out here; add_tag and update_contact are
        database changes made when the outcome is settled (returns None)."""
        task, contact, key = item.task, item.contact or {}, item.key
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
            address = {
                "key": key,
                "sender": sender,
                "to": contact["email"],
                "reply_to": task["reply_to_email"],
            }
            if self.smtp is None:
                headers = email_headers(**address, subject=subject)
                return Delivered("captured", contact["email"], subject, body, headers, "no SMTP configured")
            message = build_email(**address, subject=subject, body=body)
            answer = send_email(self.smtp, message, self.smtp_timeout)
            headers = {k: str(v) for k, v in message.items()}
            return Delivered("sent", contact["email"], subject, body, headers, answer)
        if action == "webhook":
            answer = self.webhooks.post(task["webhook_url"], key, _webhook_event(task, contact, key, now))
            return Delivered("sent", task["webhook_url"], None, None, {"webhook-id": key}, answer)
        return None


class StepProcessor(Batches[ClaimedTask]):
    """The step job, driven: ``run_once(worker_id)`` claims, runs and settles one batch, then
    records the worker's heartbeat (after work, and otherwise every third of a lease: an idle
    poll must not cost a write transaction each second)."""

    def __init__(
        self, services: Services, *, stopping: StopFlag | None = None, rng: random.Random | None = None
    ) -> None:
        self.step_job = StepJob(services, rng=rng)
        super().__init__(self.step_job, stopping or StopFlag())
        self.steps = services.steps
        self._last_heartbeat: float | None = None

    def run_once(self, worker_id: str) -> int:
        handled = super().run_once(worker_id)
        lease = self.step_job.lease.total_seconds()
        if handled or self._last_heartbeat is None or time.monotonic() - self._last_heartbeat >= lease / 3:
            self.steps.heartbeat(worker_id, handled)
            self._last_heartbeat = time.monotonic()
        if handled:
            log.info("worker %s: ran %d steps", worker_id, handled)
        return handled

    def stopped(self, worker_id: str) -> None:
        self.steps.stopped(worker_id)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before the retry after failed attempt ``attempt`` (the one RetryPolicy)."""
        return self.step_job.policy.delay(attempt, retry_after, self.step_job.rng)


def _template_context(contact: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    context = {k: contact.get(k) for k in ("email", "phone", *TEXT_FIELDS, "timezone")}
    context["attributes"] = contact.get("attributes") or {}
    context["contact"] = dict(context)
    context["sequence"] = {"name": task["sequence_name"]}
    context["enrollment"] = {"data": task["enrollment_data"] or {}}
    return context


def _webhook_event(task: dict[str, Any], contact: dict[str, Any], key: str, now: datetime) -> dict[str, Any]:
    return {
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
            "contact": {k: contact.get(k) for k in ("id", "email", "phone", *TEXT_FIELDS, "attributes")},
        },
    }
