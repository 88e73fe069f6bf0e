"""How long each console page takes on the server with 100,000 deliveries and 100,000 contacts.

    .venv/bin/python -m bench.console                       # SQLite and PostgreSQL
    .venv/bin/python -m bench.console --engine sqlite --deliveries 20000 --contacts 20000
    .venv/bin/python -m bench.console --engine sqlite --explain   # the query plans of the charts

The database is filled with bulk inserts: contacts (each with a ``api:contact:created`` audit
event, chained), two sequences with enrollments, and deliveries spread over the last 24 hours
(mostly processed, some failed, dead, rejected, queued) with their dedupe keys and a latency
each. One real WhatsApp STOP goes through the inbox and the worker, so a contact has a full
timeline. Each page is then requested through the Flask test client, signed in like a browser:
once to warm up, then ``--rounds`` times; the report is the median and the slowest, in
milliseconds of server time (the test client runs the whole app in this process, no network).
The target is 300 ms per page.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import re
import statistics
import time
import uuid
from datetime import timedelta

from bench.common import database
from seqbridge import create_app
from seqbridge.audit import AuditTag, record_many
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.schema import contact_tags, contacts, deliveries, delivery_keys, enrollments

HOOKS = ("whatsapp", "zapier", "typeform", "form")
STATUSES = (
    ("processed", 0.90),
    ("failed", 0.04),
    ("dead", 0.02),
    ("rejected", 0.02),
    ("ignored", 0.01),
    ("queued", 0.01),
)
APP_SECRET = "bench-app-secret"
MAPPING = """
version: 1
hooks:
  whatsapp:
    organization: bench
    source: {connector: whatsapp_cloud, app_secret: APP_SECRET, verify_token: v}
    rules:
      - name: stop
        when: {field: event.text, keyword: [STOP]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.from }}"}, reason: unsubscribed}
      - name: other
        actions: []
