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


def _plan_of(db: Database, run) -> str:
    """The query plan, as text, of the one SELECT ``run(tx)`` sends (captured, then explained)."""
    from sqlalchemy import event

    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.transaction(write=False) as tx:
            run(tx)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    [(statement, parameters)] = seen
    with db.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        explain = "EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN "
        cursor.execute(explain + statement, parameters)
        return "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())


def test_the_lookups_a_webhook_makes_use_an_index_whatever_the_organizations_size(database_url):
    """Phone, email and attribute lookups (one contact and a batch's worth) probe an index; with
    statistics gathered after the migrations the planner picks it over walking the organization.
    (SQLite names the unique email index after its table.)"""
    import uuid

    from seqbridge.storage.bulk import bulk_insert
    from seqbridge.storage.schema import contacts, organizations

    db = Database(database_url)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    org = str(uuid.uuid4())
    rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": org,
            "email": f"p{n}@example.com",
            "email_normalized": f"p{n}@example.com",
            "phone": f"+1555{n:07d}",
            "status": "active",
            "converted": False,
            "has_open_ticket": False,
            "attributes": {"crm_id": f"crm-{n}"},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(3000)
    ]
    with db.transaction() as tx:
        tx.conn.execute(organizations.insert().values(id=org, name="big", created_at=now))
        bulk_insert(tx.conn, contacts, rows)
        tx.contacts.index_attributes([(r["id"], org, r["attributes"]) for r in rows], replace=False)
    db.analyze()
    lookups = {
        "phone": (
            lambda tx: tx.contacts.find_contacts_by_phone(org, "+15550000042"),
            "ix_contacts_org_phone_created",
        ),
        "phones": (
            lambda tx: tx.contacts.find_contacts_by_phones(org, ["+15550000042", "+15550000043"]),
            "ix_contacts_org_phone_created",
        ),
        "email": (
            lambda tx: tx.contacts.find_contact_by_email(org, "p42@example.com"),
            ("uq_contacts_org_email", "sqlite_autoindex_contacts"),
        ),
        "emails": (
            lambda tx: tx.contacts.find_contacts_by_emails(org, ["p42@example.com", "p43@example.com"]),
            ("uq_contacts_org_email", "sqlite_autoindex_contacts"),
        ),
        "attribute": (
            lambda tx: tx.contacts.find_contacts_by_attribute(org, "crm_id", "crm-42"),
            "ix_contact_attributes_lookup",
        ),
        "attributes": (
            lambda tx: tx.contacts.find_contacts_by_attributes(org, "crm_id", ["crm-42", "crm-43"]),
            "ix_contact_attributes_lookup",
        ),
    }
    for name, (lookup, index) in lookups.items():
        plan = _plan_of(db, lookup)
        assert any(i in plan for i in (index if isinstance(index, tuple) else (index,))), f"{name}: {plan}"
        assert "ix_contacts_org_created" not in plan, f"{name}: {plan}"
    with db.transaction(write=False) as tx:
        [found] = tx.contacts.find_contacts_by_attribute(org, "crm_id", "crm-42")
        assert found["phone"] == "+15550000042"
        assert [
            c["email"] for c in tx.contacts.find_contacts_by_phones(org, ["+15550000042"])["+15550000042"]
        ] == ["p42@example.com"]
    db.dispose()


def test_migrations_leave_the_planner_statistics_gathered(tmp_path, request):
    """``seqbridge init`` runs ANALYZE when it migrated (SQLite: sqlite_stat1 exists; PostgreSQL:
    the tables were analyzed), and the worker's ``optimize`` runs on either engine."""
    sqlite = Database(f"sqlite:///{tmp_path}/stats.db")
    upgrade(sqlite)
    with sqlite.engine.connect() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").scalar()
            == 1
        )
    sqlite.optimize()
    sqlite.dispose()
    from tests.conftest import BACKENDS

    if "postgresql" in BACKENDS:
        url = request.getfixturevalue("postgresql_url")  # a clone of the migrated template
        pg = Database(url)
        from alembic import command

        from seqbridge.storage.migrate import alembic_config

        config = alembic_config()
        with pg.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0008")
            conn.commit()
        upgrade(pg)
        with pg.engine.connect() as conn:
            analyzed = conn.exec_driver_sql(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'contacts'"
            ).scalar()
        assert analyzed is not None
        pg.optimize()
        pg.dispose()


