"""The replay-job worker job: lease one replay-by-filter job → replay its next batch → record
the progress (all of which :meth:`ReplayJobService.run_batch` does in one transaction).

Self-contained on purpose: it only needs ``name`` and ``run_once(worker_id) -> int``, so it
plugs into any loop that claims, runs and settles jobs.
"""

from __future__ import annotations

from seqbridge.services import Services


class ReplayJobRunner:
    """A worker job. One call of :meth:`run_once` replays at most one batch of one job."""

    name = "replay_jobs"

    def __init__(self, services: Services, *, batch: int | None = None) -> None:
        self.replay_jobs = services.replay_jobs
        self.batch = batch or services.settings["REPLAY_JOB_BATCH"]

    def run_once(self, worker_id: str) -> int:
        return self.replay_jobs.run_batch(worker_id, self.batch)
