"""The REST hooks jobs: relay new audit events into notifications, then send each, signed, and
record the outcome.

Sending is on the job contract: claim a batch of due notifications → send one (a network call) →
its outcome (sent; retry with the :class:`RetryPolicy`, honouring ``Retry-After``; failed; dead;
or 410 Gone) → recorded at once by :class:`SubscriptionService`, before the next send, so a crash
can repeat at most the one notification on the wire. It is sent again with the same
``webhook-id`` when its lease expires, and the receiver can drop the repeat.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

from seqbridge import metrics
from seqbridge.jobs import Done, Failed, Outcome, RetryPolicy
from seqbridge.services import Services
from seqbridge.services.subscriptions import GONE
from seqbridge.worker import Batches, StopFlag
from seqbridge.worker.channels import Gone, WebhookSender, attempt

log = logging.getLogger("seqbridge.worker")

Notification = dict[str, Any]


class NotificationJob:
    """REST hook notifications on the job contract (a :class:`seqbridge.worker.BatchJob`)."""

    name = "rest_hook_sends"
    settle_every = 0.0  # every send is on the wire: record it before the next

    def __init__(self, services: Services, *, batch: int = 20, rng: random.Random | None = None) -> None:
        settings = services.settings
        self.subscriptions = services.subscriptions
        self.clock = services.clock
        self.batch = batch
        self.rng = rng or random.Random()
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.policy = RetryPolicy.from_settings(settings, "PROCESSOR")
        self.sender = WebhookSender(
            None,
            settings["WEBHOOK_TIMEOUT_SECONDS"],
            settings["ALLOW_PRIVATE_TARGETS"],
            user_agent="Seqbridge/0.1 (+REST hook)",
        )

    def claim(self, worker_id: str) -> list[Notification]:
        return self.subscriptions.claim(worker_id, self.batch, self.lease)

    def run(self, worker_id: str, item: Notification) -> Outcome:
        """Send one notification, signed with its subscription's secret."""
        secret = self.subscriptions.secret_of(item["subscription_id"])
        return attempt(
            lambda: self.sender.post(item["target_url"], item["id"], item["payload"], secret=secret),
            self.policy,
            item["attempts"],
            self.clock.now(),
            self.rng,
            failed=lambda failure: Failed(str(failure), GONE if isinstance(failure, Gone) else None),
        )

    def crashed(self, item: Notification, error: Exception) -> Outcome:
        return self.policy.after_failure(
            item["attempts"], f"{type(error).__name__}: {error}", self.clock.now()
        )

    def checkpoint(self, item: Notification, outcome: Outcome) -> bool:
        return True

    def settle(self, worker_id: str, ran: list[tuple[Notification, Outcome]]) -> None:
        for notification, outcome in ran:
            status = self.subscriptions.record_outcome(notification, worker_id, outcome)
            metrics.REST_HOOKS.labels(event=notification["event"], outcome=status).inc()
            detail = outcome.result if isinstance(outcome, Done) else outcome.error
            log.info(
                "rest hook %s %s → %s: %s",
                notification["event"],
                notification["id"],
                status,
                detail,
                extra={"org": notification["org_id"]},
            )

    def extend(self, worker_id: str, items: list[Notification]) -> None:
        pass  # a batch is 20 sends at most, each bounded by the webhook timeout, well inside a lease

    def release(self, worker_id: str, items: list[Notification]) -> None:
        pass  # the rest are picked up again when their lease expires


class HookNotifier:
    """A worker job: relay one batch of audit events into notifications, then send one batch."""

    name = "rest_hooks"

    def __init__(
        self,
        services: Services,
        *,
        stopping: StopFlag | None = None,
        batch: int = 20,
        rng: random.Random | None = None,
    ) -> None:
        self.subscriptions = services.subscriptions
        self.sends = Batches(NotificationJob(services, batch=batch, rng=rng), stopping or StopFlag())

    def run_once(self, worker_id: str) -> int:
        return self.subscriptions.relay() + self.sends.run_once(worker_id)
