"""For :mod:`bench.drain`: the raw-SQL loop that drains the same queued STOPs one transaction per
delivery, and the checks every drained database must pass.

The raw loop is what a careful engineer would write by hand for exactly this workload, on the
bare DBAPI connection (no SQLAlchemy, no rule engine, no unit of work), with the same effects
and the same rows as the worker:

- read the queue once (ids in claim order), then per delivery, in one transaction: read its body
  and parse it (the sender and the text; the parsed events are stored, as the worker stores
  them), look the sender's contact up by phone, mark it unsubscribed, exit its live enrollments,
  cancel their pending tasks (``RETURNING`` gives the count per enrollment), append the six
  hash-chained audit events the worker appends (received, contact updated, contact
  unsubscribed, two enrollments exited, processed) under the chain head's lock, and mark the
  delivery processed with its results;
- no lease (nothing else runs), no redaction pass (the data has no secrets), no metrics, no log.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import make_url

from seqbridge.audit import event_hash

REASON = "unsubscribed"
#: Audit events per delivery, by tag (what the worker writes for a STOP to a contact in two sequences).
EXPECTED_TAGS = {
    "hook:delivery:received": 1,
    "hook:contact:updated": 1,
    "hook:contact:unsubscribed": 1,
    "hook:enrollment:exited": 2,
    "hook:delivery:processed": 1,
}


def connect(url: str, engine: str):
    if engine == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # as Seqbridge runs SQLite
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn
    import psycopg

    return psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def raw_loop(url: str, engine: str, org_id: str) -> float:
    """Drain every queued delivery of the database at ``url``; deliveries per second."""
    sqlite = engine == "sqlite"
    p = "?" if sqlite else "%s"
    j = "?" if sqlite else "%s::jsonb"
    lock = "" if sqlite else " FOR UPDATE"
    true = "1" if sqlite else "true"
    conn = connect(url, engine)
    cur = conn.cursor()

    def stamp(moment: datetime):  # how SQLAlchemy stores UTCDateTime: naive UTC
        naive = moment.replace(tzinfo=None)
        return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else naive

    def begin() -> None:
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")

    started = time.perf_counter()
    cur.execute("SELECT id FROM deliveries WHERE status = 'queued' ORDER BY next_attempt_at, id")
    ids = [r[0] for r in cur.fetchall()]
    if not sqlite:
        conn.commit()
    for delivery_id in ids:
        begin()
        now = datetime.now(UTC)
        at = stamp(now)
        cur.execute(f"SELECT body, request_id, hook FROM deliveries WHERE id = {p}", (delivery_id,))
        body, request_id, hook = cur.fetchone()
        change = json.loads(bytes(body))["entry"][0]["changes"][0]["value"]
        message = change["messages"][0]
        if message["text"]["body"].strip().upper() != "STOP":
            raise RuntimeError(f"delivery {delivery_id} is not a STOP")
        sender = "+" + message["from"]
        event = {
            "dedupe_key": message["id"],
            "kind": "message",
            "data": {
                "channel": "whatsapp",
                "message_id": message["id"],
                "from": sender,
                "wa_id": message["from"],
                "type": "text",
                "text": message["text"]["body"],
                "timestamp": message["timestamp"],
                "message": message,
            },
        }
        cur.execute(
            f"SELECT id, status FROM contacts WHERE org_id = {p} AND phone = {p} ORDER BY created_at, id LIMIT 1",
            (org_id, sender),
        )
        contact_id, status = cur.fetchone()
        cur.execute(
            f"UPDATE contacts SET status = 'unsubscribed', updated_at = {p} WHERE id = {p}", (at, contact_id)
        )
        cur.execute(
            f"SELECT id, sequence_id FROM enrollments WHERE contact_id = {p} AND status IN ('active', 'paused') "
            "ORDER BY enrolled_at, id",
            (contact_id,),
        )
        live = cur.fetchall()
        marks = ", ".join([p] * len(live))
        enrollment_ids = tuple(e for e, _ in live)
        cur.execute(
            f"UPDATE enrollments SET status = 'exited', exited_at = {p}, exit_reason = 'unsubscribed', "
            f"current_step_id = NULL, next_send_at = NULL, updated_at = {p} WHERE id IN ({marks})",
            (at, at, *enrollment_ids),
        )
        cur.execute(
            f"UPDATE step_tasks SET status = 'cancelled', last_error = 'enrollment exited: unsubscribed', "
            f"updated_at = {p}, finished_at = {p} WHERE enrollment_id IN ({marks}) "
            "AND status || '' IN ('pending', 'paused') RETURNING enrollment_id",
            (at, at, *enrollment_ids),
        )
        cancelled = dict.fromkeys(enrollment_ids, 0)
        for (enrollment_id,) in cur.fetchall():
            cancelled[enrollment_id] += 1
        via = {"delivery_id": delivery_id, "event": message["id"], "hook": hook, "rule": "stop"}
        events = [
            (
                "hook:delivery:received",
                "delivery",
                delivery_id,
                {"dedupe_keys": [message["id"]], "events": 1, "hook": hook, "via": {"hook": hook}},
            ),
            (
                "hook:contact:updated",
                "contact",
                contact_id,
                {"changes": {"status": "unsubscribed"}, "via": via},
            ),
            (
                "hook:contact:unsubscribed",
                "contact",
                contact_id,
                {"from": status, "to": "unsubscribed", "via": via},
            ),
            *[
                (
                    "hook:enrollment:exited",
                    "enrollment",
                    e,
                    {
                        "contact_id": contact_id,
                        "reason": REASON,
                        "sequence_id": s,
                        "tasks_cancelled": cancelled[e],
                        "via": via,
                    },
                )
                for e, s in live
            ],
            (
                "hook:delivery:processed",
                "delivery",
                delivery_id,
                {
                    "actions": {"done": 2},
                    "events": 1,
                    "hook": hook,
                    "rules": ["stop"],
                    "status": "processed",
                    "unmatched": 0,
                    "via": {"delivery_id": delivery_id, "hook": hook},
                },
            ),
        ]
        cur.execute(f"SELECT last_hash FROM audit_heads WHERE org_id = {p}{lock}", (org_id,))
        prev_hash = cur.fetchone()[0]
        values = []
        for tag, subject_type, subject_id, data in events:
            data_json = _dumps(data)
            row = {
                "org_id": org_id,
                "occurred_at": now,
                "actor_type": "hook",
                "actor_id": hook,
                "tag": tag,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "request_id": request_id,
                "prev_hash": prev_hash,
            }
            prev_hash = event_hash(row, data_json)
            values += [
                org_id,
                at,
                "hook",
                hook,
                tag,
                subject_type,
                subject_id,
                request_id,
                data_json,
                row["prev_hash"],
                prev_hash,
            ]
        rows = ", ".join([f"({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {j}, {p}, {p})"] * len(events))
        cur.execute(
            "INSERT INTO audit_events (org_id, occurred_at, actor_type, actor_id, tag, subject_type, subject_id, "
            f"request_id, data, prev_hash, hash) VALUES {rows} RETURNING id",
            values,
        )
        last_id = max(r[0] for r in cur.fetchall())
        cur.execute(
            f"UPDATE audit_heads SET last_event_id = {p}, last_hash = {p} WHERE org_id = {p}",
            (last_id, prev_hash, org_id),
        )
        results = [
            {
                "dedupe_key": message["id"],
                "kind": "message",
                "rules": ["stop"],
                "actions": [
                    {
                        "action": "upsert_contact",
                        "target": "local",
                        "phone": sender,
                        "set": {"status": "unsubscribed"},
                        "outcome": {
                            "status": "done",
                            "operation": "updated",
                            "contact_id": contact_id,
                            "fields": ["status"],
                            "tags_added": [],
                        },
                    },
                    {
                        "action": "unenroll",
                        "target": "local",
                        "sequence": "*",
                        "contact": {"phone": sender},
                        "reason": REASON,
                        "outcome": {
                            "status": "done",
                            "reason": REASON,
                            "enrollment_ids": list(enrollment_ids),
                        },
                    },
                ],
            }
        ]
        cur.execute(
            f"UPDATE deliveries SET status = 'processed', attempts = attempts + 1, events = {j}, results = {j}, "
            f"processed_at = {p}, updated_at = {p}, receipt_audited = {true} WHERE id = {p} AND status = 'queued'",
            (json.dumps([event]), json.dumps(results), at, at, delivery_id),
        )
        if cur.rowcount != 1:
            raise RuntimeError(f"delivery {delivery_id} was not queued")
        conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return len(ids) / elapsed


def check(url: str, org_id: str, senders: list[str], contacts: int) -> list[str]:
    """What is wrong with a drained database (nothing, if the list is empty)."""
    engine = "sqlite" if url.startswith("sqlite") else "postgresql"
    p = "?" if engine == "sqlite" else "%s"
    conn = connect(url, engine)
    cur = conn.cursor()

    def one(sql: str, *params) -> Any:
        cur.execute(sql, params)
        return cur.fetchone()[0]

    def rows(sql: str, *params) -> list[tuple]:
        cur.execute(sql, params)
        return cur.fetchall()

    problems = []
    n = len(senders)
    try:
        by_status = dict(
            rows(f"SELECT status, count(*) FROM contacts WHERE org_id = {p} GROUP BY status", org_id)
        )
        if by_status != {"unsubscribed": n, **({"active": contacts - n} if contacts > n else {})}:
            problems.append(
                f"contacts by status {by_status}: expected {n} unsubscribed and {contacts - n} active"
            )
        cur.execute("CREATE TEMPORARY TABLE senders (phone TEXT PRIMARY KEY)")
        cur.executemany(f"INSERT INTO senders VALUES ({p})", [(s,) for s in senders])
        wrong = one(
            "SELECT count(*) FROM contacts c JOIN senders s ON s.phone = c.phone "
            "WHERE c.status <> 'unsubscribed'"
        )
        if wrong:
            problems.append(f"{wrong} senders are not unsubscribed")
        enrollments = dict(
            rows("SELECT status || ':' || coalesce(exit_reason, ''), count(*) FROM enrollments GROUP BY 1")
        )
        others = 2 * (contacts - n)  # the bystanders' enrollments and tasks stay as they were
        if enrollments != {"exited:unsubscribed": 2 * n, **({"active:": others} if others else {})}:
            problems.append(
                f"enrollments {enrollments}: expected {2 * n} exited:unsubscribed, {others} active"
            )
        tasks = dict(rows("SELECT status, count(*) FROM step_tasks GROUP BY status"))
        if tasks != {"cancelled": 2 * n, **({"pending": others} if others else {})}:
            problems.append(f"step tasks {tasks}: expected {2 * n} cancelled, {others} pending")
        deliveries = dict(rows("SELECT status, count(*) FROM deliveries GROUP BY status"))
        if deliveries != {"processed": n}:
            problems.append(f"deliveries {deliveries}: expected {n} processed")
        attempts = dict(rows("SELECT attempts, count(*) FROM deliveries GROUP BY attempts"))
        if attempts != {1: n}:
            problems.append(f"deliveries by attempts {attempts}: expected {n} with one attempt")
        tags = dict(rows(f"SELECT tag, count(*) FROM audit_events WHERE tag LIKE {p} GROUP BY tag", "hook:%"))
        if tags != {tag: per * n for tag, per in EXPECTED_TAGS.items()}:
            problems.append(f"audit events {tags}: expected {EXPECTED_TAGS} per delivery")
        # One event per effect, each about its own subject (no delivery processed twice, no
        # contact or enrollment touched twice).
        for tag, per in EXPECTED_TAGS.items():
            per_subject = 1 if tag != "hook:contact:updated" else per
            twice = one(
                f"SELECT count(*) FROM (SELECT subject_id FROM audit_events WHERE tag = {p} "
                f"GROUP BY subject_id HAVING count(*) <> {per_subject}) t",
                tag,
            )
            if twice:
                problems.append(f"{twice} subjects have other than {per_subject} {tag} events")
        unmatched = one(
            "SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT 1 FROM audit_events a "
            "WHERE a.tag = 'hook:delivery:processed' AND a.subject_id = d.id)"
        )
        if unmatched:
            problems.append(f"{unmatched} deliveries have no processed event")
    finally:
        conn.rollback()
        conn.close()
    return problems
