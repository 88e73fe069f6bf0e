"""Engines and transactions. SQLite (the embedded default) and PostgreSQL run the same code.

SQLite runs in WAL mode with a busy timeout, and every transaction that writes starts with
``BEGIN IMMEDIATE`` so that two writers never deadlock upgrading a read lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from seqbridge.errors import ServiceUnavailable
from seqbridge.storage.bulk import execute_raw
from seqbridge.storage.checkpoint import JOURNAL_SIZE_LIMIT, Checkpointer
from seqbridge.storage.write_lock import SQLiteWriteLock

if TYPE_CHECKING:
    from seqbridge.storage.tx import Tx
    from seqbridge.storage.wakeup import Announcer

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
    on_disk = _on_disk(database)
    if on_disk:
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
        if on_disk:  # checkpoints run in the background, not in a commit (storage/checkpoint.py)
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        if conn.connection.driver_connection.in_transaction:
            return  # the writer's transaction, begun on the cursor (Database._sqlite_write): join it
        # On the DBAPI cursor (every transaction runs this): errors come out as SQLAlchemy's.
        execute_raw(conn, "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")

    return engine


def _on_disk(database: str | None) -> bool:
    """A database file of its own (not ``:memory:`` nor a ``file:`` URI): the write lock and the
    background checkpoints are for these."""
    return bool(database) and database != ":memory:" and not database.startswith("file:")


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
            if self.is_sqlite and _on_disk(database)
            else None
        )
        self._writer: Connection | None = None
        self._writer_pid: int | None = None
        self._checkpointer: Checkpointer | None = None

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True, staged: bool = False) -> Iterator[Tx]:
        """Open a transaction and yield a :class:`Tx`; commit on success, roll back on error.

        Called while a transaction of this database is already open in the same thread, it joins
        it under a SAVEPOINT instead (a read-only one joins it as it is): an error rolls back only
        the inner part, and nothing is committed until the outermost block ends. That is how a delivery's actions and its
        "processed" mark commit together, through the same services the API uses.

        ``staged`` opens a batch's unit of work (:class:`~seqbridge.storage.tx.StagedTx`): its
        nested transactions are virtual savepoints, undone in memory.

        Raises :class:`ServiceUnavailable` when the database cannot be reached, so callers
        answer 503 (retry later) and never 500.
        """
        from seqbridge.storage.tx import StagedTx, Tx

        outer = _OPEN.get()
        if outer is not None and outer.db is self:
            if not write:  # a read inside a transaction has nothing to undo: no SAVEPOINT round trips
                yield outer
                return
            mark = outer.mark()
            if isinstance(outer, StagedTx):  # nothing was written yet: undo in memory
                try:
                    yield outer
                except BaseException:
                    outer.rollback_to(mark)
                    raise
                return
            try:
                with outer.conn.begin_nested():
                    yield outer
            except BaseException:
                outer.rollback_to(mark)  # what the rolled-back part registered goes with it
                raise
            return
        try:
            with contextlib.ExitStack() as stack:
                if write and self._write_lock:  # SQLite: the one writer connection, under the lock
                    stack.enter_context(self._write_lock.held())
                    conn = self._writer_connection()
                    begun = self._sqlite_write(conn)
                else:
                    conn = stack.enter_context(self.engine.connect()).execution_options(
                        **{_WRITE_OPTION: write}
                    )
                    begun = conn.begin()
                try:
                    with begun:
                        tx = (StagedTx if staged else Tx)(conn, self)
                        token = _OPEN.set(tx)
                        try:
                            yield tx
                            tx.run_before_commit()
                        finally:
                            _OPEN.reset(token)
                except (OperationalError, InterfaceError):
                    if conn is self._writer:  # do not keep a connection in an unknown state
                        self._drop_writer()
                    raise
            if write and self._write_lock:
                self.checkpointer.committed()
            tx.run_on_commit()
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            if isinstance(exc, PoolTimeout) or _is_unavailable(exc):
                raise ServiceUnavailable(
                    "The database is unavailable; retry later.",
                    code="database_unavailable",
                    headers={"Retry-After": "5"},
                ) from exc
            raise

    @staticmethod
    @contextlib.contextmanager
    def _sqlite_write(conn: Connection) -> Iterator[None]:
        """A write transaction on the writer connection, begun and ended on the DBAPI cursor:
        SQLAlchemy's own begin and commit cost more than the two statements of a batch of
        webhooks. A statement that goes through SQLAlchemy starts its transaction, which joins
        this one (the begin listener finds the connection in one); it then ends through it."""
        execute_raw(conn, "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction():
                conn.rollback()
            elif conn.connection.driver_connection.in_transaction:
                execute_raw(conn, "ROLLBACK")
            raise
        if conn.in_transaction():
            conn.commit()
        else:
            execute_raw(conn, "COMMIT")

    def _writer_connection(self) -> Connection:
        """SQLite: the connection every write transaction of this process runs on, one at a time
        (only the write lock's holder uses it). Kept open: no pool round trip, no new connection
        state per transaction, and its page cache stays warm with what was just written."""
        if self._writer is None or self._writer_pid != os.getpid() or self._writer.closed:
            self._writer = self.engine.connect().execution_options(**{_WRITE_OPTION: True})
            self._writer_pid = os.getpid()  # a forked child opens its own
        return self._writer

    @property
    def checkpointer(self) -> Checkpointer:
        """SQLite: this process's background WAL checkpoints (made at its first write)."""
        if self._checkpointer is None or self._checkpointer.pid != os.getpid():
            self._checkpointer = Checkpointer(str(self.engine.url.database))
        return self._checkpointer

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and self._writer_pid == os.getpid():
            with contextlib.suppress(Exception):
                writer.close()

    def write_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the right to write (SQLite: this process's and every other's); transactions this
        thread opens meanwhile go straight in. A no-op on PostgreSQL, whose writers run at once."""
        return self._write_lock.held() if self._write_lock else contextlib.nullcontext()

    @functools.cached_property
    def announcer(self) -> Announcer:
        """Wakes the workers of this database when new work was committed."""
        from seqbridge.storage.wakeup import Announcer

        return Announcer(self)

    def analyze(self, conn: Connection | None = None) -> None:
        """Gather the query planner's statistics over every table (after migrations). SQLite
        samples at most 1,000 rows per index (``analysis_limit``), so this stays quick on a
        large database."""
        with contextlib.nullcontext(conn) if conn is not None else self.engine.connect() as connection:
            if self.is_sqlite:
                connection.exec_driver_sql("PRAGMA analysis_limit=1000")
            connection.exec_driver_sql("ANALYZE")
            connection.commit()

    def optimize(self, *, starting: bool = False) -> None:
        """Keep the planner's statistics current while running (the worker calls this when it
        starts and now and then). SQLite: ``PRAGMA optimize``, which re-analyzes the tables this
        connection's queries used whose statistics have drifted; at the start, when no query has
        run yet, every table whose statistics drifted (``0x10002``, SQLite 3.46 and later), or
        before 3.46, which cannot tell, a sampled ``ANALYZE`` (tens of milliseconds: at most
        1,000 rows per index). PostgreSQL's autovacuum does it already."""
        if self.is_sqlite:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA analysis_limit=1000")
                if not starting:
                    connection.exec_driver_sql("PRAGMA optimize")
                elif sqlite3.sqlite_version_info >= (3, 46):
                    connection.exec_driver_sql("PRAGMA optimize=0x10002")
                else:
                    connection.exec_driver_sql("ANALYZE")
                connection.commit()

    def ping(self) -> None:
        """Run a trivial query; raises :class:`ServiceUnavailable` if the database is unreachable."""
        with self.transaction(write=False) as tx:
            tx.conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self._drop_writer()
        if self._checkpointer is not None and self._checkpointer.pid == os.getpid():
            self._checkpointer.stop()
            self._checkpointer = None
        if "announcer" in self.__dict__:  # only if one was made
            self.announcer.close()
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
