"""The worker draining a backlog of WhatsApp STOPs (issue 16), against a raw-SQL loop that does
the same effects one transaction per delivery, on a copy of the same queued database.

    .venv/bin/python -m bench.drain [--engine sqlite|postgresql|both] [--deliveries 3000]
                                    [--contacts 30000] [--workers 2]

1. **Prepare** a fresh database (SQLite, or a durable PostgreSQL: fsync and synchronous_commit
   on): an organization whose contacts all have phones, two active sequences of two steps
   (first step three days out, so every enrollment has a pending task), and every contact
   enrolled in both (in the big organization, the bystanders too). The hooks are the shipped ``mappings/whatsapp_stop.yaml`` (Meta's Cloud API
   and Twilio), with their secrets from the environment.
2. **Queue**: a real ``seqbridge serve --no-worker`` (gunicorn on loopback) receives one signed
   STOP per sender (``X-Hub-Signature-256``, as Meta signs), posted by a few threads; every answer
   must be 202 ``queued``. Then the server stops: what is left is a database of real receipts.
3. **Time**, each on its own copy of that database (SQLite: the file, copied with the backup API;
   PostgreSQL: ``CREATE DATABASE … TEMPLATE``):
   - the raw loop (:mod:`bench.drain_baseline`), before and after the workers (the baseline is
     their mean);
   - ``seqbridge worker`` subprocesses, one, and on PostgreSQL also ``--workers`` of them. Timed
     from the moment the first delivery leaves the queue (the process has started and claimed)
     until no delivery is queued or processing; the rate from spawning the processes is reported
     beside it.
4. **Check** every copy, and exit non-zero if anything is wrong (:func:`bench.drain_baseline.check`):
   every sender unsubscribed and nobody else, every enrollment exited, every task cancelled,
   every delivery processed once with exactly one audit event per effect, and
   ``seqbridge audit verify`` passing.

With ``--contacts N`` the same is prepared a second time in an organization of ``N`` contacts
(the senders are the same number, the rest are bystanders) and the one-worker rate is compared
with the first. Targets: SQLite >= 1,000 deliveries/s with one worker and >= 1.0x the raw loop;
PostgreSQL >= 600/s with one worker and ``--workers`` >= 1.6x one; ``--contacts 30000`` no
worse than 0.8x of the small organization.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy import make_url

from bench import drain_baseline
from bench.common import database
from bench.load import free_port, process_cpu
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
POLL = 0.02  # seconds between looks at the queue while timing


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
    """One WhatsApp Cloud API notification of a text "STOP" from ``sender`` (as in tests/test_hooks.py)."""
    digits = sender.lstrip("+")
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PN1"},
                                "contacts": [{"profile": {"name": f"C{n}"}, "wa_id": digits}],
                                "messages": [
                                    {
                                        "from": digits,
                                        "id": f"wamid.drain.{n}",
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
    ).encode()


def sign(body: bytes) -> str:
    import hashlib
    import hmac

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
            import threading

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


class Copies:
    """Fresh copies of the queued database, one per timed run."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.made: list[str] = []

    def make(self) -> str:
        name = f"run{len(self.made)}"
        url = self.prepared.url
        if url.startswith("sqlite"):
            source = sqlite3.connect(url.removeprefix("sqlite:///"))
            path = self.prepared.work / f"{name}.db"
            target = sqlite3.connect(path)
            source.backup(target)
            target.close()
            source.close()
            copy = f"sqlite:///{path}"
        else:
            import psycopg

            with psycopg.connect(admin_dsn(url), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE {make_url(url).database}")
            copy = make_url(url).set(database=name).render_as_string(hide_password=False)
        self.made.append(copy)
        return copy


def admin_dsn(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    return parsed.render_as_string(hide_password=False)


def remaining(url: str) -> tuple[int, int]:
    """(queued, queued or processing) deliveries in the database at ``url``."""
    sql = (
        "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FROM deliveries "
        "WHERE status IN ('queued', 'processing')"
    )
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return conn.execute(sql).fetchone()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    ) as conn:
        return conn.execute(sql).fetchone()


def drain(prepared: Prepared, url: str, workers: int, total: int) -> dict:
    """Run ``workers`` ``seqbridge worker`` processes on ``url`` until the queue is empty."""
    env = environment(url, prepared.work)
    logs = [(prepared.work / f"worker-{uuid.uuid4().hex[:6]}.log").open("w") for _ in range(workers)]
    spawned = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "worker"],
            env=env,
            cwd=prepared.work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    first, cpu_at_first = None, 0.0
    cpu: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 900
        while True:
            queued, open_ = remaining(url)
            now = time.perf_counter()
            if first is None and queued < total:
                first = now
                cpu_at_first = sum(process_cpu(p.pid) for p in procs)
            if open_ == 0:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"the worker did not drain the queue ({open_} left); see {prepared.work}")
            for proc in procs:
                cpu[proc.pid] = process_cpu(proc.pid)
            time.sleep(POLL)
        ended = time.perf_counter()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    seconds = ended - (first or spawned)
    return {
        "per_s": total / seconds,
        "seconds": seconds,
        "per_s_from_spawn": total / (ended - spawned),
        "worker_cpu_ms_per_delivery": (sum(cpu.values()) - cpu_at_first) / total * 1000,
    }


