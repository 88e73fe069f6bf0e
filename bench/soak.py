"""Soak: a steady mix for a long time against gunicorn and a worker on PostgreSQL.

    .venv/bin/python -m bench.soak [--minutes 10] [--ceiling-seconds 20] [--share 0.5]
                                   [--reads 20] [--writes 5] [--out soak.json]

1. A fresh PostgreSQL cluster (durable: fsync and synchronous commit on), migrated; an
   organization with a key; two hooks (WhatsApp STOP → unsubscribe and unenroll everywhere,
   Typeform sign-up → upsert and enroll into "Welcome", whose one step emails at once); a real
   SMTP sink (aiosmtpd) the worker sends those emails to.
2. ``gunicorn`` (the shipped config: 2 workers x 16 threads) and one ``seqbridge worker``.
3. The ingest ceiling: ``wrk`` posts signed WhatsApp bodies as fast as it can for
   ``--ceiling-seconds`` (the method of ``bench.ingest``).
4. The soak: an open-loop generator on this machine, loopback only, sends signed webhooks at
   ``--share`` of that ceiling (STOPs and sign-ups, half each), ``--reads`` API reads/s (contacts,
   deliveries, enrollments) and ``--writes`` API writes/s (create and update contacts), for
   ``--minutes``. Latency is measured from each request's scheduled start (a slow server cannot
   hide its queueing by slowing the generator down).
5. Every 10 s: requests done, deliveries received and processed, emails sent, and the RSS of every
   gunicorn and worker process. At the end: throughput held, p50/p99/max per route, errors,
   memory growth (first sample after the warm-up vs the last), the database size per 100,000
   deliveries, and what ``seqbridge deliveries prune --older-than`` leaves.

The machine is shared by the server, the database and the generator: the figures are for this
whole loop on one host.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import itertools
import json
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import requests
from aiosmtpd.controller import Controller

from bench.common import database
from bench.ingest import signed_body, write_bodies
from bench.load import WRK_SCRIPT, ensure_wrk, free_port, wrk
from seqbridge import create_app

APP_SECRET = "bench-secret"  # bench.ingest signs with it
TYPEFORM_SECRET = "soak-typeform-secret"
MAPPING = f"""\
hooks:
  whatsapp:
    organization: soak
    source: {{connector: whatsapp_cloud, app_secret: {APP_SECRET}, verify_token: t}}
    rules:
      - name: stop
        when: {{field: event.text, keyword: [STOP]}}
        actions:
          - upsert_contact: {{phone: "{{{{ event.from }}}}", set: {{status: unsubscribed}}}}
          - unenroll: {{sequence: "*", contact: {{phone: "{{{{ event.from }}}}"}}, reason: unsubscribed}}
  typeform:
    organization: soak
    source: {{connector: typeform, secret: {TYPEFORM_SECRET}}}
    rules:
      - name: welcome
        when: {{field: event.answers.email, exists: true}}
        actions:
          - upsert_contact: {{email: "{{{{ event.answers.email }}}}"}}
          - enroll: {{sequence: Welcome, contact: {{email: "{{{{ event.answers.email }}}}"}}}}
"""
TYPEFORM = json.loads(
    (Path(__file__).parents[1] / "tests/fixtures/webhooks/typeform_response.json").read_text()
)


class Sink:
    """The SMTP server the worker sends to; counts messages."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


