"""``mappings diff`` over 100,000 stored deliveries, on one core.

    .venv/bin/python -m bench.mapping_diff [--deliveries 100000] [--rounds 3] [--engines sqlite,postgresql]

The database is filled with WhatsApp deliveries as the inbox stores them (signed bodies of real
shape, each with its own message id, sender and text: a mix of STOP variants, START and ordinary
messages; the events as the connector parsed them), inserted in bulk. The change diffed is the
operator's typical one, and the worst case for reuse: a keyword added to the first rule
(``stop``), so that rule is evaluated twice for every event.

Measured in the same process, alternating: the diff (read every delivery in keyset pages, plan
every event with both versions, compare, build the report) and the planner alone over the same
events (``Hook.plan`` over prebuilt contexts, the figure of ``bench.mapping``) as the baseline.
Target: the diff of 100,000 deliveries in at most 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import database, timed
from bench.common import whatsapp_body as common_whatsapp_body
from connectors.base import InboundRequest
from seqbridge.clock import ManualClock
from seqbridge.config import load_settings
from seqbridge.mapping.context import event_context
from seqbridge.mapping.registry import load_all
from seqbridge.mapping.sources import MappingFile, MappingSet
from seqbridge.mapping.testing import PlaceholderEnvironment
from seqbridge.services import Services
from seqbridge.services.common import new_id
from seqbridge.services.mapping_diff import Window
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.db import Database
from seqbridge.storage.schema import deliveries

MAPPING = Path(__file__).resolve().parent.parent / "mappings" / "whatsapp_stop.yaml"
TEXTS = [
    "STOP",
    " stop ",
    "Unsubscribe",
    "START",
    "unstop",
    "Hi, when is my appointment?",
    "thanks!",
    "Can I stop by tomorrow?",
    "QUIT",
    "ok",
    "PARAR",
    "para",
]
BATCH = 5000


def whatsapp_body(n: int, rng: random.Random) -> bytes:
    sender = f"1555{rng.randrange(10**7):07d}"
    return common_whatsapp_body(
        sender=sender, message_id=f"wamid.{n:012d}", text=rng.choice(TEXTS), name=f"Contact {n}"
    )


def fill(services: Services, hook, org_id: str, count: int) -> None:
    """``count`` processed deliveries of ``hook``, as the inbox stores them, in bulk."""
    rng = random.Random(20)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    rows = []
    for n in range(count):
        body = whatsapp_body(n, rng)
        request = InboundRequest("POST", "", {}, {}, body, "application/json")
        events = [
            {"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data}
            for e in hook.connector.parse(request)
        ]
        at = start + timedelta(milliseconds=n)
        rows.append(
            {
                "id": new_id(),
                "org_id": org_id,
                "hook": hook.name,
                "status": "processed",
                "received_at": at,
                "request_id": None,
                "method": "POST",
                "content_type": "application/json",
                "headers": {"content-type": "application/json", "x-hub-signature-256": "[REDACTED]"},
                "query": {},
                "body": body,
                "body_size": len(body),
                "events": events,
                "reject_reason": None,
                "attempts": 1,
                "next_attempt_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
                "results": [],
                "errors": [],
                "replays": 0,
                "processed_at": at,
                "updated_at": at,
            }
        )
        if len(rows) == BATCH:
            with services.db.transaction() as tx:
                bulk_insert(tx.conn, deliveries, rows)
            rows = []
    if rows:
        with services.db.transaction() as tx:
            bulk_insert(tx.conn, deliveries, rows)


def baseline_contexts(services: Services, org: str, count: int) -> list[dict]:
    """Every stored event's rule context, as the planner sees it (the whatsapp rules read the event only)."""
    with services.db.transaction(write=False) as tx:
        stored = tx.deliveries.requests_to_plan(
            org, "whatsapp", statuses=("processed",), since=None, before=None, limit=count, parts=frozenset()
        )
    return [
        event_context(hook="whatsapp", event=event, body=None, headers={}, query={}, received_at=None)
        for row in stored
        for event in row["events"]
    ]


def run(engine: str, count: int, rounds: int) -> dict:
    text = MAPPING.read_text()
    changed = text.replace("keyword: [STOP, ", "keyword: [STOP, DESUSCRIBIR, ", 1)  # a keyword added
    assert changed != text
    before = MappingSet("directory", "before", (MappingFile(MAPPING.name, f"before/{MAPPING.name}", text),))
    after = MappingSet("files", "after", (MappingFile(MAPPING.name, f"after/{MAPPING.name}", changed),))
    environ = PlaceholderEnvironment()
    with database(engine) as url:
        settings = load_settings(
            overrides={
                "DATABASE_URL": url,
                "MAPPINGS_DIR": str(MAPPING.parent),
                "MAPPINGS_WATCH_SECONDS": 0,
                "LOG_LEVEL": "WARNING",
            }
        )
        services = Services(Database(url, settings), ManualClock(), settings)
        org = services.keys.create_key("demo", ["*"], "bench").org_id
        hook = load_all([str(MAPPING)], environ).results[0].hooks["whatsapp"]
        fill(services, hook, org, count)
        window = Window(None, count)

        def diff() -> dict:
            return services.mapping_diff.compare(
                before, after, window=window, hook="whatsapp", environ=environ
            )

        report = diff()
        assert report["summary"]["events"] == count, report["summary"]
        diffs, plans = [], []
        for _ in range(rounds):
            # The baseline: the planner alone over the same events, their contexts built beforehand
            # and dropped before the diff runs (a heap of 100,000 contexts slows every collection).
            contexts = baseline_contexts(services, org, count)
            plans.append(timed(lambda contexts=contexts: [hook.plan(ctx) for ctx in contexts]))
            del contexts
            diffs.append(timed(diff))
        services.db.dispose()
    median_diff = statistics.median(diffs)
    return {
        "engine": engine,
        "deliveries": count,
        "changed_events": report["summary"]["changed_events"],
        "diff_seconds": round(median_diff, 2),
        "diff_deliveries_per_second": round(count / median_diff),
        "planner_events_per_second": round(count / statistics.median(plans)),
        "ratio_diff_to_one_planner_pass": round(
            statistics.median(d / p for d, p in zip(diffs, plans, strict=True)), 2
        ),
        "target_seconds_for_100k": 10,
        "meets_target": median_diff * 100_000 / count <= 10,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="sqlite")
    args = parser.parse_args()
    results = [run(engine, args.deliveries, args.rounds) for engine in args.engines.split(",")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
