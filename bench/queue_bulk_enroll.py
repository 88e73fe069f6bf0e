"""Event-queue bulk-enroll of 500 contacts by customer_filter, in a database of 100,000 contacts
and 10,000 companies, against the bare SQL that selects the same 500 contacts and inserts their
enrollment and task rows.

    .venv/bin/python -m bench.queue_bulk_enroll [--rounds 7] [--engines sqlite,postgresql]

Target: within 5x of the bare SQL.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid

from bench.common import alternate, database, no_mappings, paired_ratio, raw_transaction, summary
from seqbridge import create_app
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.schema import companies, contacts

CONTACTS, COMPANIES = 100_000, 10_000
INDUSTRIES = [f"industry-{n}" for n in range(20)]
FILTER = {"industry": "industry-3", "is_customer": True}


def populate(services, org_id: str) -> None:
    rng = random.Random(7)
    now = services.clock.now()
    company_rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": org_id,
            "name": f"Company {n}",
            "account_type": rng.choice(["a", "b", "c"]),
            "industry": rng.choice(INDUSTRIES),
            "is_customer": rng.random() < 0.5,
            "is_supplier": rng.random() < 0.2,
            "city": rng.choice(["Berlin", "Paris", "Oslo"]),
            "state": None,
            "country": "EU",
            "created_at": now,
            "updated_at": now,
        }
        for n in range(COMPANIES)
    ]
    with services.db.transaction() as tx:
        bulk_insert(tx.conn, companies, company_rows)
    for start in range(0, CONTACTS, 10_000):
        rows = [
            {
                "id": str(uuid.uuid4()),
                "org_id": org_id,
                "email": f"c{n}@example.com",
                "email_normalized": f"c{n}@example.com",
                "phone": None,
                "first_name": f"F{n}",
                "last_name": None,
                "contact_type": rng.choice(["lead", "customer"]),
                "source": "import",
                "job_title": None,
                "city": rng.choice(["Berlin", "Paris", "Oslo"]),
                "state": None,
                "country": "EU",
                "status": "active" if rng.random() < 0.97 else "unsubscribed",
                "converted": False,
                "has_open_ticket": False,
                "timezone": None,
                "company_id": rng.choice(company_rows)["id"],
                "attributes": {},
                "created_at": now,
                "updated_at": now,
            }
            for n in range(start, start + 10_000)
        ]
        with services.db.transaction() as tx:
            bulk_insert(tx.conn, contacts, rows)
    with services.db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def run(engine: str, rounds: int) -> dict:
    with database(engine) as url:
        app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": no_mappings(), "LOG_LEVEL": "WARNING"})
        services = app.extensions["seqbridge"]
        key = services.keys.create_key("bench", ["*"]).raw_key
        client = app.test_client()
        auth = {"Authorization": f"Bearer {key}"}
        org_id = client.get("/api/v1/me", headers=auth).json["data"]["organization_id"]
        started = time.perf_counter()
        populate(services, org_id)
        print(f"  {engine}: populated in {time.perf_counter() - started:.1f} s")

        def new_queue() -> str:
            qid = client.post("/api/v1/event-queues", json={"name": "bench"}, headers=auth).json["data"]["id"]
            client.post(
                f"/api/v1/event-queues/{qid}/steps",
                headers=auth,
                json={
                    "action_type": "send_email",
                    "delay_days": 1,
                    "action_config": {"subject": "s", "body": "b"},
                },
            )
            return qid

        p = "?" if engine == "sqlite" else "%s"
        true = 1 if engine == "sqlite" else True
        select_sql = (
            f"SELECT c.id FROM contacts c WHERE c.org_id = {p} AND c.status = 'active' AND c.company_id IN "
            f"(SELECT id FROM companies WHERE org_id = {p} AND industry = {p} AND is_customer = {p}) "
            f"ORDER BY c.id LIMIT 500"
        )
        enrollment_sql = (
            "INSERT INTO enrollments (id, org_id, sequence_id, contact_id, status, enrollment_source, "
            f"enrollment_data, enrolled_at, enrollment_time, updated_at) VALUES ({', '.join([p] * 10)})"
        )
        task_sql = (
            "INSERT INTO step_tasks (org_id, sequence_id, enrollment_id, contact_id, position, status, "
            f"scheduled_for, attempts, created_at, updated_at) VALUES ({', '.join([p] * 10)})"
        )
        naive = services.clock.now().replace(tzinfo=None)

        def bare(queue_id: str) -> None:
            with raw_transaction(services, engine) as cursor:
                cursor.execute(select_sql, (org_id, org_id, FILTER["industry"], true))
                ids = [r[0] for r in cursor.fetchall()]
                enrollment_ids = [str(uuid.uuid4()) for _ in ids]
                cursor.executemany(
                    enrollment_sql,
                    [
                        (e, org_id, queue_id, c, "active", "bench", "{}", naive, naive, naive)
                        for e, c in zip(enrollment_ids, ids, strict=True)
                    ],
                )
                cursor.executemany(
                    task_sql,
                    [
                        (org_id, queue_id, e, c, 1, "pending", naive, 0, naive, naive)
                        for e, c in zip(enrollment_ids, ids, strict=True)
                    ],
                )
            assert len(ids) == 500

        def api(queue_id: str) -> None:
            response = client.post(
                f"/api/v1/event-queues/{queue_id}/bulk-enroll", headers=auth, json={"customer_filter": FILTER}
            )
            assert response.status_code == 200 and response.json["data"]["enrolled"] == 500, response.json
            assert response.json["data"]["has_more"] is True

        api_times, bare_times = alternate(rounds, api, bare, new_queue)
        services.db.dispose()
    ratio = paired_ratio(api_times, bare_times)
    return {
        "engine": engine,
        "bulk_enroll": summary(api_times),
        "bare_sql": summary(bare_times),
        "ratio": round(ratio, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    for engine in args.engines.split(","):
        result = run(engine, args.rounds)
        print(json.dumps(result))
        print(
            f"  {engine}: bulk-enroll {result['bulk_enroll']}; bare SQL {result['bare_sql']}; "
            f"ratio {result['ratio']}x (target <= 5x)"
        )


if __name__ == "__main__":
    main()
