"""STOP → unenrolled under ``seqbridge serve`` (gunicorn and the embedded worker, SQLite).

    .venv/bin/python -m bench.stop_latency [--seconds 60] [--rate N] [--ceiling-seconds 10]
                                           [--stops 30] [--every 2] [--out stop_latency.json]

Each scenario runs a real ``seqbridge serve`` on a fresh, migrated SQLite database with the
shipped ``mappings/whatsapp_stop.yaml`` (STOP and START are ``priority: high``; anything else
matches "other messages", which does nothing) and contacts each enrolled in a sequence. A STOP
is a signed WhatsApp Cloud webhook from one of them; a probe thread reads that enrollment from
the database every 20 ms and the latency is from just before the POST to the first read that
finds it exited.

1. **idle**: ``--stops`` STOPs one at a time, nothing else arriving: p50 / p99.
2. **ceiling**: ``wrk`` posts signed ordinary messages as fast as it can for
   ``--ceiling-seconds`` (the embedded worker draining beside it, as deployed): accepted/s.
3. **loaded, priority on** and 4. **loaded, priority off** (``SEQBRIDGE_DELIVERY_PRIORITY=false``),
   each on a fresh database: ordinary signed messages open-loop (wrk paced by its Lua script) at
   ``--rate`` (default: half the ceiling) for ``--seconds``, a STOP every ``--every`` seconds
   meanwhile: p50 / p99 of STOP → unenrolled, where that time went (the webhook's answer, queued
   until settled, settled until the probe saw it), the backlog when the load stopped and how long
   until it was empty.

The machine's load average is printed with the figures: on a shared machine they are a floor.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import requests

from bench.common import database, whatsapp_body
from bench.ingest import write_bodies
from bench.load import WRK_SCRIPT, ensure_wrk, free_port, parse_result, wrk_command
from seqbridge import create_app

ROOT = Path(__file__).resolve().parents[1]
APP_SECRET = "bench-secret"  # bench.ingest's bodies are signed with it
ORG = "bench"
PROBE_SECONDS = 0.02
#: How long one STOP may take before it counts as lost (and the run says so).
STOP_TIMEOUT = 120.0
CONTACTS = 200


@dataclass
class Stop:
    """One STOP's timeline (wall clock seconds) and where its time went."""

    sent: float
    answered: float = 0.0
    seen: float | None = None
    received_at: float | None = None
    processed_at: float | None = None

    @property
    def latency(self) -> float | None:
        return None if self.seen is None else self.seen - self.sent


@dataclass
class Scenario:
    name: str
    stops: list[Stop] = field(default_factory=list)
    load: dict | None = None
    backlog_at_stop: int | None = None
    backlog_empty_after: float | None = None
    loadavg: tuple[float, float, float] | None = None


def stop_body(phone: str, message_id: str) -> tuple[bytes, str]:
    body = whatsapp_body(sender=phone, message_id=message_id, text="STOP")
    return body, "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


class Server:
    """``seqbridge serve`` on a fresh database with contacts enrolled; stopped (with its gunicorn
    and worker) on exit."""

    def __init__(self, work: Path, name: str, priority: bool) -> None:
        self.work, self.name, self.priority = work, name, priority

    def __enter__(self) -> Server:
        self._db = database("sqlite")
        self.url = self._db.__enter__()
        self.path = Path(self.url.removeprefix("sqlite:///"))
        mappings = self.work / f"mappings-{self.name}"
        mappings.mkdir()
        shutil.copy(ROOT / "mappings" / "whatsapp_stop.yaml", mappings / "whatsapp_stop.yaml")
        env = {
            **os.environ,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "t",
            "TWILIO_AUTH_TOKEN": "bench-twilio",
            "SEQBRIDGE_DEMO_ORG": ORG,
        }
        os.environ.update(
            {
                k: env[k]
                for k in (
                    "WHATSAPP_APP_SECRET",
                    "WHATSAPP_VERIFY_TOKEN",
                    "TWILIO_AUTH_TOKEN",
                    "SEQBRIDGE_DEMO_ORG",
                )
            }
        )
        self.enrollments = self._prepare(mappings)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env.update(
            {
                "SEQBRIDGE_DATABASE_URL": self.url,
                "SEQBRIDGE_MAPPINGS_DIR": str(mappings),
                "SEQBRIDGE_LOG_LEVEL": "WARNING",
                "SEQBRIDGE_DELIVERY_PRIORITY": "true" if self.priority else "false",
            }
        )
        self.log = (self.work / f"serve-{self.name}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "serve", "--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.base}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                sys.exit(f"seqbridge serve did not come up; see {self.log.name}")
            time.sleep(0.2)
        time.sleep(1.0)  # the worker's first round (it starts beside gunicorn)
        return self

    def _prepare(self, mappings: Path) -> list[tuple[str, str]]:
        """Contacts +1777000nnnn, each enrolled in "Welcome"; (phone, enrollment id) of each."""
        app = create_app({"DATABASE_URL": self.url, "MAPPINGS_DIR": str(mappings), "LOG_LEVEL": "WARNING"})
        services = app.extensions["seqbridge"]
        key = services.keys.create_key(ORG, ["*"]).raw_key
        client = app.test_client()
        auth = {"Authorization": f"Bearer {key}"}
        welcome = client.post("/api/v1/sequences", json={"name": "Welcome"}, headers=auth).json["data"]
        client.post(
            f"/api/v1/sequences/{welcome['id']}/steps",
            headers=auth,
            json={"subject": "Hi", "body": "Hello", "delay_days": 3},
        )
        client.patch(f"/api/v1/sequences/{welcome['id']}", json={"status": "active"}, headers=auth)
        out = []
        for n in range(CONTACTS):
            phone = f"+1777000{n:04d}"
            contact = client.post("/api/v1/contacts", json={"phone": phone}, headers=auth).json["data"]
            enrolled = client.post(
                f"/api/v1/sequences/{welcome['id']}/enroll", headers=auth, json={"customer_id": contact["id"]}
            )
            out.append((phone.removeprefix("+"), enrolled.json["data"]["id"]))
        services.db.dispose()
        return out

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        self._db.__exit__(*exc)

    def read(self, sql: str, *params) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def backlog(self) -> int:
        return self.read("SELECT count(*) FROM deliveries WHERE status IN ('queued', 'processing')")[0][0]


