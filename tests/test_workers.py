"""Real worker processes: several at once on PostgreSQL, and one killed with SIGKILL mid-batch.
Every step is sent exactly once (outbox channel: the send and the advance are one transaction)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

from seqbridge import create_app
from seqbridge.clock import ManualClock
from seqbridge.storage.schema import contacts, enrollments, outbox, step_tasks
from tests.conftest import Api

pytestmark = pytest.mark.slow
STEPS = 2000


def _prepare(url: str, client_clock: ManualClock):
    """An organization with an active one-step sequence and STEPS enrolled contacts, all due."""
    app = create_app({"DATABASE_URL": url, "CLOCK": client_clock})
    services = app.extensions["seqbridge"]
    api = Api(app.test_client(), services.keys.create_key("acme", ["*"]).raw_key)
    org_id = api.get("/api/v1/me").json["data"]["organization_id"]
    now = client_clock.now()
    rows = [
        {
            "id": f"c-{n:05d}",
            "org_id": org_id,
            "email": f"w{n}@example.com",
            "email_normalized": f"w{n}@example.com",
            "status": "active",
            "converted": False,
            "has_open_ticket": False,
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(STEPS)
    ]
    with services.db.transaction() as tx:
        tx.conn.execute(insert(contacts), rows)
    sequence = api.post("/api/v1/sequences", json={"name": "Load"}).json["data"]
    api.post(f"/api/v1/sequences/{sequence['id']}/steps", json={"subject": "Hi {{ email }}", "body": "b"})
    api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"})
    for start in range(0, STEPS, 1000):
        ids = [r["id"] for r in rows[start : start + 1000]]
        assert (
            api.post(
                f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"customer_ids": ids}
            ).status_code
            == 200
        )
    return services


def _worker(url: str, tmp_path, name: str, **env) -> subprocess.Popen:
    environment = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.1",
        "SEQBRIDGE_PROCESSOR_BATCH": "50",
        **{f"SEQBRIDGE_{k}": str(v) for k, v in env.items()},
    }
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "worker"], env=environment, stdout=log, stderr=subprocess.STDOUT
    )


def _count(services, query) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _wait_for(predicate, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _assert_each_sent_exactly_once(services) -> None:
    assert _count(services, select(func.count()).select_from(outbox)) == STEPS
    assert _count(services, select(func.count(func.distinct(outbox.c.recipient)))) == STEPS
    assert (
        _count(services, select(func.count()).select_from(step_tasks).where(step_tasks.c.status == "done"))
        == STEPS
    )
    completed = select(func.count()).select_from(enrollments).where(enrollments.c.status == "completed")
    assert _count(services, completed) == STEPS


def test_several_workers_share_the_work_and_send_every_step_exactly_once(postgresql_url, tmp_path):
    services = _prepare(postgresql_url, ManualClock(datetime(2026, 1, 5, 9, tzinfo=UTC)))
    workers = [_worker(postgresql_url, tmp_path, f"w{n}") for n in range(3)]
    try:
        _wait_for(lambda: _count(services, select(func.count()).select_from(outbox)) >= STEPS)
        _wait_for(
            lambda: (
                _count(
                    services,
                    select(func.count()).select_from(step_tasks).where(step_tasks.c.status != "done"),
                )
                == 0
            )
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=60) for worker in workers]
    assert codes == [0, 0, 0]
    _assert_each_sent_exactly_once(services)
    logs = [(tmp_path / f"w{n}.log").read_text() for n in range(3)]
    shares = [log.count("ran ") for log in logs]
    assert sum(1 for share in shares if share) >= 2, f"the work was not shared: {shares}"
    assert not any("lost the lease" in log or "Traceback" in log for log in logs), logs


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(engine, request, tmp_path):
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path}/kill.db"
        from seqbridge.storage.db import Database
        from seqbridge.storage.migrate import upgrade

        upgrade(Database(url))
    else:
        url = request.getfixturevalue("postgresql_url")
    services = _prepare(url, ManualClock(datetime(2026, 1, 5, 9, tzinfo=UTC)))
    victim = _worker(url, tmp_path, "victim", PROCESSOR_LEASE_SECONDS=2)
    _wait_for(lambda: _count(services, select(func.count()).select_from(outbox)) >= 300, timeout=120)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    in_flight = _count(
        services, select(func.count()).select_from(step_tasks).where(step_tasks.c.status == "leased")
    )
    survivor = _worker(url, tmp_path, "survivor", PROCESSOR_LEASE_SECONDS=2)
    try:
        _wait_for(
            lambda: (
                _count(
                    services,
                    select(func.count()).select_from(step_tasks).where(step_tasks.c.status != "done"),
                )
                == 0
            )
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
    _assert_each_sent_exactly_once(services)
    if in_flight:
        assert "reclaimed" in (tmp_path / "survivor.log").read_text()
