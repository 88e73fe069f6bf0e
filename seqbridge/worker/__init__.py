"""The background worker: claim a batch → run each item → one typed outcome per item → settle.

The loop runs a list of jobs. A job is anything with ``run_once(worker_id) -> int`` (do at most
one bounded batch, say how much was handled); most are a :class:`BatchJob` driven by
:class:`Batches`, which owns the contract's mechanics so that no job repeats them:

- claim a batch under a lease (the job's service does it, in one transaction);
- run each item, getting back one outcome (:mod:`seqbridge.jobs`); an exception becomes the
  job's own "failed attempt" outcome, never a stopped worker;
- keep the leases alive while a long batch runs;
- settle the outcomes through the job's service, all at once, or right after an item whose
  run had an effect outside the database (an email on the wire), so a crash can repeat at most
  that one;
- on SIGTERM: settle what ran, release the rest.

When no job had anything to do, the worker sleeps for the poll interval, or until a wake-up
(:mod:`seqbridge.worker.wakeup`) says new work was committed. SIGTERM and SIGINT stop it after
the current batch; SIGHUP runs the reload callbacks.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Generic, Protocol, TypeVar

from seqbridge.clock import Clock, SystemClock
from seqbridge.errors import ServiceUnavailable
from seqbridge.jobs import Outcome
from seqbridge.storage.wakeup import Listener

log = logging.getLogger("seqbridge.worker")

Item = TypeVar("Item")


class Job(Protocol):
    """The simplest job: one bounded batch per call (e.g. the REST hook relay)."""

    name: str

    def run_once(self, worker_id: str) -> int:
        """Do at most one batch of due work; return how many items were handled."""


class BatchJob(Protocol[Item]):
    """A job on the contract. Its methods are thin: each calls the service that owns the items."""

    name: str
    #: How long a claim holds its items; :class:`Batches` extends it while a batch runs.
    lease: timedelta

    def claim(self, worker_id: str) -> list[Item]:
        """Lease a batch of due items (one transaction)."""

    def run(self, worker_id: str, item: Item) -> Outcome:
        """Run one item outside any transaction; network calls happen here."""

    def crashed(self, item: Item, error: Exception) -> Outcome:
        """The outcome of a run that raised (a bug, or the database): usually a retry."""

    def checkpoint(self, item: Item, outcome: Outcome) -> bool:
        """True when the run had an effect outside the database: settle before the next item."""

    #: Settle what ran once this many seconds have passed since the last settle, even mid-batch
    #: (slow remote calls must not hold back the local effects of the items before them).
    settle_every: float

    def settle(self, worker_id: str, ran: list[tuple[Item, Outcome]]) -> int | None:
        """Write the outcomes (one transaction where the service can). Return how much work
        that was when an item stands for more than one piece of it (a replay job's batch of
        deliveries), or None: one per item."""

    def extend(self, worker_id: str, items: list[Item]) -> None:
        """Extend the leases of items still in hand."""

    def release(self, worker_id: str, items: list[Item]) -> None:
        """Give back items claimed but not run (the worker is stopping)."""


class Batches(Generic[Item]):
    """Drives a :class:`BatchJob` through one claim per :meth:`run_once`."""

    def __init__(self, job: BatchJob[Item], stopping: StopFlag) -> None:
        self.job = job
        self.name = job.name
        self.stopping = stopping

    def run_once(self, worker_id: str) -> int:
        """Claim, run, settle one batch; return how many items it handled."""
        job = self.job
        items = job.claim(worker_id)
        if not items:
            return 0
        claimed_at = settled_at = time.monotonic()
        ran: list[tuple[Item, Outcome]] = []
        handled = 0
        for index, item in enumerate(items):
            if self.stopping.is_set():
                rest = items[index:]
                job.release(worker_id, rest)
                log.info(
                    "worker %s: %s: stopping; released %d claimed items", worker_id, self.name, len(rest)
                )
                break
            if time.monotonic() - claimed_at > job.lease.total_seconds() / 2:
                job.extend(worker_id, [i for i, _ in ran] + items[index:])
                claimed_at = time.monotonic()
            try:
                outcome = job.run(worker_id, item)
            except Exception as error:
                log.exception("worker %s: %s: running an item failed", worker_id, self.name)
                outcome = job.crashed(item, error)
            ran.append((item, outcome))
            if job.checkpoint(item, outcome) or time.monotonic() - settled_at > job.settle_every:
                handled += self._settle(worker_id, ran)
                ran = []
                settled_at = time.monotonic()
        if ran:
            handled += self._settle(worker_id, ran)
        return handled

    def _settle(self, worker_id: str, ran: list[tuple[Item, Outcome]]) -> int:
        settled = self.job.settle(worker_id, ran)
        return len(ran) if settled is None else settled


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
    """Runs its jobs in a loop; sleeps between idle rounds until the poll interval has passed or
    ``wakeup`` (a :class:`seqbridge.storage.wakeup.Listener`) says work was committed."""

    def __init__(
        self,
        jobs: list[Job],
        *,
        poll_interval: float = 1.0,
        clock: Clock | None = None,
        wakeup: Listener | None = None,
    ) -> None:
        self.jobs = jobs
        self.poll_interval = poll_interval
        self.clock = clock or SystemClock()
        self.wakeup = wakeup
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
        if self.wakeup is not None:
            self.wakeup.open()
        try:
            while not self.stopping.is_set():
                if self._reload_requested:
                    self._reload_requested = False
                    log.info("worker %s: SIGHUP, reloading", self.id)
                    for reload in self.on_reload:
                        reload()
                if self.wakeup is not None:
                    self.wakeup.drain()  # what they announced, the round below will find
                if self.run_pending() == 0:
                    self._idle()
        finally:
            if self.wakeup is not None:
                self.wakeup.close()
        log.info("worker %s: stopped", self.id)

    def _idle(self) -> None:
        if self.wakeup is None:
            self.stopping.wait(self.poll_interval)
        else:
            self.wakeup.wait(self.poll_interval, self.stopping.is_set)