def send_stop(server: Server, index: int, tag: str) -> Stop:
    """Post one STOP and probe its enrollment every 20 ms until it has exited."""
    phone, enrollment = server.enrollments[index]
    body, signature = stop_body(phone, f"wamid.stop.{tag}.{index}")
    probe = sqlite3.connect(f"file:{server.path}?mode=ro", uri=True, timeout=30)
    stop = Stop(sent=time.time())
    answer = requests.post(
        f"{server.base}/hooks/whatsapp",
        data=body,
        timeout=30,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
    )
    stop.answered = time.time()
    if answer.status_code != 202:
        raise RuntimeError(f"a STOP was answered {answer.status_code}: {answer.text}")
    delivery_id = answer.json()["data"]["delivery_id"]
    try:
        while time.time() - stop.sent < STOP_TIMEOUT:
            row = probe.execute("SELECT status FROM enrollments WHERE id = ?", (enrollment,)).fetchone()
            if row and row[0] == "exited":
                stop.seen = time.time()
                break
            time.sleep(PROBE_SECONDS)
        row = probe.execute(
            "SELECT received_at, processed_at FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
    finally:
        probe.close()
    if row:
        stop.received_at, stop.processed_at = (_epoch(v) for v in row)
    return stop


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value + "+00:00").timestamp()


def idle(server: Server, count: int) -> Scenario:
    scenario = Scenario("idle")
    for index in range(count):
        scenario.stops.append(send_stop(server, index, "idle"))
        time.sleep(0.1)
    scenario.loadavg = os.getloadavg()
    return scenario


