"""The delivery job: claim due webhook deliveries → plan and call remote targets → settle (the
local actions, each delivery's mark and its audit events), all through
:class:`seqbridge.services.processing.DeliveryProcessing`.

A crash at any point leaves each delivery either settled or still leased; the lease then expires
and another worker (or this one, restarted) runs it again from the start.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from seqbridge.jobs import Outcome
from seqbridge.services import Services
from seqbridge.worker import Batches, StopFlag

Row = dict[str, Any]


#: The smallest batch a worker claims: what it starts with, and comes back to when idle.
FIRST_BATCH = 10


class DeliveryJob:
    """Webhook deliveries on the job contract (a :class:`seqbridge.worker.BatchJob`).

    The batch adapts to the backlog: a worker claims :data:`FIRST_BATCH` at first and twice what
    its last claim found after that, up to ``DELIVERY_BATCH``. A deep queue is drained in big
    batches (few statements per delivery), a trickle in small ones (each settles at once), and a
    worker that has just started, perhaps after a crash, commits early and often. A claim that
    found only urgent deliveries (opt-outs, which go first and alone) says nothing of the backlog
    behind them, so it leaves the size as it was, unless it was full: then the urgent backlog is
    itself deep (a wave of STOPs) and the size grows as for any other.
    """

    name = "deliveries"
    settle_every = 0.5  # seconds: a batch waiting on slow remote targets settles what it has

    def __init__(self, services: Services, batch: int | None = None) -> None:
        self.processing = services.deliveries.processing
        self.batch = batch or int(services.settings["DELIVERY_BATCH"])
        self.size = min(FIRST_BATCH, self.batch)

    @property
    def lease(self) -> timedelta:
        return self.processing.lease

    def claim(self, worker_id: str) -> list[Row]:
        claimed = self.processing.claim(worker_id, self.size)
        full = len(claimed) >= self.size
        if full or not claimed or not all(row["priority"] for row in claimed):
            # An urgent claim (opt-outs alone) that was not full says nothing of the backlog
            # behind it: keep the size. A full one means the urgent backlog itself is deep.
            self.size = max(min(FIRST_BATCH, self.batch), min(self.batch, 2 * len(claimed)))
        return claimed

    def run(self, worker_id: str, item: Row) -> Outcome:
        return self.processing.run(item)

    def crashed(self, item: Row, error: Exception) -> Outcome:
        return self.processing.crashed(item, error)

    def checkpoint(self, item: Row, outcome: Outcome) -> bool:
        return False  # remote actions carry idempotency keys: the whole batch settles at once

    def settle(self, worker_id: str, ran: list[tuple[Row, Outcome]]) -> None:
        self.processing.settle(worker_id, ran)

    def extend(self, worker_id: str, items: list[Row]) -> None:
        self.processing.extend(worker_id, items)

    def release(self, worker_id: str, items: list[Row]) -> None:
        self.processing.release(worker_id, items)


class DeliveryProcessor(Batches[Row]):
    """The delivery job, driven: ``run_once(worker_id)`` claims, runs and settles one batch."""

    def __init__(
        self, services: Services, *, stopping: StopFlag | None = None, batch: int | None = None
    ) -> None:
        super().__init__(DeliveryJob(services, batch), stopping or StopFlag())
