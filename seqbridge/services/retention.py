"""Retention: delete what has served its purpose, so the database stays bounded
(``seqbridge deliveries prune --older-than``).

What goes, in short transactions of at most ``batch_size`` rows (no long write lock):

- webhook deliveries that are finished — processed, failed, dead, rejected, ignored — received and
  last changed before the cutoff, with their dedupe keys. Queued (including retrying) and
  processing deliveries are never touched.
- API idempotency keys past the 24 hours their answers are kept for.
- outbox rows (the record of each send) made before the cutoff, unless their step task is still
  open: a task that may run again looks its send up there.
- REST hook notifications that are sent, failed or dropped and unchanged since the cutoff.

**The dedupe window.** A delivery's dedupe keys are what make a sender's retry a duplicate, so a
delivery that owns keys (processed, failed, dead) is kept for :data:`DEDUPE_WINDOW` whatever the
cutoff says. Seven days is over twice the longest retry schedule of the senders we take: Standard
Webhooks (Svix) retries for about three days, Meta for about a day, Typeform and HubSpot for hours,
Twilio, Zapier and ActiveCampaign not at all. Rejected and ignored deliveries own no keys and go at
the cutoff (a flood of unsigned requests can be cleared within hours).

The audit log is never pruned: it is a hash chain, and deleting from it would break it. Each
organization that lost rows gets one ``cli:retention:pruned`` event with the counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest
from seqbridge.services.common import format_time
from seqbridge.services.idempotency import KEEP as IDEMPOTENCY_KEEP
from seqbridge.services.inbox import DeliveryStatus
from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.retention")

#: How long a delivery that owns dedupe keys is kept at least (see the module docstring).
DEDUPE_WINDOW = timedelta(days=7)
#: Finished deliveries that own dedupe keys, and those that own none.
KEYED = (DeliveryStatus.PROCESSED.value, DeliveryStatus.FAILED.value, DeliveryStatus.DEAD.value)
UNKEYED = (DeliveryStatus.REJECTED.value, DeliveryStatus.IGNORED.value)


@dataclass
class Pruned:
    """What one prune deleted, in all and per organization (``org_id`` → counts)."""

    cutoff: datetime
    keyed_cutoff: datetime
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    by_org: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, org_id: str, kind: str, count: int) -> None:
        if count:
            self.totals[kind] += count
            counts = self.by_org.setdefault(org_id, dict.fromkeys(_KINDS, 0))
            counts[kind] += count


_KINDS = ("deliveries", "delivery_keys", "idempotency_keys", "outbox", "rest_hook_notifications")


class RetentionService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def prune(
        self, cutoff: datetime, caller_for_org: Callable[[str], Caller], *, batch_size: int = 500
    ) -> Pruned:
        """Delete what is older than ``cutoff`` as the module docstring says; record one audit event
        per organization that lost rows (``caller_for_org`` names who asked). Raises
        :class:`BadRequest` ``cutoff_in_future``."""
        now = self.clock.now()
        if cutoff > now:
            raise BadRequest(
                f"{format_time(cutoff)} is in the future; nothing is older than it yet.",
                code="cutoff_in_future",
            )
        pruned = Pruned(cutoff, min(cutoff, now - DEDUPE_WINDOW))
        with self.db.transaction(write=False) as tx:
            orgs = [org["id"] for org in tx.orgs.list_orgs()]
        for org_id in orgs:
            self._deliveries(org_id, pruned, batch_size)
            self._outbox(org_id, pruned, batch_size)
            self._notifications(org_id, pruned, batch_size)
        self._idempotency_keys(now, pruned, batch_size)
        for org_id, counts in pruned.by_org.items():
            caller = caller_for_org(org_id)
            data: dict[str, Any] = {
                "older_than": format_time(cutoff),
                "keyed_older_than": format_time(pruned.keyed_cutoff),
                **counts,
            }
            with self.db.transaction() as tx:
                record(
                    tx,
                    caller,
                    tag_for(caller, "retention", "pruned"),
                    "retention",
                    format_time(cutoff),
                    data,
                    self.clock.now(),
                )
        log.info("pruned %s (older than %s)", pruned.totals, format_time(cutoff))
        return pruned

    def _deliveries(self, org_id: str, pruned: Pruned, batch_size: int) -> None:
        after = None
        while True:
            with self.db.transaction() as tx:
                rows = tx.deliveries.prune_candidates(org_id, pruned.cutoff, after, batch_size)
                if not rows:
                    return
                after = (rows[-1]["received_at"], rows[-1]["id"])
                ids = [
                    r["id"]
                    for r in rows
                    if r["updated_at"] < pruned.cutoff
                    and (
                        r["status"] in UNKEYED
                        or (r["status"] in KEYED and r["received_at"] < pruned.keyed_cutoff)
                    )
                ]
                deliveries, keys = tx.deliveries.delete_finished(ids, KEYED + UNKEYED, pruned.cutoff)
            pruned.add(org_id, "deliveries", deliveries)
            pruned.add(org_id, "delivery_keys", keys)

    def _outbox(self, org_id: str, pruned: Pruned, batch_size: int) -> None:
        after = 0
        while True:
            with self.db.transaction() as tx:
                ids = tx.processor.old_outbox_ids(org_id, pruned.cutoff, after, batch_size)
                if not ids:
                    return
                after = ids[-1]
                deleted = tx.processor.delete_outbox(ids)
            pruned.add(org_id, "outbox", deleted)

    def _notifications(self, org_id: str, pruned: Pruned, batch_size: int) -> None:
        while True:
            with self.db.transaction() as tx:
                deleted = tx.subscriptions.delete_notifications(
                    tx.subscriptions.old_notification_ids(org_id, pruned.cutoff, batch_size)
                )
            pruned.add(org_id, "rest_hook_notifications", deleted)
            if deleted < batch_size:
                return

    def _idempotency_keys(self, now: datetime, pruned: Pruned, batch_size: int) -> None:
        expired_before = now - IDEMPOTENCY_KEEP
        while True:
            with self.db.transaction() as tx:
                keys = tx.idempotency.expired_keys(expired_before, now, batch_size)
                by_org: dict[str, list[str]] = {}
                for org_id, key in keys:
                    by_org.setdefault(org_id, []).append(key)
                deleted = {
                    org_id: tx.idempotency.delete_expired(org_id, names, expired_before)
                    for org_id, names in by_org.items()
                }
            for org_id, count in deleted.items():
                pruned.add(org_id, "idempotency_keys", count)
            if len(keys) < batch_size:
                return
