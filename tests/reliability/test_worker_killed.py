"""A worker killed in the middle of a large batch: 2,000 signed webhooks (WhatsApp STOPs from
contacts enrolled in two sequences, and Typeform sign-ups) are queued first, then one
`seqbridge worker` drains them in batches of up to 200 and is SIGKILLed each time it holds a
claimed batch it has not settled, then restarted. Afterwards every delivery was processed exactly
once, with one audit event per effect, and the audit chain verifies. Runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from seqbridge.audit import verify_chain
from seqbridge.storage.enrollments import OPEN_TASK_STATUSES
from seqbridge.storage.schema import audit_events, deliveries, enrollments, step_tasks
from tests import factories
from tests.reliability.test_crash import FORMS, MAPPING, STOPS, _count, _typeform, clock  # noqa: F401
from tests.test_hooks import meta_body, meta_headers, write_mapping

pytestmark = pytest.mark.slow

BATCH = 200
KILLS = 4


def _worker(app_config, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": app_config["DATABASE_URL"],
        "SEQBRIDGE_MAPPINGS_DIR": app_config["MAPPINGS_DIR"],
        "SEQBRIDGE_DELIVERY_BATCH": str(BATCH),
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.05",
        "SEQBRIDGE_PROCESSOR_LEASE_SECONDS": "2",
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    out = open(log, "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
    )


def test_a_worker_killed_holding_a_large_batch_leaves_every_delivery_processed_once(
    app_config, api, client, services, tmp_path
):
    write_mapping(app_config, MAPPING)
    factories.active_sequence(api, name="Welcome")
    nurture = factories.active_sequence(api, name="Nurture")
    onboarding = factories.active_sequence(api, name="Onboarding")
    phones = [f"+1556{n:07d}" for n in range(STOPS)]
    ids = [factories.contact(api, phone=p)["id"] for p in phones]
    for sequence in (nurture, onboarding):
        enrolled = api.post(f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"customer_ids": ids})
        assert enrolled.status_code == 200 and enrolled.json["data"]["enrolled"] == STOPS
    for n, phone in enumerate(phones):
        body = meta_body("STOP", message_id=f"wamid.K{n}", sender=phone.lstrip("+"))
        assert client.post("/hooks/whatsapp", data=body, headers=meta_headers(body)).status_code == 202
    for n in range(FORMS):
        body, headers = _typeform(n)
        assert client.post("/hooks/typeform", data=body, headers=headers).status_code == 202

    processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
    log = tmp_path / "worker.log"
    worker = _worker(app_config, log)
    mid_batch: list[tuple[int, int]] = []  # (claimed and unsettled after the kill, processed by then)
    dead: set[str] = set()  # the killed workers' lease owners: their leases wait to expire

    def held() -> dict[str, int]:
        """How many deliveries each live worker holds claimed and not yet settled."""
        owners = (
            select(deliveries.c.lease_owner, func.count())
            .where(deliveries.c.status == "processing")
            .group_by(deliveries.c.lease_owner)
        )
        with services.db.engine.connect() as conn:
            return {owner: n for owner, n in conn.execute(owners) if owner not in dead}

    try:
        deadline = time.monotonic() + 300
        while len(mid_batch) < KILLS and _count(services, processed) < STOPS + FORMS:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            # A large claim: the adaptive batch has grown past half its ceiling.
            if sum(held().values()) >= BATCH // 2:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                left = held()
                if left:  # killed before its settle committed: the lease is the only trace
                    mid_batch.append((sum(left.values()), _count(services, processed)))
                    dead.update(left)
                worker = _worker(app_config, log)
            time.sleep(0.005)
        while _count(services, processed) < STOPS + FORMS:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)

    print(f"killed holding (unsettled, processed so far): {mid_batch}")
    assert len(mid_batch) >= 2 and all(left >= BATCH // 2 for left, _ in mid_batch), mid_batch
    assert _count(services, select(func.count()).select_from(deliveries)) == STOPS + FORMS

    def tagged(tag: str) -> int:
        return _count(
            services, select(func.count()).select_from(audit_events).where(audit_events.c.tag == tag)
        )

    # Each STOP ended both enrollments once and cancelled their tasks; each form enrolled once.
    exited = select(func.count()).select_from(enrollments).where(enrollments.c.exit_reason == "unsubscribed")
    assert _count(services, exited) == 2 * STOPS
    assert tagged("hook:enrollment:exited") == 2 * STOPS
    assert tagged("hook:contact:unsubscribed") == STOPS
    pending = (
        select(func.count())
        .select_from(step_tasks)
        .where(
            step_tasks.c.enrollment_id.in_(
                select(enrollments.c.id).where(enrollments.c.exit_reason.is_not(None))
            ),
            step_tasks.c.status.in_(OPEN_TASK_STATUSES),
        )
    )
    assert _count(services, pending) == 0
    welcome = enrollments.c.sequence_id.not_in([nurture["id"], onboarding["id"]])
    assert _count(services, select(func.count()).select_from(enrollments).where(welcome)) == FORMS
    assert (
        _count(services, select(func.count(func.distinct(enrollments.c.contact_id))).where(welcome)) == FORMS
    )
    assert tagged("hook:enrollment:created") == FORMS
    assert tagged("hook:delivery:processed") == STOPS + FORMS
    assert tagged("hook:delivery:received") == STOPS + FORMS
    checked, problems = verify_chain(services.db)
    assert problems == [] and checked > (STOPS + FORMS) * 3
