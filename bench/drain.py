"""The worker draining a backlog of WhatsApp STOPs (issue 16), against a raw-SQL loop that does
the same effects one transaction per delivery, on a copy of the same queued database.

    .venv/bin/python -m bench.drain [--engine sqlite|postgresql|both] [--deliveries 3000]
                                    [--contacts 30000] [--workers 2]

1. **Prepare** a fresh database (SQLite, or a durable PostgreSQL: fsync and synchronous_commit
   on): an organization whose contacts all have phones, two active sequences of two steps
   (first step three days out, so every enrollment has a pending task), and every contact
   enrolled in both (in the big organization the bystanders too, so its live enrollments and
   pending tasks grow with it). The hooks are the shipped ``mappings/whatsapp_stop.yaml``
   (Meta's Cloud API and Twilio), with their secrets from the environment.
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
   every sender unsubscribed and nobody else, every sender's enrollment exited and its task
   cancelled (the bystanders' untouched),
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
from pathlib import Path

from sqlalchemy import make_url

from bench import drain_baseline
from bench.common import database
from bench.drain_setup import Prepared, environment, prepare, queue
from bench.ingest import pg_sample
from bench.load import _machine_times, process_cpu

POLL = 0.02  # seconds between looks at the queue while timing


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
    first, cpu_at_first, machine_at_first, pg_at_first = None, 0.0, (0, 0), 0.0
    cpu: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 900
        while True:
            queued, open_ = remaining(url)
            now = time.perf_counter()
            if first is None and queued < total:
                first = now
                cpu_at_first = sum(process_cpu(p.pid) for p in procs)
                machine_at_first, pg_at_first = _machine_times(), database_cpu(url)
            if open_ == 0:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"the worker did not drain the queue ({open_} left); see {prepared.work}")
            for proc in procs:
                cpu[proc.pid] = process_cpu(proc.pid)
            time.sleep(POLL)
        ended = time.perf_counter()
        (idle0, total0), (idle1, total1) = machine_at_first, _machine_times()
        pg_cpu = database_cpu(url) - pg_at_first
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
        "database_cpu_ms_per_delivery": pg_cpu / total * 1000,
        "machine_idle": (idle1 - idle0) / max(1, total1 - total0),
    }


def database_cpu(url: str) -> float:
    """CPU seconds PostgreSQL's processes have used so far (0 for SQLite: it runs in the worker)."""
    return 0.0 if url.startswith("sqlite") else pg_sample(url).cpu_s


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
        f"{result['worker_cpu_ms_per_delivery']:.2f} ms/delivery, PostgreSQL CPU "
        f"{result['database_cpu_ms_per_delivery']:.2f} ms/delivery; machine idle {result['machine_idle']:.0%})",
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