def ceiling(server: Server, wrk_path: str, work: Path, seconds: int) -> float:
    """Accepted ordinary webhooks per second, closed loop (the worker draining beside)."""
    script = work / "ceiling.lua"
    script.write_text(WRK_SCRIPT)
    bodies = write_bodies(work / "ceiling.txt", "ceiling", max(20_000, 4000 * seconds), APP_SECRET)
    command = wrk_command(wrk_path, script, f"{server.base}/hooks/whatsapp", bodies, seconds, 64)
    result = parse_result(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return result["statuses"].get("202", 0) / (result["duration_us"] / 1e6)


def wait_empty(server: Server, limit: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if server.backlog() == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def loaded(
    server: Server, wrk_path: str, work: Path, rate: int, seconds: int, every: float, name: str
) -> Scenario:
    scenario = Scenario(name)
    script = work / f"{name}.lua"
    script.write_text(WRK_SCRIPT)
    bodies = write_bodies(work / f"{name}.txt", name, int(rate * seconds * 1.3) + 1000, APP_SECRET)
    command = wrk_command(wrk_path, script, f"{server.base}/hooks/whatsapp", bodies, seconds, 64, rate=rate)
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    threads: list[threading.Thread] = []
    results: dict[int, Stop] = {}

    def one(index: int) -> None:
        results[index] = send_stop(server, index, name)

    started = time.monotonic()
    index = 0
    time.sleep(min(every, 2.0))  # let the load build first
    while time.monotonic() - started < seconds - 0.5:
        thread = threading.Thread(target=one, args=(index,), daemon=True)
        thread.start()
        threads.append(thread)
        index += 1
        time.sleep(every)
    out, _ = load.communicate()
    scenario.backlog_at_stop = server.backlog()
    scenario.backlog_empty_after = wait_empty(server, STOP_TIMEOUT)
    scenario.loadavg = os.getloadavg()
    for thread in threads:
        thread.join(STOP_TIMEOUT + 30)
    scenario.stops = [results[i] for i in sorted(results)]
    result = parse_result(out)
    result["rate_sent"] = result["requests"] / (result["duration_us"] / 1e6)
    scenario.load = result
    return scenario


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summarise(scenario: Scenario) -> dict:
    done = [s for s in scenario.stops if s.latency is not None]
    latencies = [s.latency for s in done]
    answer = [s.answered - s.sent for s in scenario.stops]
    settle = [s.processed_at - s.received_at for s in done if s.processed_at and s.received_at]
    seen = [s.seen - s.processed_at for s in done if s.processed_at]
    med = statistics.median
    return {
        "scenario": scenario.name,
        "stops": len(scenario.stops),
        "lost": len(scenario.stops) - len(done),
        "p50_ms": round(1000 * med(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None,
        "max_ms": round(1000 * max(latencies), 1) if latencies else None,
        "answer_p50_ms": round(1000 * med(answer), 1) if answer else None,
        "queued_to_settled_p50_ms": round(1000 * med(settle), 1) if settle else None,
        "queued_to_settled_p99_ms": round(1000 * percentile(settle, 99), 1) if settle else None,
        "settled_to_seen_p50_ms": round(1000 * med(seen), 1) if seen else None,
        "load_rate_sent": round(scenario.load["rate_sent"]) if scenario.load else None,
        "load_202": scenario.load["statuses"].get("202") if scenario.load else None,
        "load_non_2xx": scenario.load["non_2xx_3xx"] if scenario.load else None,
        "backlog_at_stop": scenario.backlog_at_stop,
        "backlog_empty_after_s": None
        if scenario.backlog_empty_after is None
        else round(scenario.backlog_empty_after, 2),
        "loadavg": scenario.loadavg,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=60, help="of ordinary load per loaded scenario")
    parser.add_argument(
        "--rate", type=int, default=None, help="ordinary webhooks/s (default: half the ceiling)"
    )
    parser.add_argument("--ceiling-seconds", type=int, default=10)
    parser.add_argument("--stops", type=int, default=30, help="idle STOPs, one at a time")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between STOPs under load")
    parser.add_argument(
        "--skip-off", action="store_true", help="do not run the loaded scenario with priority off"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    wrk_path = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="seqbridge-stop-latency-"))
    results: dict = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        with Server(work, "idle", priority=True) as server:
            scenarios = [idle(server, args.stops)]
            if args.rate is None:
                results["ceiling_per_s"] = round(ceiling(server, wrk_path, work, args.ceiling_seconds))
                results["ceiling_drained_after_s"] = wait_empty(server, 300)
        rate = args.rate or results["ceiling_per_s"] // 2
        results["rate"] = rate
        for priority in (True, False) if not args.skip_off else (True,):
            name = f"loaded-priority-{'on' if priority else 'off'}"
            with Server(work, name, priority=priority) as server:
                scenarios.append(loaded(server, wrk_path, work, rate, args.seconds, args.every, name))
        results["scenarios"] = [summarise(s) for s in scenarios]
        results["raw"] = {s.name: [asdict(stop) for stop in s.stops] for s in scenarios}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def report(results: dict) -> None:
    print(f"machine: {results['cpus']} CPUs, load average at start {results['loadavg_start']}")
    if "ceiling_per_s" in results:
        print(
            f"ingest ceiling (closed loop, embedded worker beside): {results['ceiling_per_s']}/s;"
            f" its backlog drained {results['ceiling_drained_after_s']} s after"
        )
    print(f"ordinary load: {results['rate']}/s open loop")
    columns = (
        "scenario",
        "stops",
        "lost",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "answer_p50_ms",
        "queued_to_settled_p50_ms",
        "queued_to_settled_p99_ms",
        "settled_to_seen_p50_ms",
        "load_rate_sent",
        "load_non_2xx",
        "backlog_at_stop",
        "backlog_empty_after_s",
        "loadavg",
    )
    for row in results["scenarios"]:
        print("  " + ", ".join(f"{c}={row[c]}" for c in columns))


if __name__ == "__main__":
    main()
