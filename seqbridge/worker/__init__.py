"""The background worker: claim due work → run it → finish or retry.

It runs a list of :class:`Job` s in a loop. Each job does one bounded batch per call and says how
much it did; when no job had anything to do, the worker sleeps for the poll interval. SIGTERM
and SIGINT stop it after the current batch. The step processor and webhook delivery processing
plug in here as jobs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from typing import Protocol

from seqbridge.clock import Clock, SystemClock
from seqbridge.errors import ServiceUnavailable

log = logging.getLogger("seqbridge.worker")


class Job(Protocol):
    name: str

    def run_once(self, worker_id: str) -> int:
        """Do at most one batch of due work; return how many items were handled."""


def backoff(
    attempt: int, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds before retry ``attempt`` + 1: the server's Retry-After when given (at least 1 s,
    at most a day), else exponential from ``base`` with ±20% jitter, capped at ``cap``."""
    if retry_after is not None:
        return min(max(retry_after, 1.0), 86400.0)
    return min(cap, base * 2 ** max(0, attempt - 1)) * rng.uniform(0.8, 1.2)


class StopFlag:
    """A stop request that a signal handler may set.

    ``threading.Event.set()`` takes a lock that the interrupted main thread can be holding inside
    ``Event.wait()``; called from a signal handler it can deadlock the worker (seen in CI). This
    flag is a plain attribute, and ``wait`` sleeps in short slices, checking it.
    """

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._set and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(0.05, remaining))
        return self._set


class Worker:
    def __init__(self, jobs: list[Job], *, poll_interval: float = 1.0, clock: Clock | None = None) -> None:
        self.jobs = jobs
        self.poll_interval = poll_interval
        self.clock = clock or SystemClock()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = StopFlag()
        #: Called in the loop (never in the signal handler) after a SIGHUP: e.g. reload mappings.
        self.on_reload: list[Callable[[], object]] = []
        self._reload_requested = False

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, _signum, _frame) -> None:
        self._reload_requested = True  # a plain store: safe in a signal handler, unlike a lock

    def _on_signal(self, signum, _frame) -> None:
        log.info(
            "worker %s: received %s, stopping after the current batch", self.id, signal.Signals(signum).name
        )
        self.stopping.set()

    def run_pending(self) -> int:
        """Run every job once; return the total handled."""
        handled = 0
        for job in self.jobs:
            try:
                handled += job.run_once(self.id)
            except ServiceUnavailable as error:
                # The database is down or restarting: one line per poll, not a traceback; every
                # claim is leased, so whatever was in hand is picked up again when it is back.
                log.warning("worker %s: job %s: %s", self.id, job.name, error.message)
            except Exception:
                # One failing job must not stop the others; the job's own retry logic owns recovery.
                log.exception("worker %s: job %s failed", self.id, job.name)
        return handled

    def run(self) -> None:
        """Loop until stopped."""
        log.info("worker %s: started with jobs: %s", self.id, ", ".join(j.name for j in self.jobs) or "none")
        while not self.stopping.is_set():
            if self._reload_requested:
                self._reload_requested = False
                log.info("worker %s: SIGHUP, reloading", self.id)
                for reload in self.on_reload:
                    reload()
            if self.run_pending() == 0:
                self.stopping.wait(self.poll_interval)
        log.info("worker %s: stopped", self.id)