def test_a_starting_worker_gathers_the_statistics_a_database_lacks(tmp_path):
    """A database copied or grown since its last ANALYZE: the worker's first round refreshes
    the planner's statistics (SQLite), not an hour later."""
    from seqbridge.worker.maintenance import Statistics

    db = Database(f"sqlite:///{tmp_path}/stats.db")
    upgrade(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM sqlite_stat1")
        conn.commit()
    job = Statistics(db)
    assert job.run_once("w") == 0
    with db.engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT tbl FROM sqlite_stat1")}
    assert "alembic_version" in tables  # the one table with rows (ANALYZE skips empty ones)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM sqlite_stat1")
        conn.commit()
    job.run_once("w")  # the next refresh is an hour away
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_stat1").scalar() == 0
    db.dispose()


def test_an_enrollments_tasks_are_found_by_its_index_without_statistics(database_url):
    """Ending enrollments reads and cancels their tasks by enrollment id. On a database whose
    statistics know nothing yet (a new one, or one that grew since its last ANALYZE), SQLite's
    planner chose ix_step_tasks_due for ``status IN ('pending', 'paused')`` and walked every
    pending task of the database for each statement; the enrollment's index must drive."""
    from sqlalchemy import event

    from seqbridge.storage.enrollments import EnrollmentStore

    db = Database(database_url)
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many):
        if "step_tasks" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        with db.transaction() as tx:
            store = EnrollmentStore(tx.conn)
            now = datetime(2026, 1, 5, tzinfo=UTC)
            store.cancellable_tasks(["e1", "e2"])
            store.cancel_tasks_of(["e1", "e2"], now, "enrollment exited: unsubscribed")
            store.cancel_tasks_counted(["e1", "e2"], now, "enrollment exited: unsubscribed")
            store.cancel_open_tasks("e1", now, "enrollment exited: unsubscribed")
            store.open_tasks("e1")
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(seen) == 5
    with db.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for statement, parameters in seen:
            cursor.execute(("EXPLAIN QUERY PLAN " if db.is_sqlite else "EXPLAIN ") + statement, parameters)
            plan = "\n".join(" ".join(str(part) for part in row) for row in cursor.fetchall())
            assert "ix_step_tasks_due" not in plan, f"{statement}: {plan}"
            if db.is_sqlite:
                assert "uq_step_tasks_enrollment_step (enrollment_id=?)" in plan, f"{statement}: {plan}"
    db.dispose()


def test_a_batchs_phone_lookup_probes_the_phone_index_without_statistics(database_url):
    """A batch looks its phones up in one query. On a database whose statistics know nothing of
    its contacts yet (created by the migrations, then filled), ``ORDER BY created_at`` over several
    phones made SQLite walk the whole organization in ix_contacts_org_created; the query must
    probe the phone index, and the contacts still come oldest first."""
    import uuid
    from datetime import timedelta

    from seqbridge.storage.bulk import bulk_insert
    from seqbridge.storage.schema import contacts, organizations

    db = Database(database_url)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    org = str(uuid.uuid4())
    rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": org,
            "phone": f"+1555{n % 50:07d}",
            "status": "active",
            "converted": False,
            "has_open_ticket": False,
            "attributes": {"crm_id": f"crm-{n}"},
            "created_at": now - timedelta(seconds=n),
            "updated_at": now,
        }
        for n in range(200)
    ]
    with db.transaction() as tx:
        tx.conn.execute(organizations.insert().values(id=org, name="fresh", created_at=now))
        bulk_insert(tx.conn, contacts, rows)
        tx.contacts.index_attributes([(r["id"], org, r["attributes"]) for r in rows], replace=False)
    plan = _plan_of(db, lambda tx: tx.contacts.find_contacts_by_phones(org, ["+15550000007", "+15550000008"]))
    # PostgreSQL knows the table's real size even without statistics (200 rows: a scan is right).
    assert "ix_contacts_org_created" not in plan, plan
    assert "ix_contacts_org_phone_created" in plan or not db.is_sqlite, plan
    plan = _plan_of(db, lambda tx: tx.contacts.find_contacts_by_attributes(org, "crm_id", ["crm-1", "crm-2"]))
    assert "ix_contacts_org_created" not in plan, plan
    assert "ix_contact_attributes_lookup" in plan or not db.is_sqlite, plan
    with db.transaction(write=False) as tx:
        found = tx.contacts.find_contacts_by_phones(org, ["+15550000007", "+15550000008"])
    oldest_first = sorted((r for r in rows if r["phone"] == "+15550000007"), key=lambda r: r["created_at"])
    assert [c["id"] for c in found["+15550000007"]] == [r["id"] for r in oldest_first]
    assert len(found["+15550000008"]) == 4
    db.dispose()