""".replace("APP_SECRET", APP_SECRET)


def _pick(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for status, share in STATUSES:
        acc += share
        if x < acc:
            return status
    return "processed"


def fill(app, n_deliveries: int, n_contacts: int, rng: random.Random) -> dict:
    services = app.extensions["seqbridge"]
    key = services.keys.create_key("bench", ["*"], "bench").raw_key
    org_id = services.keys.authenticate(key).org_id
    caller = Caller(org_id, Actor(ActorType.CLI, "bench"))
    now = services.clock.now()
    started = time.perf_counter()
    contact_ids = []
    for first in range(0, n_contacts, 5000):
        rows, tags, events = [], [], []
        for n in range(first, min(first + 5000, n_contacts)):
            cid = str(uuid.uuid4())
            contact_ids.append(cid)
            email = f"person{n}@example.com"
            rows.append(
                {
                    "id": cid,
                    "org_id": org_id,
                    "email": email,
                    "email_normalized": email,
                    "phone": f"+1650{n:07d}",
                    "first_name": f"P{n}",
                    "last_name": None,
                    "contact_type": None,
                    "source": None,
                    "job_title": None,
                    "city": None,
                    "state": None,
                    "country": None,
                    "status": "active",
                    "converted": False,
                    "has_open_ticket": False,
                    "timezone": None,
                    "company_id": None,
                    "attributes": {},
                    "created_at": now - timedelta(days=2),
                    "updated_at": now - timedelta(days=2),
                }
            )
            if n % 10 == 0:
                tags.append({"contact_id": cid, "tag": "vip", "org_id": org_id})
            events.append((AuditTag.CLI_CONTACT_CREATED, "contact", cid, {"email": email}))
        with services.db.transaction() as tx:
            bulk_insert(tx.conn, contacts, rows)
            if tags:
                bulk_insert(tx.conn, contact_tags, tags)
            record_many(tx, caller, events, now - timedelta(days=2))
    api = Caller(org_id, Actor(ActorType.API_KEY, "bench"))
    from seqbridge.services.sequences import SequenceKind

    sequence_ids = []
    for name in ("Onboarding", "Nurture"):
        seq = services.sequences.create_sequence(api, SequenceKind.SEQUENCE, {"name": name})
        services.sequences.add_step(
            api,
            SequenceKind.SEQUENCE,
            seq["id"],
            {"action": "email", "subject": "Hi", "body": "Hello", "delay_days": 3},
        )
        services.sequences.update_sequence(api, SequenceKind.SEQUENCE, seq["id"], {"status": "active"})
        sequence_ids.append(seq["id"])
    rows = []
    for i, cid in enumerate(contact_ids[: min(20_000, len(contact_ids))]):
        status = "active" if i % 4 else "exited"
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "org_id": org_id,
                "sequence_id": sequence_ids[i % 2],
                "contact_id": cid,
                "status": status,
                "enrollment_source": "bench",
                "enrollment_data": {},
                "enrolled_at": now - timedelta(days=1),
                "enrollment_time": now - timedelta(days=1),
                "current_step_id": None,
                "next_send_at": None,
                "paused_at": None,
                "completed_at": None,
                "exited_at": None if status == "active" else now,
                "exit_reason": None if status == "active" else "manual",
                "last_error": None,
                "company_id": None,
                "deal_id": None,
                "live_key": cid if status == "active" else None,
                "updated_at": now,
            }
        )
    with services.db.transaction() as tx:
        for first in range(0, len(rows), 5000):
            bulk_insert(tx.conn, enrollments, rows[first : first + 5000])
    body = json.dumps(
        {"event_id": "x", "payload": {"action": "enroll", "email": "someone@example.com"}}
    ).encode()
    sample_key = None
    for first in range(0, n_deliveries, 5000):
        rows, keys = [], []
        for n in range(first, min(first + 5000, n_deliveries)):
            did = str(uuid.uuid4())
            received = now - timedelta(seconds=rng.uniform(0, 86_400))
            status = _pick(rng)
            done = status in ("processed", "failed")
            latency = timedelta(milliseconds=min(600_000, rng.lognormvariate(4.5, 1.2)))
            dedupe = f"evt-{n}"
            sample_key = sample_key or dedupe
            rows.append(
                {
                    "id": did,
                    "org_id": org_id,
                    "hook": HOOKS[n % len(HOOKS)],
                    "status": status,
                    "received_at": received,
                    "request_id": uuid.uuid4().hex,
                    "method": "POST",
                    "content_type": "application/json",
                    "headers": {"content-type": "application/json"},
                    "query": {},
                    "body": None if status == "rejected" else body,
                    "body_size": len(body),
                    "events": [{"dedupe_key": dedupe, "kind": "event", "data": {}}],
                    "reject_reason": "signature_mismatch" if status == "rejected" else None,
                    "attempts": 8 if status == "dead" else (0 if status == "queued" else 1),
                    "next_attempt_at": received if status == "queued" else None,
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "results": [],
                    "errors": []
                    if status != "dead"
                    else [{"at": received.isoformat(), "attempt": 8, "error": "Transient: target down"}],
                    "replays": 0,
                    "processed_at": received + latency if done else None,
                    "updated_at": received,
                }
            )
            if status not in ("rejected", "ignored"):
                keys.append(
                    {
                        "org_id": org_id,
                        "hook": rows[-1]["hook"],
                        "dedupe_key": dedupe,
                        "delivery_id": did,
                        "created_at": received,
                    }
                )
        with services.db.transaction() as tx:
            bulk_insert(tx.conn, deliveries, rows)
            bulk_insert(tx.conn, delivery_keys, keys)
    # One real STOP, through the inbox and the worker, for a full contact timeline.
    stopper = contact_ids[7]
    services.enrollment.enroll(
        api,
        SequenceKind.SEQUENCE,
        sequence_ids[0],
        __import__("seqbridge.services.contacts", fromlist=["ContactRef"]).ContactRef("id", stopper),
        source="bench",
    )
    client = app.test_client()
    message = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "W",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1", "phone_number_id": "P"},
                            "contacts": [{"profile": {"name": "P7"}, "wa_id": "16500000007"}],
                            "messages": [
                                {
                                    "from": "16500000007",
                                    "id": "wamid.BENCH",
                                    "timestamp": "1767607200",
                                    "type": "text",
                                    "text": {"body": "STOP"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    raw = json.dumps(message).encode()
    signature = hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    answer = client.post(
        "/hooks/whatsapp",
        data=raw,
        headers={"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.json
    from seqbridge.worker.deliveries import DeliveryProcessor

    while DeliveryProcessor(services).run_once("bench") > 0:
        pass
    with services.db.transaction(write=False) as tx:
        sample = tx.deliveries.list_deliveries(
            org_id, hook=None, statuses=["dead"], since=None, until=None, before=None, limit=1
        )[0]["id"]
    if services.db.is_postgresql:
        # What autovacuum does to a table this size within a minute: statistics and the
        # visibility map (without it every index-only scan reads the heap too).
        with services.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    print(
        f"filled in {time.perf_counter() - started:.1f} s: {n_contacts} contacts, {n_deliveries} deliveries"
    )
    return {
        "key": key,
        "contact": stopper,
        "sequence": sequence_ids[0],
        "delivery": sample,
        "stop": answer.json["data"]["delivery_id"],
        "provider_id": sample_key,
    }


def sign_in(client, key: str) -> None:
    token = re.search(r'name="form_token" value="([^"]+)"', client.get("/sign-in").text).group(1)
    assert client.post("/sign-in", data={"form_token": token, "api_key": key}).status_code == 303


def pages(ids: dict) -> dict[str, str]:
    return {
        "overview": "/",
        "overview charts 24h (JSON)": "/overview/charts?range=24h",
        "deliveries": "/deliveries",
        "deliveries ?status=dead": "/deliveries?status=dead",
        "deliveries ?hook&status=failed": "/deliveries?hook=zapier&status=failed",
        "deliveries ?range=1h": "/deliveries?range=1h",
        "deliveries live poll (rows)": "/deliveries?fragment=rows",
        "deliveries ?q=provider id": f"/deliveries?q={ids['provider_id']}",
        "deliveries ?q=email": "/deliveries?q=person7@example.com",
        "delivery detail": f"/deliveries/{ids['stop']}",
        "replay confirmation (count)": "/replays/new?status=processed",
        "replays": "/replays",
        "hooks & mappings": "/mappings",
        "playground": "/mappings/whatsapp/playground",
        "sequences": "/sequences",
        "sequence detail": f"/sequences/{ids['sequence']}",
        "contacts": "/contacts",
        "contacts ?q=email": "/contacts?q=person99999@example.com",
        "contacts ?q=tag": "/contacts?q=vip&by=tag",
        "contact timeline": f"/contacts/{ids['contact']}",
        "audit log": "/audit",
        "audit ?tag": "/audit?tag=hook:contact:unsubscribed",
        "keys": "/keys",
        "subscriptions": "/subscriptions",
    }


def baselines(app) -> list[tuple[str, float, float]]:
    """What the day's charts cannot beat, timed the same way: one covering count of the window,
    and one pass computing every delivery's latency (no buckets, no histogram)."""
    from sqlalchemy import func, select

    from seqbridge.storage.schema import deliveries as table

    services = app.extensions["seqbridge"]
    since = services.clock.now() - timedelta(days=1)
    out = []
    with services.db.transaction(write=False) as tx:
        org = tx.conn.execute(select(func.min(table.c.org_id))).scalar()
        count = select(func.count()).where(
            table.c.org_id == org, table.c.status.in_(("processed", "failed")), table.c.received_at >= since
        )
        latency = select(func.sum(tx.delivery_stats._latency_ms())).where(
            table.c.org_id == org, table.c.status.in_(("processed", "failed")), table.c.received_at >= since
        )
        for name, query in (("baseline: count the day", count), ("baseline: sum the day's latency", latency)):
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                tx.conn.execute(query).scalar()
                samples.append((time.perf_counter() - start) * 1000)
            out.append((name, statistics.median(samples), max(samples)))
    return out


