"""The step processor draining 20,000 due steps (outbox channel) with one worker process and
with two, against a bare loop that claims and completes the same rows with raw SQL (the ceiling:
no contact checks, no rendering, no outbox, no next step, no audit).

    .venv/bin/python -m bench.processor [--steps 20000] [--engines sqlite,postgresql]

Both measure steady state: from the first completed step to the last. Target: the processor
reaches at least 25% of the bare loop's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, text

from bench.common import begin, database, no_mappings
from seqbridge import create_app
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.schema import contacts, outbox, step_tasks


def prepare(url: str, steps: int):
    app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": no_mappings(), "LOG_LEVEL": "WARNING"})
    services = app.extensions["seqbridge"]
    key = services.keys.create_key("bench", ["*"]).raw_key
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    org_id = client.get("/api/v1/me", headers=auth).json["data"]["organization_id"]
    now = services.clock.now()
    rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": org_id,
            "email": f"p{n}@example.com",
            "email_normalized": f"p{n}@example.com",
            "first_name": f"P{n}",
            "status": "active",
            "converted": False,
            "has_open_ticket": False,
            "attributes": {},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(steps)
    ]
    with services.db.transaction() as tx:
        bulk_insert(tx.conn, contacts, rows)
    sid = client.post("/api/v1/sequences", json={"name": "bench"}, headers=auth).json["data"]["id"]
    client.post(
        f"/api/v1/sequences/{sid}/steps",
        json={"subject": "Hi {{ first_name }}", "body": "Hello"},
        headers=auth,
    )
    client.patch(f"/api/v1/sequences/{sid}", json={"status": "active"}, headers=auth)
    for start in range(0, steps, 1000):
        ids = [r["id"] for r in rows[start : start + 1000]]
        response = client.post(
            f"/api/v1/sequences/{sid}/enroll_bulk", json={"customer_ids": ids}, headers=auth
        )
        assert response.json["data"]["enrolled"] == len(ids)
    return services


def reset(services) -> None:
    """Make every step due again, as if never run."""
    with services.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM outbox"))
        conn.execute(
            text(
                "UPDATE step_tasks SET status = 'pending', attempts = 0, lease_owner = NULL, "
                "lease_expires_at = NULL, finished_at = NULL"
            )
        )
        conn.execute(text("UPDATE enrollments SET status = 'active', completed_at = NULL"))


def count_done(services) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(step_tasks).where(step_tasks.c.status == "done")
        ).scalar_one()


def bare_loop(services, engine: str, steps: int) -> float:
    """Claim 50 at a time, complete each in its own transaction: steps per second."""
    p = "?" if engine == "sqlite" else "%s"
    lock = "" if engine == "sqlite" else " FOR UPDATE SKIP LOCKED"
    connection = services.db.engine.raw_connection()
    done = 0
    started = time.perf_counter()
    try:
        cursor = connection.cursor()
        while done < steps:
            begin(cursor, engine)
            cursor.execute(
                f"SELECT id FROM step_tasks WHERE status = 'pending' AND scheduled_for <= {p} "
                f"ORDER BY scheduled_for, id LIMIT 50{lock}",
                ("2100-01-01 00:00:00",),
            )
            ids = [r[0] for r in cursor.fetchall()]
            cursor.executemany(f"UPDATE step_tasks SET status = 'leased' WHERE id = {p}", [(i,) for i in ids])
            connection.commit()
            for task_id in ids:
                begin(cursor, engine)
                cursor.execute(f"UPDATE step_tasks SET status = 'done' WHERE id = {p}", (task_id,))
                connection.commit()
            done += len(ids)
    finally:
        connection.close()
    return steps / (time.perf_counter() - started)


def drain(services, url: str, steps: int, workers: int, logs: Path) -> float:
    """Start ``workers`` worker processes; steps per second from the first completion to the last."""
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.05",
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "seqbridge", "worker"],
            env=env,
            stdout=open(logs / f"worker{n}.log", "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        for n in range(workers)
    ]
    try:
        while (first := count_done(services)) == 0:
            time.sleep(0.01)
        started = time.perf_counter()
        while count_done(services) < steps:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    with services.db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == steps
    return (steps - first) / elapsed


def run(engine: str, steps: int) -> dict:
    with database(engine) as url:
        services = prepare(url, steps)
        logs = Path(tempfile.mkdtemp(prefix="seqbridge-bench-logs-"))
        results = {"engine": engine, "steps": steps}
        reset(services)
        results["bare_per_s"] = round(bare_loop(services, engine, steps))
        for workers in (1, 2):
            reset(services)
            results[f"workers_{workers}_per_s"] = round(drain(services, url, steps, workers, logs))
        reset(services)
        results["bare_again_per_s"] = round(bare_loop(services, engine, steps))
        services.db.dispose()
    ceiling = (results["bare_per_s"] + results["bare_again_per_s"]) / 2
    for workers in (1, 2):
        results[f"workers_{workers}_vs_bare"] = round(results[f"workers_{workers}_per_s"] / ceiling, 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    for engine in args.engines.split(","):
        result = run(engine, args.steps)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
