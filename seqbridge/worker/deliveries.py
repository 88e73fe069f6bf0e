"""The delivery job: claim due webhook deliveries → map → act → record, or retry later.

Each delivery runs in its own transaction (see :meth:`DeliveryService.process`), so a crash at
any point leaves it either fully processed or still leased; the lease then expires and another
worker (or this one, restarted) runs it again from the start.
"""

from __future__ import annotations

import logging

from seqbridge.services import Services
from seqbridge.worker import StopFlag

log = logging.getLogger("seqbridge.worker")


class DeliveryProcessor:
    """A worker job. One call of :meth:`run_once` handles at most one batch."""

    name = "deliveries"

    def __init__(self, services: Services, *, stopping: StopFlag | None = None, batch: int = 10) -> None:
        self.deliveries = services.deliveries
        self.stopping = stopping or StopFlag()
        self.batch = batch

    def run_once(self, worker_id: str) -> int:
        ids = self.deliveries.claim(worker_id, self.batch)
        handled = 0
        for index, delivery_id in enumerate(ids):
            if self.stopping.is_set():
                released = self.deliveries.release(ids[index:], worker_id)
                log.info("worker %s: stopping; released %d claimed deliveries", worker_id, released)
                break
            if self.deliveries.process(delivery_id, worker_id) is not None:  # it logs its outcome
                handled += 1
        return handled
