"""SQLite WAL checkpoints, off the write path.

In WAL mode every commit appends the pages it changed to the ``-wal`` file, and by default the
commit that takes the WAL past 1,000 pages also *checkpoints* it: copies those pages back into
the database file and fsyncs it, before it returns. That commit runs under the write lock every
writer of the database queues on, so every thousand pages one unlucky batch of webhooks holds
everybody up for the whole copy. Measured on a batch of eight receipts (BENCHMARKS.md, issue 18),
the automatic checkpoints were two thirds of what the COMMIT statements cost.

So Seqbridge's connections turn the automatic checkpoint off (``PRAGMA wal_autocheckpoint=0``) and
each process that writes runs a :class:`Checkpointer`: a daemon thread that, when this process has
committed since its last look, runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own.
A passive checkpoint takes no write lock: writers keep committing while it copies what is
already committed, and the WAL starts over from the beginning at the first write after a
checkpoint that caught up. Durability does not change: a commit is durable when its WAL frames
are (``synchronous=FULL`` syncs them at every commit); the checkpoint only moves them. The WAL
file is trimmed back to :data:`JOURNAL_SIZE_LIMIT` when it restarts.

A process that ends closes its connections, and the last connection to the database checkpoints
what is left; until then, readers read committed pages from the WAL as always.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger("seqbridge.storage")

#: Seconds between two looks at whether this process committed anything.
INTERVAL_SECONDS = 0.5
#: The WAL file is truncated to this size when it restarts (64 MiB).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


class Checkpointer:
    """Checkpoints the database at ``path`` in the background while this process writes to it."""

    def __init__(self, path: str, interval: float = INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self.pid = os.getpid()
        #: Background checkpoints run so far, and what the last one found: ``(busy, frames in
        #: the WAL, frames checkpointed)``.
        self.rounds = 0
        self.last: tuple[int, int, int] | None = None
        self._conn: sqlite3.Connection | None = None
        self._written = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seqbridge-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """This process committed a write: the next round checkpoints (cheap: sets a flag)."""
        self._written.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint now: ``(busy, frames in the WAL, frames checkpointed)``. Only the
        checkpointer's thread calls it, on the connection it keeps for that."""
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=0.1, isolation_level=None)
        busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, frames, done

    def stop(self) -> None:
        self._stopped.set()
        self._written.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._written.wait()
            if self._stopped.wait(self.interval):  # let a burst of commits pile up first
                break
            self._written.clear()
            try:
                self.last = self.checkpoint()
                self.rounds += 1
            except sqlite3.Error as error:  # busy with another checkpoint, or the file is gone
                log.debug("WAL checkpoint of %s skipped: %s", self.path, error)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
