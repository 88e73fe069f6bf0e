"""The storage layer on both engines: migrations, SQLite pragmas, write transactions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from seqbridge.errors import ServiceUnavailable
from seqbridge.storage.db import Database, normalize_database_url
from seqbridge.storage.migrate import current_revision, head_revision, upgrade


def test_init_is_idempotent(database_url):
    db = Database(database_url)
    try:
        assert current_revision(db) == head_revision()
        upgrade(db)
        upgrade(db)
        assert current_revision(db) == head_revision()
        tables = set(inspect(db.engine).get_table_names())
        assert {
            "organizations",
            "api_keys",
            "contacts",
            "companies",
            "contact_tags",
            "audit_events",
            "audit_heads",
            "alembic_version",
        } <= tables
    finally:
        db.dispose()


def test_fresh_sqlite_file_is_created_with_its_folder(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/nested/dir/seqbridge.db")
    try:
        upgrade(db)
        assert (tmp_path / "nested/dir/seqbridge.db").exists()
        assert current_revision(db) == head_revision()
    finally:
        db.dispose()


def test_sqlite_runs_in_wal_mode_with_busy_timeout_and_foreign_keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/s.db", {"SQLITE_BUSY_TIMEOUT_MS": 1234})
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -16 * 1024  # 16 MiB, in KiB
    finally:
        db.dispose()
    db = Database(f"sqlite:///{tmp_path}/s.db", {"SQLITE_CACHE_MB": 64})
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -64 * 1024
    finally:
        db.dispose()


def test_the_sqlite_pool_hands_out_the_warmest_connection(tmp_path):
    """LIFO: the connection used last (whose page cache holds the hot pages) is used next."""
    db = Database(f"sqlite:///{tmp_path}/s.db")
    try:
        a, b = db.engine.connect(), db.engine.connect()
        first, second = a.connection.driver_connection, b.connection.driver_connection
        assert first is not second
        a.close()
        b.close()  # returned last
        with db.engine.connect() as again:
            assert again.connection.driver_connection is second
    finally:
        db.dispose()


def test_sqlite_write_transactions_take_the_write_lock_at_begin(tmp_path):
    """BEGIN IMMEDIATE: a second writer waits (and here times out) at BEGIN, before reading
    anything, instead of failing later with a deadlock on lock upgrade."""
    db = Database(f"sqlite:///{tmp_path}/s.db", {"SQLITE_BUSY_TIMEOUT_MS": 100})
    upgrade(db)
    holding = threading.Event()
    release = threading.Event()

    def hold_write_lock():
        with db.transaction() as tx:
            tx.conn.execute(text("SELECT 1"))  # no write yet: only BEGIN IMMEDIATE holds the lock
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    try:
        assert holding.wait(5)
        with pytest.raises(ServiceUnavailable) as caught, db.transaction() as tx:
            tx.conn.execute(text("SELECT 1"))
        assert caught.value.code == "database_unavailable"
        assert caught.value.headers["Retry-After"]
        # Readers are not blocked by the writer (WAL).
        with db.transaction(write=False) as tx:
            assert tx.conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        release.set()
        holder.join()
        db.dispose()


def test_unreachable_postgresql_is_service_unavailable_not_a_crash():
    db = Database("postgresql://nobody@127.0.0.1:1/nothing")
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            db.ping()
        assert caught.value.status == 503
    finally:
        db.dispose()


def test_timestamps_round_trip_as_aware_utc(services):
    moment = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    services.clock.set(moment)
    org = services.keys.ensure_org("tz-org")
    assert org["created_at"] == moment
    assert org["created_at"].tzinfo is not None


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_database_urls_are_normalised(given, driver):
    assert normalize_database_url(given).drivername == driver


def test_unsupported_database_is_refused():
    with pytest.raises(ValueError, match="unsupported database"):
        normalize_database_url("mysql://u@h/db")


def test_migrations_produce_exactly_the_declared_schema(database_url):
    """Alembic's autogenerate finds nothing to do: the migrations and schema.py agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from seqbridge.storage.schema import metadata

    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == []
    finally:
        db.dispose()


def test_bulk_insert_round_trips_and_raises_sqlalchemy_errors(services):
    """The fast path stores exactly what SQLAlchemy would, and a constraint violation surfaces
    as SQLAlchemy's IntegrityError on both engines (so callers' race handling works)."""
    from sqlalchemy.exc import IntegrityError

    from seqbridge.storage.bulk import RawJSON, bulk_insert
    from seqbridge.storage.schema import audit_heads, organizations

    now = datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)
    rows = [{"id": f"org-{n}", "name": f"Org {n}", "created_at": now} for n in range(1500)]
    with services.db.transaction() as tx:
        bulk_insert(tx.conn, organizations, rows)
        bulk_insert(tx.conn, audit_heads, [{"org_id": "org-0", "last_event_id": 7, "last_hash": "h"}])
    with services.db.transaction(write=False) as tx:
        assert tx.orgs.get_org("org-1499") == {"id": "org-1499", "name": "Org 1499", "created_at": now}
    with pytest.raises(IntegrityError), services.db.transaction() as tx:
        bulk_insert(tx.conn, organizations, [{"id": "org-x", "name": "Org 7", "created_at": now}])
    with services.db.transaction(write=False) as tx:
        assert tx.orgs.get_org("org-x") is None  # rolled back
    assert isinstance(RawJSON('{"a":1}'), str)


def test_new_ids_are_uuid7_in_creation_order():
    """Time-ordered ids keep inserts at the right edge of every id index (BENCHMARKS.md, ingest)."""
    import uuid

    from seqbridge.services.common import new_id

    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 and str(uuid.UUID(i)) == i for i in ids[:100])
    assert ids == sorted(ids)  # same millisecond or not, later ids sort after earlier ones
    millis = int(ids[-1].replace("-", "")[:12], 16)
    assert abs(millis / 1000 - datetime.now(UTC).timestamp()) < 60


def test_commit_callbacks_run_batched_and_drop_with_a_rolled_back_savepoint(database_url):
    """before_commit runs inside the transaction, on_commit after it; each callback once with all
    its items; a rolled-back SAVEPOINT takes what it registered; a rollback runs nothing."""
    db = Database(database_url)
    seen: list[tuple] = []

    def before(tx, items):
        seen.append(("before", tuple(items), tx.conn.in_transaction()))

    def after(items):
        seen.append(("after", tuple(items)))

    with db.transaction() as tx:
        tx.before_commit(before, 1)
        tx.on_commit(after, "a")
        with pytest.raises(RuntimeError), db.transaction():
            tx.before_commit(before, 2)
            tx.on_commit(after, "b")
            raise RuntimeError("roll back the savepoint")
        with db.transaction():
            tx.before_commit(before, 3)
            tx.on_commit(after, "c")
        assert seen == []
    assert seen == [("before", (1, 3), True), ("after", ("a", "c"))]

    seen.clear()
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.before_commit(before, 4)
        tx.on_commit(after, "d")
        raise RuntimeError("roll back everything")
    assert seen == []
    db.dispose()
