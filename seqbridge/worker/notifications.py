"""The REST hooks job: relay new audit events into notifications → send each, signed → record.

Sending is the step processor's business (same retry settings, same Standard Webhooks signing);
what a subscription wants and what an outcome means is :class:`SubscriptionService`'s. A crash
between a send and its record leaves the notification leased; when the lease expires it is sent
again with the same ``webhook-id``, so a receiver can drop the repeat.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from seqbridge import metrics
from seqbridge.jobs import RetryPolicy
from seqbridge.services import Services
from seqbridge.services.subscriptions import Outcome
from seqbridge.worker import StopFlag
from seqbridge.worker.channels import Gone, PermanentFailure, TransientFailure, WebhookSender

log = logging.getLogger("seqbridge.worker")


class HookNotifier:
    """A worker job. One call of :meth:`run_once` relays one batch and sends one batch."""

    name = "rest_hooks"

    def __init__(self, services: Services, *, stopping: StopFlag | None = None, batch: int = 20,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        settings = services.settings
        self.subscriptions = services.subscriptions
        self.stopping = stopping or StopFlag()
        self.batch = batch
        self.rng = rng or random.Random()
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.policy = RetryPolicy.from_settings(settings, "PROCESSOR")
        self.sender = WebhookSender(None, settings["WEBHOOK_TIMEOUT_SECONDS"], settings["ALLOW_PRIVATE_TARGETS"],
                                    user_agent="Seqbridge/0.1 (+REST hook)")  # fmt: skip

    def run_once(self, worker_id: str) -> int:
        handled = self.subscriptions.relay()
        for notification in self.subscriptions.claim(worker_id, self.batch, self.lease):
            if self.stopping.is_set():
                break  # the rest are picked up again when their lease expires
            outcome = self._send(notification)
            status = self.subscriptions.record_outcome(
                notification, worker_id, outcome, max_attempts=self.policy.max_attempts,
                retry_in=self.policy.delay(notification["attempts"], outcome.retry_after, self.rng),
            )  # fmt: skip
            metrics.REST_HOOKS.labels(event=notification["event"], outcome=status).inc()
            log.info("rest hook %s %s → %s: %s", notification["event"], notification["id"], status, outcome.detail,
                     extra={"org": notification["org_id"]})  # fmt: skip
            handled += 1
        return handled

    def _send(self, notification: dict) -> Outcome:
        try:
            answer = self.sender.post(notification["target_url"], notification["id"], notification["payload"],
                                      secret=self.subscriptions.secret_of(notification["subscription_id"]))  # fmt: skip
        except Gone as gone:
            return Outcome("gone", str(gone))
        except TransientFailure as failure:
            return Outcome("retry", str(failure), failure.retry_after)
        except PermanentFailure as failure:
            return Outcome("failed", str(failure))
        return Outcome("sent", answer)
