"""PostgreSQL stops for a few seconds under webhook load. While it is down, webhooks answer 503
with Retry-After (the sender retries), never 500 and never 2xx, and /readyz fails. When it is
back, everything resumes: every message the sender got a 2xx for is processed exactly once.

The cluster is this test's own (it is stopped and started again), on a loopback port."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from seqbridge.storage.migrate import upgrade
from seqbridge.storage.schema import audit_events, contacts, deliveries
from seqbridge.web import create_app
from seqbridge.worker import Worker
from seqbridge.worker.deliveries import DeliveryProcessor
from tests import pg_server
from tests.test_hooks import WHATSAPP_STOP, meta_body, meta_headers, write_mapping

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    base = Path(tempfile.mkdtemp(prefix="seqbridge-pg-outage-"))
    server = pg_server.start(base, durable=True)  # it is crashed: acknowledged commits must survive
    with psycopg.connect(
        host=server.host, port=server.port, user=server.user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE DATABASE seqbridge")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_webhooks_get_503_with_retry_after_while_postgres_is_down_and_nothing_is_lost(cluster, tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    app = create_app(
        {
            "DATABASE_URL": cluster.url("seqbridge"),
            "MAPPINGS_DIR": str(mappings),
            "MAPPINGS_WATCH_SECONDS": 0,
            "DB_POOL_SIZE": 8,
            "TESTING": True,
            "PROCESSOR_LEASE_SECONDS": 3,
            "DELIVERY_RETRY_BASE_SECONDS": 1,
        }
    )
    services = app.extensions["seqbridge"]
    upgrade(services.db)
    services.keys.create_key("acme", ["*"], "test")
    write_mapping({"MAPPINGS_DIR": str(mappings)}, WHATSAPP_STOP)
    services.inbox.registry.reload()
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_port}"
    worker = Worker([DeliveryProcessor(services)], poll_interval=0.05)
    threading.Thread(target=worker.run, daemon=True).start()

    serial = itertools.count()
    outcomes: list[tuple[int, int, dict, dict]] = []  # (message, status, headers, body)
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def post(session: requests.Session, n: int) -> requests.Response:
        body = meta_body("STOP", message_id=f"wamid.O{n}", sender=f"1555{n:07d}")
        return session.post(f"{base}/hooks/whatsapp", data=body, headers=meta_headers(body), timeout=60)

    def sender() -> None:
        with requests.Session() as session:
            while sending.is_set():
                n = next(serial)
                answer = post(session, n)
                with lock:
                    outcomes.append((n, answer.status_code, dict(answer.headers), answer.json()))
                if answer.status_code == 503:
                    time.sleep(0.1)  # a sender backs off (the real ones wait Retry-After, then retry)

    def acknowledged() -> int:
        with lock:
            return sum(1 for o in outcomes if o[1] == 202)

    senders = [threading.Thread(target=sender) for _ in range(4)]
    for thread in senders:
        thread.start()
    try:
        while acknowledged() < 100:
            time.sleep(0.01)
        cluster.stop()  # immediate: connections drop mid-transaction
        down_at = len(outcomes)
        readiness = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            ready = requests.get(f"{base}/readyz", timeout=30)
            readiness.append(
                (ready.status_code, ready.json()["error"]["code"] if ready.status_code != 200 else None)
            )
            time.sleep(0.2)
        during = outcomes[down_at:]
        cluster.start_again()
        back = acknowledged()
        while acknowledged() < back + 100:
            time.sleep(0.01)
    finally:
        sending.clear()
        for thread in senders:
            thread.join(timeout=60)

    statuses = Counter(o[1] for o in outcomes)
    assert set(statuses) <= {202, 503}, statuses  # never a 500, never anything else
    assert statuses[503] > 0 and any(o[1] == 503 for o in during)
    for _, status, headers, body in outcomes:
        if status == 503:
            assert headers["Retry-After"] == "5"
            assert body["error"]["code"] == "database_unavailable" and body["error"]["message"]
    assert readiness and all(status == 503 for status, _ in readiness), readiness
    assert {code for _, code in readiness} == {"not_ready"}
    assert requests.get(f"{base}/readyz", timeout=30).status_code == 200

    # The sender retries what got a 503 (as it was told to), until each is acknowledged.
    refused = sorted({o[0] for o in outcomes if o[1] == 503} - {o[0] for o in outcomes if o[1] == 202})
    with ThreadPoolExecutor(8) as pool:
        retried = Counter(pool.map(lambda n: post(requests.Session(), n).status_code, refused))
    assert set(retried) <= {200, 202}, retried  # 200: it had been stored after all
    messages = {o[0] for o in outcomes}

    with services.db.engine.connect() as conn:

        def count(query) -> int:
            return conn.execute(query).scalar_one()

        deadline = time.monotonic() + 120
        processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
        while count(processed) < len(messages):
            assert time.monotonic() < deadline, (
                len(messages),
                conn.execute(
                    select(deliveries.c.status, deliveries.c.attempts, func.count()).group_by(
                        deliveries.c.status, deliveries.c.attempts
                    )
                ).all(),
            )
            time.sleep(0.2)
            conn.rollback()
        worker.stopping.set()
        assert count(select(func.count()).select_from(deliveries)) == len(messages)
        unsubscribed = select(func.count()).select_from(contacts).where(contacts.c.status == "unsubscribed")
        assert count(unsubscribed) == len(messages)
        unsubscribe_events = (
            select(func.count()).select_from(audit_events).where(audit_events.c.tag == "hook:contact:created")
        )
        assert count(unsubscribe_events) == len(messages)  # each STOP acted on exactly once
    http.shutdown()
    services.db.dispose()
