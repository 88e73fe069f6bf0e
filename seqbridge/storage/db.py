"""Engines and transactions. SQLite (the embedded default) and PostgreSQL run the same code.

SQLite runs in WAL mode with a busy timeout, and every transaction that writes starts with
``BEGIN IMMEDIATE`` so that two writers never deadlock upgrading a read lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from seqbridge.errors import ServiceUnavailable

if TYPE_CHECKING:
    from seqbridge.storage.tx import Tx

_WRITE_OPTION = "seqbridge_write"

#: The transaction open in this thread (or task), which a nested ``transaction()`` joins.
_OPEN: ContextVar[Tx | None] = ContextVar("seqbridge_open_tx", default=None)


def normalize_database_url(url: str) -> URL:
    """Accept ``postgres://``, ``postgresql://`` and ``sqlite:///`` URLs; use psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return parsed


def build_engine(url: str, settings: dict[str, Any] | None = None) -> Engine:
    """Create an engine for ``url`` with the pragmas and pool settings Seqbridge relies on."""
    settings = settings or {}
    parsed = normalize_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _build_sqlite_engine(parsed, settings)
    return create_engine(
        parsed,
        pool_size=int(settings.get("DB_POOL_SIZE", 5)),
        max_overflow=int(settings.get("DB_MAX_OVERFLOW", 15)),
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 10},
    )


def _build_sqlite_engine(parsed: URL, settings: dict[str, Any]) -> Engine:
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    busy_ms = int(settings.get("SQLITE_BUSY_TIMEOUT_MS", 5000))
    synchronous = settings.get("SQLITE_SYNCHRONOUS", "FULL")
    cache_kib = int(settings.get("SQLITE_CACHE_MB", 16)) * 1024
    engine = create_engine(
        parsed,
        connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
        # One connection per web thread at most (see gunicorn_conf.threads).
        pool_size=int(settings.get("DB_POOL_SIZE", 5)),
        max_overflow=int(settings.get("DB_MAX_OVERFLOW", 15)),
        # Hand out the most recently used connection: its page cache is the warm one.
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA cache_size=-{cache_kib}")  # negative: KiB, not pages
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class SQLiteWriteLock:
    """One writer at a time across every process on this database, with prompt hand-over.

    SQLite lets one transaction write; the others retry on a busy handler that sleeps 1, 2, 5 …
    up to 100 ms between tries, so under load the lock sits free while writers sleep (seen as a
    one-second p99 with two web processes). Writers here queue instead: threads of one process on
    a lock, processes on an ``flock`` of ``<database>.writelock``, polled every 0.2 ms. Each is
    bounded by the busy timeout, after which the database counts as busy (503, retry later).
    """

    def __init__(self, database: str, timeout_seconds: float) -> None:
        self.path = database + ".writelock"
        self.timeout = timeout_seconds
        self._thread_lock = threading.Lock()
        self._owner: int | None = None  # the thread holding it (it may enter again)
        self._fd: int | None = None
        self._pid = os.getpid()

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child needs its own descriptor
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._owner == threading.get_ident():  # already ours: a group commit's leader holds it
            yield
            return
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise _busy()
        self._owner = threading.get_ident()
        try:
            fd = self._file()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise _busy() from None
                    time.sleep(0.0002)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._owner = None
            self._thread_lock.release()


def _busy() -> ServiceUnavailable:
    return ServiceUnavailable("The database is busy; retry later.", code="database_unavailable",
                              headers={"Retry-After": "1"})  # fmt: skip


class Database:
    """The engine plus the transaction boundary every service goes through."""

    def __init__(self, url: str, settings: dict[str, Any] | None = None) -> None:
        self.url = url
        self.engine = build_engine(url, settings)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.is_postgresql = self.engine.dialect.name == "postgresql"
        database = self.engine.url.database
        self._write_lock = (
            SQLiteWriteLock(database, int((settings or {}).get("SQLITE_BUSY_TIMEOUT_MS", 5000)) / 1000)
            if self.is_sqlite and database and database != ":memory:" and not database.startswith("file:")
            else None
        )

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Tx]:
        """Open a transaction and yield a :class:`Tx`; commit on success, roll back on error.

        Called while a transaction of this database is already open in the same thread, it joins
        it under a SAVEPOINT instead (a read-only one joins it as it is): an error rolls back only
        the inner part, and nothing is committed until the outermost block ends. That is how a delivery's actions and its
        "processed" mark commit together, through the same services the API uses.

        Raises :class:`ServiceUnavailable` when the database cannot be reached, so callers
        answer 503 (retry later) and never 500.
        """
        from seqbridge.storage.tx import Tx

        outer = _OPEN.get()
        if outer is not None and outer.db is self:
            if not write:  # a read inside a transaction has nothing to undo: no SAVEPOINT round trips
                yield outer
                return
            mark = outer.mark()
            try:
                with outer.conn.begin_nested():
                    yield outer
            except BaseException:
                outer.rollback_to(mark)  # what the rolled-back part registered goes with it
                raise
            return
        try:
            with (self._write_lock.held() if write and self._write_lock else contextlib.nullcontext()), \
                    self.engine.connect() as conn:  # fmt: skip
                conn = conn.execution_options(**{_WRITE_OPTION: write})
                with conn.begin():
                    tx = Tx(conn, self)
                    token = _OPEN.set(tx)
                    try:
                        yield tx
                        tx.run_before_commit()
                    finally:
                        _OPEN.reset(token)
            tx.run_on_commit()
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            if isinstance(exc, PoolTimeout) or _is_unavailable(exc):
                raise ServiceUnavailable(
                    "The database is unavailable; retry later.",
                    code="database_unavailable",
                    headers={"Retry-After": "5"},
                ) from exc
            raise

    def write_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the right to write (SQLite: this process's and every other's); transactions this
        thread opens meanwhile go straight in. A no-op on PostgreSQL, whose writers run at once."""
        return self._write_lock.held() if self._write_lock else contextlib.nullcontext()

    def ping(self) -> None:
        """Run a trivial query; raises :class:`ServiceUnavailable` if the database is unreachable."""
        with self.transaction(write=False) as tx:
            tx.conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _is_unavailable(exc: DBAPIError) -> bool:
    """True for errors that mean "cannot reach or lock the database right now" (not, say, a
    syntax error, which SQLite also reports as an OperationalError: that is a bug, a 500)."""
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return True
    message = str(exc.orig).lower()
    return any(
        phrase in message
        for phrase in (
            "database is locked",
            "connection refused",
            "could not connect",
            "server closed the connection",
            "connection timeout",
            "timeout expired",
            "the database system is",
            "terminating connection",
            "unable to open database",
        )
    )
