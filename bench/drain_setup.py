"""For :mod:`bench.drain`: the organization (contacts with phones, two sequences, everyone
enrolled), the shipped WhatsApp STOP hooks, and the signed STOPs queued through a real
``seqbridge serve --no-worker``."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import whatsapp_body
from bench.load import free_port
from seqbridge import create_app
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.schema import contacts

ROOT = Path(__file__).parents[1]
SECRETS = {
    "WHATSAPP_APP_SECRET": "bench-drain-secret",
    "WHATSAPP_VERIFY_TOKEN": "bench-verify",
    "TWILIO_AUTH_TOKEN": "bench-twilio",
    "SEQBRIDGE_DEMO_ORG": "bench",
}
POSTERS = 16


@dataclass
class Prepared:
    """A queued database and what a correct drain of it leaves."""

    url: str
    work: Path
    org_id: str
    contacts: int
    senders: list[str] = field(default_factory=list)  # E.164 phones, in posting order


def phone(n: int) -> str:
    return f"+1555{n:07d}"


def environment(url: str, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        **SECRETS,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_MAPPINGS_DIR": str(work / "mappings"),
        "SEQBRIDGE_VAR_DIR": str(work / "var"),
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }


def prepare(url: str, work: Path, n_contacts: int, n_deliveries: int) -> Prepared:
    """Contacts, two sequences with every contact enrolled in both (through the API; so the
    organization's live enrollments and pending tasks grow with it), and the hooks."""
    mappings = work / "mappings"
    mappings.mkdir(parents=True)
    shutil.copy(ROOT / "mappings/whatsapp_stop.yaml", mappings)
    shutil.copytree(ROOT / "mappings/fixtures", mappings / "fixtures")
    os.environ.update(SECRETS)  # the mapping reads its secrets from the environment
    app = create_app(
        {
            "DATABASE_URL": url,
            "MAPPINGS_DIR": str(mappings),
            "LOG_LEVEL": "WARNING",
            "VAR_DIR": str(work / "var"),
        }
    )
    services = app.extensions["seqbridge"]
    key = services.keys.create_key("bench", ["*"]).raw_key
    client, auth = app.test_client(), {"Authorization": f"Bearer {key}"}
    org_id = client.get("/api/v1/me", headers=auth).json["data"]["organization_id"]
    now = services.clock.now()
    rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": org_id,
            "email": f"c{n}@example.com",
            "email_normalized": f"c{n}@example.com",
            "phone": phone(n),
            "first_name": f"C{n}",
            "status": "active",
            "converted": False,
            "has_open_ticket": False,
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(n_contacts)
    ]
    with services.db.transaction() as tx:
        for start in range(0, len(rows), 5000):
            bulk_insert(tx.conn, contacts, rows[start : start + 5000])
    # The senders are spread over the organization, not its first rows.
    stride = max(1, n_contacts // n_deliveries)
    senders = [rows[n * stride] for n in range(n_deliveries)]
    for name in ("Onboarding", "Nurture"):
        sid = client.post("/api/v1/sequences", json={"name": name}, headers=auth).json["data"]["id"]
        for _ in range(2):
            step = {"subject": "Hi {{ first_name }}", "body": "Hello", "delay_days": 3}
            assert client.post(f"/api/v1/sequences/{sid}/steps", json=step, headers=auth).status_code == 201
        assert (
            client.patch(f"/api/v1/sequences/{sid}", json={"status": "active"}, headers=auth).status_code
            == 200
        )
        for start in range(0, len(rows), 1000):  # everyone: the organization's tasks grow with it
            ids = [r["id"] for r in rows[start : start + 1000]]
            answer = client.post(
                f"/api/v1/sequences/{sid}/enroll_bulk", json={"customer_ids": ids}, headers=auth
            )
            assert answer.json["data"]["enrolled"] == len(ids), answer.json
    services.db.dispose()
    return Prepared(url, work, org_id, n_contacts, [r["phone"] for r in senders])


def stop_body(sender: str, n: int) -> bytes:
    """One WhatsApp Cloud API notification of a text "STOP" from ``sender``."""
    return whatsapp_body(sender=sender, message_id=f"wamid.drain.{n}", text="STOP", name=f"C{n}")


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRETS["WHATSAPP_APP_SECRET"].encode(), body, hashlib.sha256).hexdigest()


@contextmanager
def serving(env: dict[str, str], work: Path):
    """``seqbridge serve --no-worker`` on a free loopback port; yields its base URL."""
    port = free_port()
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "serve",
            "--no-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"seqbridge serve did not come up; see {work / 'serve.log'}")
            time.sleep(0.2)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def queue(prepared: Prepared) -> float:
    """Post one signed STOP per sender to the real server; every answer must be 202 queued.
    Returns webhooks/s (for orientation: this is not what the bench measures)."""
    env = environment(prepared.url, prepared.work)
    with serving(env, prepared.work) as base:
        bodies = [stop_body(sender, n) for n, sender in enumerate(prepared.senders)]
        sessions: dict[int, requests.Session] = {}

        def post(body: bytes) -> tuple[int, str]:
            session = sessions.setdefault(threading.get_ident(), requests.Session())
            answer = session.post(
                f"{base}/hooks/whatsapp",
                data=body,
                timeout=60,
                headers={"X-Hub-Signature-256": sign(body), "Content-Type": "application/json"},
            )
            return answer.status_code, answer.json().get("data", {}).get("status", answer.text)

        started = time.perf_counter()
        with ThreadPoolExecutor(POSTERS) as pool:
            answers = list(pool.map(post, bodies))
        elapsed = time.perf_counter() - started
    wrong = [a for a in answers if a != (202, "queued")]
    if wrong:
        raise SystemExit(f"{len(wrong)} STOPs were not queued, e.g. {wrong[:3]}")
    return len(bodies) / elapsed