def measure(app, ids: dict, rounds: int) -> list[tuple[str, float, float]]:
    client = app.test_client()
    sign_in(client, ids["key"])
    out = baselines(app)
    for name, path in pages(ids).items():
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:500])
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            client.get(path)
            samples.append((time.perf_counter() - start) * 1000)
        out.append((name, statistics.median(samples), max(samples)))
    return out


def explain(app) -> None:
    services = app.extensions["seqbridge"]
    from sqlalchemy import text

    with services.db.transaction(write=False) as tx:
        org = tx.conn.execute(text("SELECT id FROM organizations WHERE name = 'bench'")).scalar()
        since = services.clock.now() - timedelta(days=1)
        stats = tx.delivery_stats
        prefix = "EXPLAIN QUERY PLAN " if services.db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = sqlite.dialect() if services.db.is_sqlite else postgresql.dialect()
        from seqbridge.storage import delivery_stats as ds

        captured = []
        real_execute = tx.conn.execute

        def capture(statement, *args, **kwargs):
            captured.append(statement)
            return real_execute(statement, *args, **kwargs)

        tx.conn.execute = capture  # type: ignore[method-assign]
        stats.conn = tx.conn
        edges = [since + timedelta(minutes=10 * i) for i in range(145)]
        stats.counts_by_bucket(org, edges, None)
        stats.latency_histogram(org, edges, None)
        stats.status_summary(org, ("queued", "processing", "failed", "dead"))
        tx.replay_jobs.conn = tx.conn
        tx.replay_jobs.count_matching(
            org, {"statuses": ["processed"], "hook": None, "since": None}, services.clock.now()
        )
        tx.conn.execute = real_execute  # type: ignore[method-assign]
        for statement in captured:
            sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            print("--", sql.splitlines()[0][:100])
            for row in tx.conn.exec_driver_sql(prefix + sql):
                print("   ", " | ".join(str(c) for c in row))
        del ds


