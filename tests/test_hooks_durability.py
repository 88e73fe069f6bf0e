"""The inbox under pressure: a duplicate storm over real HTTP, and a worker process killed with
SIGKILL while it works through acknowledged deliveries. Nothing acknowledged is lost, nothing
acts twice."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from seqbridge.clock import ManualClock
from seqbridge.storage.schema import audit_events, deliveries, enrollments
from tests import factories
from tests.test_hooks import WHATSAPP_STOP, drain, meta_body, meta_headers, write_mapping

pytestmark = pytest.mark.slow


@pytest.fixture
def clock() -> ManualClock:
    """Real time: the worker processes run on the system clock, and the enrollments' first steps
    (three days out) must not fall due in them while the STOPs are processed."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server(app):
    """The app on a real threaded HTTP server on loopback."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()


def _count(services, query) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_the_same_delivery_posted_50_times_at_once_is_stored_and_acted_on_once(
    app_config, api, server, services
):
    write_mapping(app_config, WHATSAPP_STOP)
    person = factories.contact(api, phone="+15551234567")
    sequence = factories.active_sequence(api)
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]})
    body = meta_body("STOP")
    barrier = threading.Barrier(50)
    answers: list[requests.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with requests.Session() as session:
            barrier.wait()
            answer = session.post(
                f"{server}/hooks/whatsapp", data=body, headers=meta_headers(body), timeout=60
            )
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 49 + [202], [a.text for a in answers if a.status_code not in (200, 202)]
    ids = {a.json()["data"]["delivery_id"] for a in answers}
    assert len(ids) == 1
    assert sorted({a.json()["data"]["status"] for a in answers}) == ["duplicate", "queued"]
    assert _count(services, select(func.count()).select_from(deliveries)) == 1
    assert drain(services) == 1
    exits = (
        select(func.count()).select_from(audit_events).where(audit_events.c.tag == "hook:enrollment:exited")
    )
    assert _count(services, exits) == 1
    duplicates = (
        select(func.count()).select_from(audit_events).where(audit_events.c.tag == "hook:delivery:duplicate")
    )
    assert _count(services, duplicates) == 49


CONTACTS = 150


def _worker(database_url: str, mappings: str, log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": database_url,
        "SEQBRIDGE_MAPPINGS_DIR": mappings,
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.05",
        "SEQBRIDGE_PROCESSOR_LEASE_SECONDS": "2",
        # Small batches, so that kills land between commits as well as inside them.
        "SEQBRIDGE_DELIVERY_BATCH": "10",
    }
    log = open(log_path, "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def test_a_worker_killed_mid_way_loses_nothing_and_repeats_nothing(
    app_config, api, client, services, tmp_path
):
    write_mapping(app_config, WHATSAPP_STOP)
    sequence = factories.active_sequence(api)
    phones = [f"+1555{n:07d}" for n in range(CONTACTS)]
    ids = [factories.contact(api, phone=p)["id"] for p in phones]
    assert (
        api.post(f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"customer_ids": ids}).status_code
        == 200
    )
    for n, phone in enumerate(phones):
        body = meta_body("STOP", message_id=f"wamid.K{n}", sender=phone.lstrip("+"))
        assert client.post("/hooks/whatsapp", data=body, headers=meta_headers(body)).status_code == 202

    processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
    at_kill: list[int] = []
    deadline = time.monotonic() + 120
    log = tmp_path / "worker.log"
    while len(at_kill) < 4 and _count(services, processed) < CONTACTS:
        # Kill each worker once it has made some progress: mid-batch, mid-transaction, anywhere.
        before = _count(services, processed)
        worker = _worker(app_config["DATABASE_URL"], app_config["MAPPINGS_DIR"], log)
        while _count(services, processed) < before + 10 and worker.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        at_kill.append(_count(services, processed))
    worker = _worker(app_config["DATABASE_URL"], app_config["MAPPINGS_DIR"], log)  # the leases expire in 2 s
    try:
        while _count(services, processed) < CONTACTS:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    print("processed when each worker was killed:", at_kill)
    assert any(0 < n < CONTACTS for n in at_kill), at_kill  # a kill really landed mid-way
    exited = select(func.count()).select_from(enrollments).where(enrollments.c.exit_reason == "unsubscribed")
    assert _count(services, exited) == CONTACTS
    tags = ("hook:enrollment:exited", "hook:contact:unsubscribed", "hook:delivery:processed")
    for tag in (*tags, "hook:delivery:received"):
        query = select(func.count()).select_from(audit_events).where(audit_events.c.tag == tag)
        assert _count(services, query) == CONTACTS, tag
    from seqbridge.audit import verify_chain

    checked, problems = verify_chain(services.db)
    assert problems == [] and checked > CONTACTS * 3


def _gunicorn(database_url: str, mappings: str, port: int, log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": database_url,
        "SEQBRIDGE_MAPPINGS_DIR": mappings,
        "SEQBRIDGE_BIND": f"127.0.0.1:{port}",
        "SEQBRIDGE_WEB_WORKERS": "1",
        "SEQBRIDGE_WEB_THREADS": "4",
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    log = open(log_path, "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:seqbridge.gunicorn_conf", "seqbridge:create_app()"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_receipts_of_a_web_process_killed_after_answering_are_audited_later_by_the_worker(
    app_config, api, services, tmp_path
):
    """The receipt's audit event is not written on the request path: a web process killed right
    after its 2xx answers leaves stored, unaudited receipts, and the worker writes each one's
    ``hook:delivery:received`` later, exactly once, with the time and request id of the receipt."""
    write_mapping(app_config, WHATSAPP_STOP)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "web.log"
    web = _gunicorn(app_config["DATABASE_URL"], app_config["MAPPINGS_DIR"], port, log)
    answered: dict[str, str] = {}  # delivery id -> the request id it was answered with
    try:
        deadline = time.monotonic() + 60
        with requests.Session() as session:
            while True:
                try:
                    if session.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline and web.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            for n in range(20):
                body = meta_body("hello", message_id=f"wamid.R{n}", sender=f"1777{n:07d}")
                answer = session.post(
                    f"http://127.0.0.1:{port}/hooks/whatsapp",
                    data=body,
                    headers=meta_headers(body),
                    timeout=30,
                )
                assert answer.status_code == 202, answer.text
                answered[answer.json()["data"]["delivery_id"]] = answer.headers["X-Request-Id"]
    finally:
        os.killpg(web.pid, signal.SIGKILL)  # the master and its worker, at once, no clean-up
        web.wait()
    received = select(audit_events).where(audit_events.c.tag == "hook:delivery:received")
    with services.db.engine.connect() as conn:
        assert conn.execute(received).first() is None  # stored and answered, not audited yet
        rows = {r.id: r for r in conn.execute(select(deliveries))}
    assert set(rows) == set(answered) and not any(r.receipt_audited for r in rows.values())

    worker = _worker(app_config["DATABASE_URL"], app_config["MAPPINGS_DIR"], tmp_path / "worker.log")
    try:
        processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
        deadline = time.monotonic() + 60
        while _count(services, processed) < len(answered):
            assert time.monotonic() < deadline and worker.poll() is None, (
                tmp_path / "worker.log"
            ).read_text()
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    with services.db.engine.connect() as conn:
        events = [dict(e) for e in conn.execute(received).mappings()]
    assert sorted(e["subject_id"] for e in events) == sorted(answered)  # each exactly once
    for event in events:
        assert event["request_id"] == answered[event["subject_id"]]
        assert event["occurred_at"] == rows[event["subject_id"]].received_at
    from seqbridge.audit import verify_chain

    assert verify_chain(services.db)[1] == []
