"""`seqbridge db copy`: a database the other tests' factories filled (contacts, sequences,
enrollments, step tasks, outbox, deliveries, audit events) copied into a fresh PostgreSQL one, from
SQLite and from PostgreSQL: same rows, same ids, the audit chain verified there."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy import func, select

from seqbridge import create_app
from seqbridge.audit import verify_chain
from seqbridge.storage.copy import CopyError, copy_database, counts
from seqbridge.storage.db import Database
from seqbridge.storage.schema import audit_events, metadata, outbox, step_tasks
from seqbridge.worker.processor import StepProcessor
from tests import conftest
from tests.factories import active_sequence, bulk_contacts, contact, delivery, org_id


@pytest.fixture
def empty_postgresql(request) -> Iterator[str]:
    """A new PostgreSQL database with nothing in it, not even the schema."""
    server = request.getfixturevalue("pg")
    name = f"copy{os.getpid()}_{next(conftest._counter)}"
    janitor = DatabaseJanitor(
        user=server.user, host=server.host, port=server.port, password=server.password, dbname=name
    )
    janitor.init()
    try:
        yield server.url(name)
    finally:
        janitor.drop()


@pytest.fixture
def filled(api, services, clock):
    """The source: what the API, the processor and the inbox leave behind, across two organizations."""
    org = org_id(api)
    welcome = active_sequence(api, name="Welcome", steps=({"delay_days": 0}, {"delay_days": 2}))
    people = bulk_contacts(
        services,
        org,
        1500,
        clock.now(),
        prefix="p",
        city="Lisbon",
        attributes={"plan": "pro", "seats": 3, "ratio": 0.1},
    )
    api.post(
        f"/api/v1/sequences/{welcome['id']}/enroll_bulk",
        json={"customer_ids": [p["id"] for p in people[:900]]},
    )
    queue = api.post("/api/v1/event-queues", json={"name": "Q"}).json["data"]
    step = {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "S", "body": "B"}}
    api.post(f"/api/v1/event-queues/{queue['id']}/steps", json=step)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_filter": {"city": "Lisbon"}})
    contact(api, email="ünïcode@example.com", first_name="Zoë", tags=["vip", "ß"])
    assert StepProcessor(services).run_once("copy-test") > 0  # sent steps: outbox rows, done tasks
    for n in range(30):
        delivery(services, org, keys=(f"k{n}",))
    return services


def _rows(db: Database, table) -> list[dict]:
    key = list(table.primary_key.columns)
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(*key)).mappings()]


def test_copy_into_a_fresh_postgresql_keeps_every_row_id_and_the_audit_chain(filled, empty_postgresql):
    source = filled.db
    target = Database(empty_postgresql)
    seen: list[tuple[str, int, int]] = []
    report = copy_database(source, target, batch_size=200, progress=lambda *p: seen.append(p))
    assert counts(target) == counts(source)
    assert counts(source)["contacts"] >= 1500 and counts(source)["audit_events"] > 0
    assert counts(source)["deliveries"] == 30 and counts(source)["outbox"] > 0
    assert report.rows == sum(counts(source).values())
    # Progress per table, in batches: contacts came in 200 at a time.
    contacts_progress = [done for table, done, _ in seen if table == "contacts"]
    assert contacts_progress[:3] == [0, 200, 400] and contacts_progress[-1] == counts(source)["contacts"]
    # Every row identical, JSON documents and timestamps included.
    for table in metadata.sorted_tables:
        assert _rows(target, table) == _rows(source, table), table.name
    checked, problems = verify_chain(target)
    assert problems == [] and checked == counts(source)["audit_events"]
    # The serial ids carry on after the copied ones: the copy is usable at once.
    app = create_app({"DATABASE_URL": empty_postgresql, "TESTING": True})
    try:
        services = app.extensions["seqbridge"]
        key = services.keys.create_key("acme", ["*"], "after-copy").raw_key
        client = app.test_client()
        created = client.post(
            "/api/v1/contacts", json={"email": "new@example.com"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert created.status_code == 201, created.json
        with services.db.engine.connect() as conn:
            newest = conn.execute(select(func.max(audit_events.c.id))).scalar_one()
        assert newest > max(r["id"] for r in _rows(source, audit_events))
        assert verify_chain(services.db)[1] == []
        with services.db.engine.connect() as conn:
            for table in (step_tasks, outbox):
                next_id = conn.execute(
                    select(func.nextval(func.pg_get_serial_sequence(table.name, "id")))
                ).scalar_one()
                assert next_id > max(r["id"] for r in _rows(source, table)), table.name
    finally:
        services.db.dispose()
    target.dispose()


def test_a_target_with_data_is_refused_and_an_interrupted_copy_keeps_nothing(filled, empty_postgresql):
    source, target = filled.db, Database(empty_postgresql)

    def interrupt(table: str, done: int, total: int) -> None:
        if table == "contacts" and done >= 400:
            raise KeyboardInterrupt

    with pytest.raises(CopyError) as interrupted:
        copy_database(source, target, batch_size=200, progress=interrupt)
    message = str(interrupted.value)
    assert "in table contacts after 400 of" in message and "nothing was kept" in message
    assert "run the same command again" in message
    assert set(counts(target).values()) == {0}
    copy_database(source, target)  # the same command again
    assert counts(target) == counts(source)
    with pytest.raises(CopyError, match="already holds data"):
        copy_database(source, target)
    with pytest.raises(CopyError, match=r"cannot prepare the target: .*Connection refused"):
        copy_database(source, Database("postgresql://nobody:x@127.0.0.1:1/none"))
    with pytest.raises(CopyError, match="the target is the source"):
        copy_database(source, Database(str(source.engine.url.render_as_string(hide_password=False))))
    target.dispose()


@pytest.mark.slow
def test_the_command_copies_and_verifies(filled, empty_postgresql, database_url):
    env = {**os.environ, "SEQBRIDGE_ENV_FILE": ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "--database-url",
            database_url,
            "db",
            "copy",
            "--to",
            empty_postgresql,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"contacts: {counts(filled.db)['contacts']}/{counts(filled.db)['contacts']} rows" in done.stdout
    assert "audit chain intact on the target" in done.stdout
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "--database-url",
            database_url,
            "db",
            "copy",
            "--to",
            empty_postgresql,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert again.returncode == 1 and "already holds data" in again.stderr
    verify = subprocess.run(
        [sys.executable, "-m", "seqbridge", "--database-url", empty_postgresql, "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout
