"""One SQLite writer at a time across every process on a database, handed over without polling.

SQLite lets one transaction write; the others retry on a busy handler that sleeps 1, 2, 5 … up to
100 ms between tries, so under load the lock sits free while writers sleep (seen as a one-second
p99 with two web processes). Writers here queue instead, and each wait is bounded by the busy
timeout, after which the database counts as busy (503, retry later):

- threads of one process on a lock;
- processes on an ``flock`` of ``<database>.writelock``. The flock *is* the lock: the kernel
  drops it when its holder exits, even by SIGKILL, so a dead writer never wedges the others.
- A process that finds the flock taken blocks in ``poll()`` on a FIFO,
  ``<database>.writelock.wake``, and every holder writes one byte to it as it lets go: the next
  writer wakes at once, with no polling loop. The byte is only a wake-up; a waiter looks at the
  flock again after :data:`SAFETY_NET` seconds without one (a holder that died had no chance to
  write it).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import select
import stat
import threading
import time
from collections.abc import Iterator

from seqbridge.errors import ServiceUnavailable

#: How long a waiter sleeps without a wake-up before it looks at the flock again.
SAFETY_NET = 0.05
#: Where no FIFO can be made (a file system without them): how often to look instead.
_FALLBACK_POLL = 0.001


class SQLiteWriteLock:
    """The right to write to one SQLite database (see the module docstring)."""

    def __init__(self, database: str, timeout_seconds: float, *, safety_net: float = SAFETY_NET) -> None:
        self.path = database + ".writelock"
        self.wake_path = database + ".writelock.wake"
        self.timeout = timeout_seconds
        self.safety_net = safety_net
        self._thread_lock = threading.Lock()
        self._owner: int | None = None  # the thread holding it (it may enter again)
        self._pid: int | None = None
        self._fd = -1
        self._wake_read = self._wake_write = -1
        self._poller: select.poll | None = None
        #: Times a waiter woke up to look at the flock (tests count them: no polling).
        self.wakeups = 0

    def _open(self) -> None:
        """Open the lock file and the FIFO, once per process (a forked child needs its own: a
        flock held through an inherited descriptor would be the parent's)."""
        if self._pid == os.getpid():
            return
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._wake_read = self._wake_write = -1
        self._poller = None
        try:
            os.mkfifo(self.wake_path, 0o600)
        except FileExistsError:
            pass
        except OSError:  # no FIFOs on this file system: waiters look every millisecond instead
            self._pid = os.getpid()
            return
        reader = os.open(self.wake_path, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISFIFO(os.fstat(reader).st_mode):  # something else took the name
            os.close(reader)
        else:
            self._wake_read = reader
            self._wake_write = os.open(self.wake_path, os.O_WRONLY | os.O_NONBLOCK)
            self._poller = select.poll()
            self._poller.register(reader, select.POLLIN)
        self._pid = os.getpid()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body of the ``with``. Raises :class:`ServiceUnavailable`
        ``database_unavailable`` if it cannot be had within the busy timeout."""
        if self._owner == threading.get_ident():  # already ours: a group commit's leader holds it
            yield
            return
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise busy()
        self._owner = threading.get_ident()
        try:
            self._lock_file(deadline)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._wake_others()
        finally:
            self._owner = None
            self._thread_lock.release()

    def _lock_file(self, deadline: float) -> None:
        self._open()
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise busy()
            if self._poller is None:
                time.sleep(min(remaining, _FALLBACK_POLL))
                continue
            # Sleeps until a holder lets go (or the safety net). A byte left over from an
            # earlier release wakes us at once: harmless, we look and sleep again.
            self._poller.poll(math.ceil(min(remaining, self.safety_net) * 1000))
            self.wakeups += 1
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 65536)

    def _wake_others(self) -> None:
        if self._wake_write >= 0:
            with contextlib.suppress(BlockingIOError):  # the FIFO is full: waiters wake anyway
                os.write(self._wake_write, b"\0")


def busy() -> ServiceUnavailable:
    """The answer when the database stays locked past the busy timeout."""
    return ServiceUnavailable(
        "The database is busy; retry later.", code="database_unavailable", headers={"Retry-After": "1"}
    )
