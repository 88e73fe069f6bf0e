"""Enrollment: one engine under all three API dialects and the webhook bridge, in two halves
that share one service object:

- :mod:`seqbridge.services.enrolling`: enroll one contact, a list, or those a filter matches;
  the eligibility guardrails; auto-enrollment when contacts are created or tagged.
- :mod:`seqbridge.services.lifecycle`: what happens to an enrollment afterwards, every status
  change through one function (:func:`~seqbridge.services.lifecycle.move`): pause, resume,
  exit, unenroll, complete, fail.
"""

from __future__ import annotations

from seqbridge.clock import Clock
from seqbridge.services.enrolling import Enrolling
from seqbridge.services.lifecycle import EnrollmentLifecycle
from seqbridge.services.scheduling import Scheduler
from seqbridge.services.sequences import SequenceService
from seqbridge.storage.db import Database


class EnrollmentService(Enrolling, EnrollmentLifecycle):
    """Enrolling and the enrollment lifecycle, on one database, clock and scheduler."""

    def __init__(self, db: Database, clock: Clock, sequences: SequenceService, scheduler: Scheduler) -> None:
        self.db = db
        self.clock = clock
        self.sequences = sequences
        self.scheduler = scheduler
