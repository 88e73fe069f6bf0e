"""Wake-ups: new work, once committed, starts the worker's next batch at once instead of at its
next poll.

- **PostgreSQL**: the committing process sends ``NOTIFY seqbridge_work``; every worker keeps a
  connection of its own that ``LISTEN`` s on that channel (psycopg's ``Connection.notifies``).
- **SQLite** (the embedded default: the web processes and the worker share a host and the
  database file): each worker binds a Unix datagram socket in a directory next to the database
  (``var/seqbridge.db.wakeup/<pid>.sock``), and the committing process sends one byte to each.

Announcing is best effort and never raises: polling stays, so a lost wake-up (no worker
listening yet, a full socket buffer, a listener reconnecting) costs at most one poll interval.
Announce only after the commit (``Tx.on_commit``): a worker woken for a delivery it cannot see yet
would find nothing and go back to sleep.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import select
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from seqbridge.storage.bulk import execute_raw

if TYPE_CHECKING:
    from seqbridge.storage.db import Database
    from seqbridge.storage.tx import Tx

log = logging.getLogger("seqbridge.worker")

CHANNEL = "seqbridge_work"
#: How long a listener waits at a time before looking at its stop flag again.
_SLICE = 0.05
#: AF_UNIX paths are limited to 108 bytes; leave room for "/<pid>.sock".
_MAX_DIRECTORY = 90


def announce_work(databases: list[Database]) -> None:
    """``Tx.on_commit`` callback: wake the workers of each database (once per commit)."""
    for db in dict.fromkeys(databases):
        db.announcer.announce()


def wake_workers(tx: Tx) -> None:
    """Wake the workers of ``tx``'s database once ``tx`` commits. PostgreSQL: a ``NOTIFY`` inside
    the transaction (delivered at its commit, identical ones once; no connection or commit of its
    own). SQLite: the datagrams, after the commit."""
    if tx.db.is_postgresql:
        execute_raw(tx.conn, f"NOTIFY {CHANNEL}")
    else:
        tx.on_commit(announce_work, tx.db)


def socket_directory(database: str) -> Path:
    """Where the workers of a SQLite database listen: next to it, or (when that path is too long
    for a Unix socket) a directory in the temporary directory named after it."""
    beside = Path(os.path.abspath(database) + ".wakeup")
    if len(str(beside)) <= _MAX_DIRECTORY:
        return beside
    digest = hashlib.sha256(str(beside).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"seqbridge-wakeup-{digest}"


class Announcer:
    """The sending side, one per :class:`Database` (``db.announcer``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._socket: socket.socket | None = None
        self._directory = (
            socket_directory(db.engine.url.database) if db.is_sqlite and _file_database(db) else None
        )

    def announce(self) -> None:
        """Tell every listening worker there is new work. Never raises."""
        try:
            if self.db.is_postgresql:
                with self.db.engine.connect() as conn:
                    conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
                    conn.commit()
            elif self._directory is not None:
                self._datagrams()
        except Exception as error:  # the poll will find the work anyway
            log.debug("wake-up not sent: %s", error)

    def _datagrams(self) -> None:
        try:
            entries = list(os.scandir(self._directory))
        except FileNotFoundError:
            return  # no worker has listened on this database yet
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.setblocking(False)
        for entry in entries:
            if not entry.name.endswith(".sock"):
                continue
            try:
                self._socket.sendto(b"!", entry.path)
            except BlockingIOError:
                pass  # its buffer is full of wake-ups already
            except OSError as error:
                if error.errno == errno.ECONNREFUSED:  # a worker that died without cleaning up
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def close(self) -> None:
        """Close the sending socket (the database is being disposed of)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Listener:
    """The receiving side: a worker's wait between batches, cut short by a wake-up."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._socket: socket.socket | None = None
        self._poll: select.poll | None = None
        self._path: str | None = None
        self._pg = None
        self._retry_at = 0.0

    def open(self) -> None:
        """Start listening (best effort: a listener that cannot listen only polls)."""
        try:
            if self.db.is_postgresql:
                self._listen_postgresql()
            elif self.db.is_sqlite and _file_database(self.db):
                self._bind()
        except Exception as error:
            log.warning("wake-ups unavailable, polling only: %s", error)
            self.close()

    def _bind(self) -> None:
        directory = socket_directory(self.db.engine.url.database)
        directory.mkdir(mode=0o700, exist_ok=True)
        self._path = str(directory / f"{os.getpid()}.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._socket.bind(self._path)
        # poll, not select: a process with many files open has descriptors past FD_SETSIZE.
        self._poll = select.poll()
        self._poll.register(self._socket, select.POLLIN)

    def _listen_postgresql(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql")
        self._pg = psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=10
        )
        self._pg.execute(f"LISTEN {CHANNEL}")

    def drain(self) -> None:
        """Forget the wake-ups received so far (the batch about to run will see their work)."""
        self._received(0.0)

    def wait(self, timeout: float, stopped: Callable[[], bool]) -> bool:
        """Sleep up to ``timeout`` seconds, less if woken or ``stopped()``; True if woken."""
        deadline = time.monotonic() + timeout
        while not stopped() and (remaining := deadline - time.monotonic()) > 0:
            if self._received(min(_SLICE, remaining)):
                return True
        return False

    def _received(self, timeout: float) -> bool:
        if self._socket is not None:
            return self._received_datagram(timeout)
        if self.db.is_postgresql:
            return self._received_notification(timeout)
        if timeout:
            time.sleep(timeout)
        return False

    def _received_datagram(self, timeout: float) -> bool:
        if not self._poll.poll(timeout * 1000):
            return False
        with contextlib.suppress(BlockingIOError):
            while self._socket.recv(64):
                pass
        return True

    def _received_notification(self, timeout: float) -> bool:
        if self._pg is None:
            if time.monotonic() >= self._retry_at:  # reconnect after the database came back
                self._retry_at = time.monotonic() + 5
                self.open()
            if self._pg is None:
                if timeout:
                    time.sleep(timeout)
                return False
        try:
            woken = False
            for _ in self._pg.notifies(timeout=timeout, stop_after=1):
                woken = True
            if woken:  # take the others that came with it
                for _ in self._pg.notifies(timeout=0.0):
                    pass
            return woken
        except Exception as error:
            log.warning("wake-ups lost their connection, polling until it is back: %s", error)
            self._close_postgresql()
            return False

    def _close_postgresql(self) -> None:
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.close()
            self._pg = None

    def close(self) -> None:
        self._close_postgresql()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self._poll = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)
            self._path = None


def _file_database(db: Database) -> bool:
    database = db.engine.url.database
    return bool(database) and database != ":memory:" and not database.startswith("file:")