class Generator:
    """Open loop: a scheduler puts (due time, kind) on a queue at fixed rates; sender threads
    run them; each result is (kind, status or error, seconds from the due time)."""

    def __init__(
        self, base: str, key: str, rates: dict[str, float], seconds: float, threads: int = 48
    ) -> None:
        self.base, self.key, self.rates, self.seconds = base, key, rates, seconds
        self.jobs: queue.Queue = queue.Queue()
        self.results: list[tuple[str, object, float, float]] = []
        self.lock = threading.Lock()
        self.serial = itertools.count()
        self.contact_ids: list[str] = []
        self.local = threading.local()
        self.threads = threads
        self.rng = random.Random(11)

    def session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
            self.local.session.headers["Authorization"] = f"Bearer {self.key}"
        return self.local.session

    def request(self, kind: str) -> requests.Response:
        n = next(self.serial)
        s = self.session()
        if kind == "POST /hooks/whatsapp":
            body = json.dumps(
                {
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
                                        "messages": [
                                            {
                                                "from": f"1777{n:07d}",
                                                "id": f"wamid.S{n}",
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
            signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            return s.post(
                f"{self.base}/hooks/whatsapp",
                data=body,
                timeout=30,
                headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
            )
        if kind == "POST /hooks/typeform":
            event = copy.deepcopy(TYPEFORM)
            event["event_id"], event["form_response"]["token"] = f"evt-{n}", f"tok-{n}"
            event["form_response"]["answers"][0]["email"] = f"soak-{n}@example.com"
            body = json.dumps(event).encode()
            digest = base64.b64encode(
                hmac.new(TYPEFORM_SECRET.encode(), body, hashlib.sha256).digest()
            ).decode()
            return s.post(
                f"{self.base}/hooks/typeform",
                data=body,
                timeout=30,
                headers={"Typeform-Signature": f"sha256={digest}", "Content-Type": "application/json"},
            )
        if kind == "GET /api/v1/contacts":
            return s.get(
                f"{self.base}/api/v1/contacts?limit=20&offset={self.rng.randrange(0, 200)}", timeout=30
            )
        if kind == "GET /api/v1/deliveries":
            return s.get(f"{self.base}/api/v1/deliveries?limit=20", timeout=30)
        if kind == "GET /api/v1/audit-events":
            return s.get(f"{self.base}/api/v1/audit-events?limit=20&subject_type=contact", timeout=30)
        if kind == "POST /api/v1/contacts":
            answer = s.post(
                f"{self.base}/api/v1/contacts", json={"email": f"api-{n}@example.com"}, timeout=30
            )
            if answer.status_code == 201:
                with self.lock:
                    self.contact_ids.append(answer.json()["data"]["id"])
            return answer
        if kind == "PATCH /api/v1/contacts/{id}":
            with self.lock:
                target = self.rng.choice(self.contact_ids) if self.contact_ids else None
            if target is None:
                return s.get(f"{self.base}/healthz", timeout=30)
            return s.patch(f"{self.base}/api/v1/contacts/{target}", json={"first_name": f"N{n}"}, timeout=30)
        raise ValueError(kind)

    def sender(self) -> None:
        while (job := self.jobs.get()) is not None:
            due, kind = job
            try:
                status: object = self.request(kind).status_code
            except requests.RequestException as error:
                status = type(error).__name__
            done = time.monotonic()
            with self.lock:
                self.results.append((kind, status, done - due, done))

    def run(self) -> None:
        workers = [threading.Thread(target=self.sender, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        start = time.monotonic()
        nexts = {kind: start for kind in self.rates}
        while True:
            kind, due = min(nexts.items(), key=lambda item: item[1])
            if due - start >= self.seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.jobs.put((due, kind))
            nexts[kind] = due + 1 / self.rates[kind]
        for _ in workers:
            self.jobs.put(None)
        for worker in workers:
            worker.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--ceiling-seconds", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.5, help="of the ingest ceiling, for webhooks")
    parser.add_argument(
        "--webhooks", type=float, default=None, help="webhooks per second instead of a share of the ceiling"
    )
    parser.add_argument(
        "--catch-up-minutes",
        type=float,
        default=15,
        help="how long to wait for the worker after the load stops",
    )
    parser.add_argument("--reads", type=float, default=20, help="API reads per second")
    parser.add_argument("--writes", type=float, default=5, help="API writes per second")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    wrk_path = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="seqbridge-soak-"))
    smtp_port = free_port()
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with database("postgresql", durable=True) as url:
            mappings = work / "mappings"
            mappings.mkdir()
            (mappings / "soak.yaml").write_text(MAPPING)
            app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": str(mappings), "LOG_LEVEL": "WARNING"})
            services = app.extensions["seqbridge"]
            key = services.keys.create_key("soak", ["*"]).raw_key
            client = app.test_client()
            auth = {"Authorization": f"Bearer {key}"}
            welcome = client.post("/api/v1/sequences", json={"name": "Welcome"}, headers=auth).json["data"]
            client.post(
                f"/api/v1/sequences/{welcome['id']}/steps",
                headers=auth,
                json={"subject": "Welcome {{ email }}", "body": "Hello", "delay_days": 0},
            )
            client.patch(f"/api/v1/sequences/{welcome['id']}", json={"status": "active"}, headers=auth)
            services.db.dispose()
            port = free_port()
            env = {
                **os.environ,
                "SEQBRIDGE_DATABASE_URL": url,
                "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
                "SEQBRIDGE_BIND": f"127.0.0.1:{port}",
                "SEQBRIDGE_LOG_LEVEL": "WARNING",
                "SEQBRIDGE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}?starttls=never",
                "SEQBRIDGE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"soak-master-secret").decode(),
            }
            logs = (work / "web.log").open("w"), (work / "worker.log").open("w")
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "python:seqbridge.gunicorn_conf",
                    "seqbridge:create_app()",
                ],
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
            worker = subprocess.Popen(
                [sys.executable, "-m", "seqbridge", "worker"],
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if requests.get(f"{base}/readyz", timeout=5).ok:
                            break
                    except requests.RequestException:
                        pass
                    if time.monotonic() > deadline:
                        sys.exit(f"gunicorn did not come up; see {work / 'web.log'}")
                    time.sleep(0.2)
                results = soak(args, base, key, url, web, worker, sink, wrk_path, work)
            finally:
                web.terminate()
                worker.terminate()
                web.wait(timeout=60)
                worker.wait(timeout=60)
            results["prune"] = prune(url, env)
            report(results)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))
    finally:
        smtp.stop()
        shutil.rmtree(work, ignore_errors=True)


def counts(url: str) -> dict[str, int]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall())
        sent = conn.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {
        "deliveries": sum(rows.values()),
        "processed": rows.get("processed", 0),
        "emails_sent": sent,
        "db_bytes": size,
        **{f"status_{k}": v for k, v in rows.items()},
    }


def soak(args, base, key, url, web, worker, sink, wrk_path, work) -> dict:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = write_bodies(work / "ceiling.txt", "ceiling", args.ceiling_seconds * 3000)
    signature, body = signed_body("wamid.check")
    requests.post(
        f"{base}/hooks/whatsapp",
        data=body,
        timeout=30,
        headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
    )
    ceiling = wrk(wrk_path, script, f"{base}/hooks/whatsapp", bodies, args.ceiling_seconds, 32)
    ceiling_rps = ceiling["statuses"].get("202", 0) / (ceiling["duration_us"] / 1e6)
    print(
        f"ingest ceiling (wrk, 32 connections, {args.ceiling_seconds} s): {ceiling_rps:,.0f} webhooks/s "
        f"accepted; p99 {ceiling['p99_us'] / 1000:.1f} ms",
        flush=True,
    )
    # Let the worker drain the ceiling burst before the soak starts (those bodies match no rule).
    drain_deadline = time.monotonic() + 600
    while (c := counts(url))["processed"] + c.get("status_ignored", 0) < c["deliveries"] - 1:
        if time.monotonic() > drain_deadline:
            break
        time.sleep(2)
    hooks_rate = args.webhooks if args.webhooks is not None else ceiling_rps * args.share
    rates = {
        "POST /hooks/whatsapp": hooks_rate / 2,
        "POST /hooks/typeform": hooks_rate / 2,
        "GET /api/v1/contacts": args.reads / 3,
        "GET /api/v1/deliveries": args.reads / 3,
        "GET /api/v1/audit-events": args.reads / 3,
        "POST /api/v1/contacts": args.writes / 2,
        "PATCH /api/v1/contacts/{id}": args.writes / 2,
    }
    generator = Generator(base, key, rates, args.minutes * 60)
    before = counts(url)
    samples = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(10):
            web_workers = children(web.pid)  # gunicorn recycles them (max_requests): by role, not pid
            with generator.lock:
                done = len(generator.results)
            rss = {
                "gunicorn master": rss_kb(web.pid),
                "gunicorn workers": sum(rss_kb(p) for p in web_workers),
                "seqbridge worker": rss_kb(worker.pid),
            }
            samples.append(
                {
                    "t": round(time.monotonic() - started),
                    "requests": done,
                    **counts(url),
                    "rss_kb": rss,
                    "emails_smtp": sink.count,
                }
            )
            last = samples[-1]
            print(
                f"t={last['t']:4}s requests {done:7,}  deliveries {last['deliveries'] - before['deliveries']:7,} "
                f"processed {last['processed'] - before['processed']:7,}  emails {last['emails_sent']:6,}  "
                f"rss MB {sum(last['rss_kb'].values()) / 1024:6.0f}",
                flush=True,
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    print(
        f"soak: {args.minutes} min; webhooks {hooks_rate:,.0f}/s ({args.share:.0%} of the ceiling), "
        f"reads {args.reads}/s, writes {args.writes}/s",
        flush=True,
    )
    started = time.monotonic()
    generator.run()
    elapsed = time.monotonic() - started
    # Let the worker catch up (time to drain is part of the result).
    catch_up_started = time.monotonic()
    end_sent = counts(url)
    processed_during_load = end_sent["processed"] - before["processed"]
    while (c := counts(url))["processed"] < end_sent["deliveries"] - before["deliveries"] + before[
        "processed"
    ]:
        if time.monotonic() - catch_up_started > args.catch_up_minutes * 60:
            break
        time.sleep(2)
    catch_up = time.monotonic() - catch_up_started
    stop.set()
    sampler.join(timeout=30)
    after = counts(url)
    by_route: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    expected = {"POST /hooks/whatsapp": {202}, "POST /hooks/typeform": {202}, "POST /api/v1/contacts": {201}}
    for kind, status, latency, _ in generator.results:
        by_route[kind].append(latency)
        if status not in expected.get(kind, {200}):
            errors[kind][str(status)] += 1
    routes = {}
    for kind, latencies in sorted(by_route.items()):
        latencies.sort()
        routes[kind] = {
            "requests": len(latencies),
            "rate_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1),
        }
    warm = next((s for s in samples if s["t"] >= 60), samples[0] if samples else None)
    last = samples[-1] if samples else None
    memory = {}
    if warm and last:
        for role in warm["rss_kb"]:
            memory[role] = {
                "after_warmup_mb": round(warm["rss_kb"][role] / 1024, 1),
                "end_mb": round(last["rss_kb"].get(role, 0) / 1024, 1),
                "max_mb": round(max(s["rss_kb"][role] for s in samples) / 1024, 1),
            }
    received = after["deliveries"] - before["deliveries"]
    return {
        "ceiling_webhooks_per_s": round(ceiling_rps),
        "ceiling_p99_ms": ceiling["p99_us"] / 1000,
        "minutes": args.minutes,
        "offered_webhooks_per_s": round(hooks_rate, 1),
        "held_webhooks_per_s": round(received / elapsed, 1),
        "deliveries_received": received,
        "deliveries_processed": after["processed"] - before["processed"],
        "worker_catch_up_s": round(catch_up, 1),
        "processed_during_load": processed_during_load,
        "backlog_at_end": after["deliveries"] - after["processed"] - after.get("status_failed", 0),
        "emails_sent": after["emails_sent"] - before["emails_sent"],
        "routes": routes,
        "errors": {k: dict(v) for k, v in errors.items()},
        "memory": memory,
        "db_bytes": after["db_bytes"],
        "db_bytes_per_100k_deliveries": round(after["db_bytes"] / max(1, after["deliveries"]) * 100_000),
        "samples": samples,
    }


def prune(url: str, env: dict[str, str]) -> dict:
    """What the retention command leaves: prune what is over a minute old (deliveries that own
    dedupe keys stay for the 7-day dedupe window), then VACUUM FULL to measure."""
    answer = subprocess.run(
        [sys.executable, "-m", "seqbridge", "deliveries", "prune", "--older-than", "1m"],
        env={**env, "SEQBRIDGE_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM FULL")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        left = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    return {
        "command_rc": answer.returncode,
        "output": (answer.stdout + answer.stderr)[-500:],
        "deliveries_left": left,
        "db_bytes_after_vacuum_full": size,
    }


def report(results: dict) -> None:
    print(
        f"\nceiling {results['ceiling_webhooks_per_s']:,} webhooks/s; offered {results['offered_webhooks_per_s']:,}/s;"
        f" held {results['held_webhooks_per_s']:,}/s over {results['minutes']} min"
    )
    print(
        f"deliveries: {results['deliveries_received']:,} received, {results['processed_during_load']:,} processed "
        f"during the load, {results['deliveries_processed']:,} by the end; backlog {results['backlog_at_end']:,} "
        f"{results['worker_catch_up_s']} s after the load stopped; "
        f"emails sent {results['emails_sent']:,}"
    )
    print(f"{'route':32} {'requests':>9} {'/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for route, r in results["routes"].items():
        print(
            f"{route:32} {r['requests']:9,} {r['rate_per_s']:7} {r['p50_ms']:8} {r['p99_ms']:8} {r['max_ms']:8}"
        )
    print(f"errors: {results['errors'] or 'none'}")
    for role, m in results["memory"].items():
        print(
            f"rss {role}: {m['after_warmup_mb']} MB after 1 min -> {m['end_mb']} MB at the end (max {m['max_mb']})"
        )
    print(
        f"database {results['db_bytes'] / 1e6:,.0f} MB; {results['db_bytes_per_100k_deliveries'] / 1e6:,.0f} MB "
        f"per 100,000 deliveries (everything they caused included)"
    )
    print(f"prune: {results['prune']}")


if __name__ == "__main__":
    main()
