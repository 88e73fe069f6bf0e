"""Housekeeping the worker does now and then: keep the query planner's statistics current.

SQLite only learns how selective an index is from ``ANALYZE``; its documentation asks long-lived
connections to run ``PRAGMA optimize`` every few hours, which re-analyzes only the tables whose
statistics drifted. PostgreSQL's autovacuum does the same by itself.
"""

from __future__ import annotations

import logging
import time

from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.worker")


class Statistics:
    """A worker job: :meth:`Database.optimize` in the worker's first round (a database fresh from
    its migrations, or copied, may have no statistics, or stale ones), then at most every
    ``every_seconds``."""

    name = "statistics"

    def __init__(self, db: Database, every_seconds: float = 3600.0) -> None:
        self.db = db
        self.every = every_seconds
        self._next = time.monotonic()
        self._started = False

    def run_once(self, worker_id: str) -> int:
        """Optimize when due; never counts as work (an idle worker still sleeps)."""
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self.db.optimize(starting=not self._started)
            self._started = True
            log.debug("worker %s: planner statistics refreshed", worker_id)
        return 0
