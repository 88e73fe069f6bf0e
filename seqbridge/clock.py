"""Time, injectable: production reads the system clock, tests drive a manual one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: Set by :func:`one_instant`: the moment every clock reads in this thread (or task) meanwhile.
_INSTANT: ContextVar[datetime | None] = ContextVar("seqbridge_instant", default=None)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""


@contextmanager
def one_instant(clock: Clock) -> Iterator[datetime]:
    """Within the block, every clock read in this thread gives the same moment: the changes of a
    batch commit together, so they carry one time (and group into one statement each)."""
    token = _INSTANT.set(clock.now())
    try:
        yield _INSTANT.get()
    finally:
        _INSTANT.reset(token)


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return _INSTANT.get() or datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; for tests and benchmarks."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        instant = _INSTANT.get()
        if instant is not None:
            return instant
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` (or by ``timedelta(**kwargs)``) and return the new time."""
        with self._lock:
            self._now += delta if delta is not None else timedelta(**kwargs)
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment
