"""The replay-job worker job, on the job contract: claim one replay-by-filter job (a lease) →
run (nothing leaves the database: the outcome is Done) → settle, which replays the job's next
batch of deliveries and records its progress in one transaction, through
:class:`seqbridge.services.replay_jobs.ReplayJobService`.

A crash before the settle commits leaves the job as it was, leased; the lease expires and the
next turn goes on from the job's cursor, so nothing is replayed twice or skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from seqbridge.jobs import Done, Outcome
from seqbridge.services import Services
from seqbridge.worker import Batches, StopFlag

Job = dict[str, Any]


class ReplayJob:
    """Replay jobs on the job contract (a :class:`seqbridge.worker.BatchJob`): one job a turn,
    ``batch`` of its deliveries replayed (``REPLAY_JOB_BATCH``)."""

    name = "replay_jobs"
    settle_every = 0.0

    def __init__(self, services: Services, batch: int | None = None) -> None:
        self.replay_jobs = services.replay_jobs
        self.batch = batch or int(services.settings["REPLAY_JOB_BATCH"])

    @property
    def lease(self) -> timedelta:
        return self.replay_jobs.lease

    def claim(self, worker_id: str) -> list[Job]:
        return self.replay_jobs.claim(worker_id)

    def run(self, worker_id: str, item: Job) -> Outcome:
        return Done()  # replaying is database work only: the settle does it, in one transaction

    def crashed(self, item: Job, error: Exception) -> Outcome:
        return Done()  # cannot happen (run does nothing); settling goes on from the cursor

    def checkpoint(self, item: Job, outcome: Outcome) -> bool:
        return False

    def settle(self, worker_id: str, ran: list[tuple[Job, Outcome]]) -> int:
        """Replay each job's next batch; return how many deliveries were handled."""
        return sum(self.replay_jobs.settle(worker_id, job, self.batch) for job, _ in ran)

    def extend(self, worker_id: str, items: list[Job]) -> None:
        self.replay_jobs.extend(worker_id, items)

    def release(self, worker_id: str, items: list[Job]) -> None:
        self.replay_jobs.release(worker_id, items)


class ReplayJobRunner(Batches[Job]):
    """The replay job, driven: ``run_once(worker_id)`` replays at most one batch of one job and
    returns how many deliveries it handled."""

    def __init__(
        self, services: Services, *, batch: int | None = None, stopping: StopFlag | None = None
    ) -> None:
        super().__init__(ReplayJob(services, batch), stopping or StopFlag())