def screenshots(url: str, mappings, ids: dict, directory: str) -> None:
    """Serve the filled database for real (gunicorn and the worker) and take a PNG of every page
    in headless Chromium: the README's docs/console/ pictures."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import requests
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(300):
            try:
                if requests.get(base + "/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {ids['key']}"}
        job = requests.post(
            base + "/api/v1/deliveries/replay",
            json={"status": ["dead"], "hook": "form"},
            headers=auth,
            timeout=30,
        ).json()["data"]
        requests.post(
            base + "/api/v1/hooks/subscriptions",
            headers=auth,
            timeout=30,
            json={
                "target_url": "https://hooks.zapier.com/hooks/catch/123/abc/",
                "event": "contact.unsubscribed",
            },
        )
        shots = {
            "overview": "/",
            "deliveries": "/deliveries?status=failed&status=dead",
            "delivery": f"/deliveries/{ids['stop']}",
            "replay-confirm": "/replays/new?status=dead",
            "replay-job": f"/replays/{job['id']}",
            "mappings": "/mappings",
            "playground": f"/mappings/whatsapp/playground?delivery={ids['stop']}",
            "sequences": "/sequences",
            "sequence": f"/sequences/{ids['sequence']}",
            "contacts": "/contacts?q=vip&by=tag",
            "contact": f"/contacts/{ids['contact']}",
            "audit": "/audit",
            "keys": "/keys",
            "subscriptions": "/subscriptions",
        }
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-gpu",
                ],
            )
            page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
            page.goto(base + "/sign-in")
            page.screenshot(path=str(out / "sign-in.png"))
            page.get_by_label("API key").fill(ids["key"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(base + "/")
            for name, path in shots.items():
                page.goto(base + path)
                page.wait_for_load_state("networkidle")
                if name == "overview":  # the day's latency arrives by its own request
                    page.locator(".chart .uplot").nth(3).wait_for(timeout=30_000)  # no string eval: CSP
                page.wait_for_timeout(1500 if name == "replay-job" else 300)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            browser.close()
        print(f"screenshots in {out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(engine: str, args) -> None:
    import tempfile
    from pathlib import Path

    mappings = Path(tempfile.mkdtemp(prefix="seqbridge-bench-maps-"))
    (mappings / "hooks.yaml").write_text(MAPPING)
    with database(engine) as url:
        app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": str(mappings), "LOG_LEVEL": "WARNING"})
        ids = fill(app, args.deliveries, args.contacts, random.Random(7))
        if args.explain:
            explain(app)
        results = measure(app, ids, args.rounds)
        print(
            f"\n{engine}: {args.deliveries} deliveries, {args.contacts} contacts, median / slowest of {args.rounds}"
        )
        print(f"{'page':36} {'median ms':>10} {'max ms':>8}")
        for name, median, slowest in results:
            flag = "  over 300 ms" if slowest > 300 else ""
            print(f"{name:36} {median:10.1f} {slowest:8.1f}{flag}")
        app.extensions["seqbridge"].db.dispose()
        if args.screenshots and engine == "sqlite":
            screenshots(url, mappings, ids, args.screenshots)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print the plans of the chart queries")
    parser.add_argument(
        "--screenshots", metavar="DIR", help="then serve the SQLite database and save a PNG of each page"
    )
    args = parser.parse_args()
    for engine in ("sqlite", "postgresql") if args.engine == "both" else (args.engine,):
        run(engine, args)


if __name__ == "__main__":
    main()
