"""Crash after acknowledge: 2,000 signed webhooks (WhatsApp STOPs and Typeform sign-ups) arrive
over real HTTP while the worker processes are killed with SIGKILL at random moments and
restarted. Afterwards every acknowledged delivery was processed exactly once, and the audit chain
verifies. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from seqbridge.audit import verify_chain
from seqbridge.clock import ManualClock
from seqbridge.storage.schema import audit_events, deliveries, enrollments
from tests import factories
from tests.test_hooks import meta_body, meta_headers, write_mapping

pytestmark = pytest.mark.slow

STOPS = 1000
FORMS = 1000
TYPEFORM = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "webhooks" / "typeform_response.json").read_text()
)
MAPPING = """
hooks:
  whatsapp:
    organization: acme
    source: {connector: whatsapp_cloud, app_secret: meta-app-secret-for-tests, verify_token: v}
    rules:
      - name: stop
        when: {field: event.text, keyword: [STOP]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.from }}"}, reason: unsubscribed}
  typeform:
    organization: acme
    source: {connector: typeform, secret: tf-secret}
    rules:
      - name: welcome
        when: {field: event.answers.email, exists: true}
        actions:
          - upsert_contact: {email: "{{ event.answers.email }}"}
          - enroll: {sequence: Welcome, contact: {email: "{{ event.answers.email }}"}}
"""


@pytest.fixture
def clock() -> ManualClock:
    # The worker processes run on the system clock; the first steps (three days out) never fall due.
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def server(app):
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()


def _typeform(n: int) -> tuple[bytes, dict[str, str]]:
    body = copy.deepcopy(TYPEFORM)
    body["event_id"] = f"evt-{n}"
    body["form_response"]["token"] = f"token-{n}"
    body["form_response"]["answers"][0]["email"] = f"signup-{n}@example.com"
    raw = json.dumps(body).encode()
    signature = base64.b64encode(hmac.new(b"tf-secret", raw, hashlib.sha256).digest()).decode()
    return raw, {"Typeform-Signature": f"sha256={signature}", "Content-Type": "application/json"}


class Workers:
    """Two `seqbridge worker` processes; :meth:`kill_one` SIGKILLs one and starts another."""

    def __init__(self, database_url: str, mappings: str, log: Path) -> None:
        self.env = {
            **os.environ,
            "SEQBRIDGE_DATABASE_URL": database_url,
            "SEQBRIDGE_MAPPINGS_DIR": mappings,
            "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.05",
            "SEQBRIDGE_PROCESSOR_LEASE_SECONDS": "2",
            "SEQBRIDGE_LOG_LEVEL": "WARNING",
        }
        self.log = log
        self.procs = [self._start(), self._start()]
        self.kills = 0

    def _start(self) -> subprocess.Popen:
        out = open(self.log, "a")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(len(self.procs))
        self.procs[index].send_signal(signal.SIGKILL)
        self.procs[index].wait()
        self.kills += 1
        self.procs[index] = self._start()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def _count(services, query) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_every_acknowledged_webhook_is_processed_exactly_once_through_random_sigkills(
    app_config, api, services, server, tmp_path
):
    write_mapping(app_config, MAPPING)
    factories.active_sequence(api, name="Welcome")
    nurture = factories.active_sequence(api, name="Nurture")
    phones = [f"+1555{n:07d}" for n in range(STOPS)]
    ids = [factories.contact(api, phone=p)["id"] for p in phones]
    enrolled = api.post(f"/api/v1/sequences/{nurture['id']}/enroll_bulk", json={"customer_ids": ids})
    assert enrolled.status_code == 200, enrolled.json

    requests_ = [
        (f"{server}/hooks/whatsapp", meta_body("STOP", message_id=f"wamid.C{n}", sender=p.lstrip("+")))
        for n, p in enumerate(phones)
    ]
    requests_ = [(url, body, meta_headers(body)) for url, body in requests_]
    requests_ += [(f"{server}/hooks/typeform", *_typeform(n)) for n in range(FORMS)]
    rng = random.Random(20261122)
    rng.shuffle(requests_)

    workers = Workers(app_config["DATABASE_URL"], app_config["MAPPINGS_DIR"], tmp_path / "workers.log")
    processed = select(func.count()).select_from(deliveries).where(deliveries.c.status == "processed")
    stop_killing = threading.Event()
    kills_mid_way: list[int] = []

    def killer() -> None:
        while not stop_killing.wait(rng.uniform(1.0, 2.5)):
            done = _count(services, processed)
            if done >= STOPS + FORMS:
                return
            workers.kill_one(rng)
            kills_mid_way.append(done)

    local = threading.local()

    def send(item) -> int:
        url, body, headers = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(url, data=body, headers=headers, timeout=60).status_code

    killing = threading.Thread(target=killer, daemon=True)
    killing.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            statuses = Counter(pool.map(send, requests_))
        assert statuses == {202: STOPS + FORMS}, statuses
        deadline = time.monotonic() + 300
        while _count(services, processed) < STOPS + FORMS:
            assert time.monotonic() < deadline, (tmp_path / "workers.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        stop_killing.set()
        killing.join(timeout=30)
        workers.stop()

    print(f"{workers.kills} SIGKILLs; processed deliveries at each: {kills_mid_way}")
    assert sum(1 for n in kills_mid_way if 0 < n < STOPS + FORMS) >= 3, kills_mid_way
    assert _count(services, select(func.count()).select_from(deliveries)) == STOPS + FORMS

    def tagged(tag: str) -> int:
        return _count(
            services, select(func.count()).select_from(audit_events).where(audit_events.c.tag == tag)
        )

    # Each STOP unenrolled exactly once; each form enrolled exactly once.
    exited = select(func.count()).select_from(enrollments).where(enrollments.c.exit_reason == "unsubscribed")
    assert _count(services, exited) == STOPS
    assert tagged("hook:enrollment:exited") == STOPS
    assert tagged("hook:contact:unsubscribed") == STOPS
    in_welcome = enrollments.c.sequence_id != nurture["id"]
    assert _count(services, select(func.count()).select_from(enrollments).where(in_welcome)) == FORMS
    assert (
        _count(services, select(func.count(func.distinct(enrollments.c.contact_id))).where(in_welcome))
        == FORMS
    )
    assert tagged("hook:enrollment:created") == FORMS
    assert tagged("hook:delivery:processed") == STOPS + FORMS
    checked, problems = verify_chain(services.db)
    assert problems == [] and checked > (STOPS + FORMS) * 3
