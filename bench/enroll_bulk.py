"""enroll_bulk of 1000 contacts, against one raw executemany of the same 1000 enrollment rows.

    .venv/bin/python -m bench.enroll_bulk [--rounds 7] [--engines sqlite,postgresql]

Both run in the same process on the same database, alternating, so machine noise hits both.
The figure that matters is the ratio (target: enroll_bulk within 5x of the raw insert).
"""

from __future__ import annotations

import argparse
import json
import uuid

from sqlalchemy import insert

from bench.common import alternate, database, no_mappings, paired_ratio, raw_transaction, summary
from seqbridge import create_app
from seqbridge.storage.schema import contacts

SIZE = 1000


def run(engine: str, rounds: int) -> dict:
    with database(engine) as url:
        app = create_app({"DATABASE_URL": url, "MAPPINGS_DIR": no_mappings(), "LOG_LEVEL": "WARNING"})
        services = app.extensions["seqbridge"]
        key = services.keys.create_key("bench", ["*"]).raw_key
        client = app.test_client()
        auth = {"Authorization": f"Bearer {key}"}
        org_id = client.get("/api/v1/me", headers=auth).json["data"]["organization_id"]
        now = services.clock.now()
        people = [
            {
                "id": str(uuid.uuid4()),
                "org_id": org_id,
                "email": f"p{n}@example.com",
                "email_normalized": f"p{n}@example.com",
                "status": "active",
                "converted": False,
                "has_open_ticket": False,
                "attributes": {},
                "created_at": now,
                "updated_at": now,
            }
            for n in range(SIZE)
        ]
        with services.db.transaction() as tx:
            tx.conn.execute(insert(contacts), people)
        ids = [p["id"] for p in people]

        def new_sequence() -> str:
            sid = client.post("/api/v1/sequences", json={"name": "bench"}, headers=auth).json["data"]["id"]
            for delay in (0, 3):
                client.post(
                    f"/api/v1/sequences/{sid}/steps",
                    json={"subject": "s", "body": "b", "delay_days": delay},
                    headers=auth,
                )
            client.patch(f"/api/v1/sequences/{sid}", json={"status": "active"}, headers=auth)
            return sid

        placeholder = "?" if engine == "sqlite" else "%s"
        columns = (
            "id",
            "org_id",
            "sequence_id",
            "contact_id",
            "status",
            "enrollment_source",
            "enrollment_data",
            "enrolled_at",
            "enrollment_time",
            "updated_at",
        )
        raw_sql = f"INSERT INTO enrollments ({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))})"
        naive_now = now.replace(tzinfo=None)

        def raw_insert(sequence_id: str) -> None:
            rows = [
                (
                    str(uuid.uuid4()),
                    org_id,
                    sequence_id,
                    cid,
                    "active",
                    "bench",
                    "{}",
                    naive_now,
                    naive_now,
                    naive_now,
                )
                for cid in ids
            ]
            with raw_transaction(services, engine) as cursor:
                cursor.executemany(raw_sql, rows)

        def api_bulk(sequence_id: str) -> None:
            response = client.post(
                f"/api/v1/sequences/{sequence_id}/enroll_bulk", json={"customer_ids": ids}, headers=auth
            )
            assert response.status_code == 200 and response.json["data"]["enrolled"] == SIZE, response.json

        bulk_times, raw_times = alternate(rounds, api_bulk, raw_insert, new_sequence)
        services.db.dispose()
    ratio = paired_ratio(bulk_times, raw_times)
    return {
        "engine": engine,
        "enroll_bulk": summary(bulk_times),
        "raw_executemany": summary(raw_times),
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
            f"  {engine}: enroll_bulk {result['enroll_bulk']}; raw executemany {result['raw_executemany']}; "
            f"ratio {result['ratio']}x (target <= 5x)"
        )


if __name__ == "__main__":
    main()