def verify(prepared: Prepared, url: str, label: str) -> None:
    """The effects are right and the audit chain verifies (``seqbridge audit verify``), or exit."""
    problems = drain_baseline.check(url, prepared.org_id, prepared.senders, prepared.contacts)
    answer = subprocess.run(
        [sys.executable, "-m", "seqbridge", "audit", "verify"],
        capture_output=True,
        text=True,
        env=environment(url, prepared.work),
        cwd=prepared.work,
    )
    if answer.returncode != 0:
        problems.append(f"seqbridge audit verify failed: {(answer.stdout + answer.stderr)[-500:]}")
    if problems:
        raise SystemExit(f"WRONG after {label}:\n  " + "\n  ".join(problems))
    print(f"  {label}: correct ({answer.stdout.strip()})", flush=True)


def run_engine(engine: str, args) -> dict:
    """Prepare, queue, and time the raw loop and the workers on copies; check each."""
    sizes = [args.deliveries] + ([args.contacts] if args.contacts else [])
    results: dict = {"engine": engine, "deliveries": args.deliveries}
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="seqbridge-bench-drain-"))
        try:
            with database(engine, durable=True) as url:
                started = time.perf_counter()
                prepared = prepare(url, work, size, args.deliveries)
                rate = queue(prepared)
                print(
                    f"{engine}, {size:,} contacts: prepared and queued {args.deliveries:,} STOPs in "
                    f"{time.perf_counter() - started:.0f} s (ingest {rate:,.0f}/s)",
                    flush=True,
                )
                copies = Copies(prepared)
                one = {}
                if size == args.deliveries:
                    one["raw_before"] = timed_raw(prepared, copies, engine, "raw loop (before)")
                one["worker_1"] = timed_worker(prepared, copies, 1, args.deliveries)
                if engine == "postgresql" and size == args.deliveries:
                    one[f"workers_{args.workers}"] = timed_worker(
                        prepared, copies, args.workers, args.deliveries
                    )
                if size == args.deliveries:
                    one["raw_after"] = timed_raw(prepared, copies, engine, "raw loop (after)")
                results[f"contacts_{size}"] = one
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def timed_raw(prepared: Prepared, copies: Copies, engine: str, label: str) -> dict:
    url = copies.make()
    per_s = drain_baseline.raw_loop(url, engine, prepared.org_id)
    print(f"  {label}: {per_s:,.0f} deliveries/s", flush=True)
    verify(prepared, url, label)
    return {"per_s": per_s}


def timed_worker(prepared: Prepared, copies: Copies, workers: int, total: int) -> dict:
    url = copies.make()
    result = drain(prepared, url, workers, total)
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    print(
        f"  {label}: {result['per_s']:,.0f} deliveries/s ({result['seconds']:.2f} s; "
        f"{result['per_s_from_spawn']:,.0f}/s from spawning; worker CPU "
        f"{result['worker_cpu_ms_per_delivery']:.2f} ms/delivery)",
        flush=True,
    )
    verify(prepared, url, label)
    return result


def report(results: dict, args) -> list[str]:
    """Print the ratios against the targets; return the targets missed."""
    missed = []
    engine, base = results["engine"], results[f"contacts_{args.deliveries}"]
    raw = (base["raw_before"]["per_s"] + base["raw_after"]["per_s"]) / 2
    one = base["worker_1"]["per_s"]
    checks = [
        (f"{engine}: 1 worker deliveries/s", one, 1000 if engine == "sqlite" else 600),
        (f"{engine}: 1 worker / raw loop", one / raw, 1.0 if engine == "sqlite" else None),
    ]
    if f"workers_{args.workers}" in base:
        checks.append(
            (f"{engine}: {args.workers} workers / 1", base[f"workers_{args.workers}"]["per_s"] / one, 1.6)
        )
    if args.contacts:
        big = results[f"contacts_{args.contacts}"]["worker_1"]["per_s"]
        checks.append((f"{engine}: {args.contacts:,} contacts / {args.deliveries:,}", big / one, 0.8))
    print(f"{engine}: raw loop {raw:,.0f} deliveries/s (mean of before and after)")
    for label, value, goal in checks:
        verdict = "" if goal is None else f" (target >= {goal:g}: {'met' if value >= goal else 'MISSED'})"
        print(f"{label:40} {value:,.2f}{verdict}")
        if goal is not None and value < goal:
            missed.append(label)
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--deliveries", type=int, default=3000, help="STOPs queued (one per sender)")
    parser.add_argument("--contacts", type=int, default=0, help="also an organization of this many contacts")
    parser.add_argument("--workers", type=int, default=2, help="the multi-worker run (PostgreSQL)")
    args = parser.parse_args()
    if args.contacts and args.contacts < args.deliveries:
        parser.error("--contacts must be at least --deliveries")
    print(
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True
    )
    missed = []
    for engine in ("sqlite", "postgresql") if args.engine == "both" else (args.engine,):
        results = run_engine(engine, args)
        missed += report(results, args)
        print(json.dumps(results), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if missed:
        print("targets missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
