"""Mapping evaluation: the shipped rules over 100,000 events, on one core.

    .venv/bin/python -m bench.mapping [--events 100000] [--rounds 5]

Each event is a WhatsApp message (a mix of STOP variants, START, and ordinary text) planned by
the shipped ``whatsapp`` hook: the keyword rules, then the templates of the matching rule's
actions. The baseline is the same decision hand-written in Python (a set lookup and two dicts),
run in the same process, alternating, so machine noise hits both.

Target: at least 20,000 events per second. The ratio to the baseline shows what the rule
language costs over code written for the one case.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from bench.common import timed
from seqbridge.mapping.context import event_context
from seqbridge.mapping.registry import HookRegistry
from seqbridge.mapping.testing import PlaceholderEnvironment

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
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
]
STOP = {"stop", "unsubscribe", "cancel", "end", "quit", "stopall", "revoke", "optout"}
START = {"start", "unstop"}


def contexts(count: int) -> list[dict]:
    rng = random.Random(42)
    out = []
    for n in range(count):
        sender = f"+1555{rng.randrange(10**7):07d}"
        data = {"channel": "whatsapp", "message_id": f"wamid.{n}", "from": sender, "text": rng.choice(TEXTS)}
        event = {"dedupe_key": f"wamid.{n}", "kind": "message", "data": data}
        out.append(
            event_context(
                hook="whatsapp",
                event=event,
                body=None,
                headers={},
                query={},
                received_at="2026-01-05T09:00:00Z",
            )
        )
    return out


def baseline(ctx: dict) -> list[dict]:
    """The whatsapp hook's decision, written by hand."""
    event = ctx["event"]
    text = event.get("text")
    word = text.strip().casefold() if isinstance(text, str) else None
    phone = event["from"]
    if word in STOP:
        return [
            {
                "action": "upsert_contact",
                "target": "local",
                "phone": phone,
                "set": {"status": "unsubscribed"},
            },
            {
                "action": "unenroll",
                "target": "local",
                "sequence": "*",
                "contact": {"phone": phone},
                "reason": "unsubscribed",
            },
        ]
    if word in START:
        return [{"action": "upsert_contact", "target": "local", "phone": phone, "set": {"status": "active"}}]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    registry = HookRegistry(str(MAPPINGS), PlaceholderEnvironment(), watch_seconds=0)
    hook = registry.get("whatsapp")
    events = contexts(args.events)
    # Same answers first: the benchmark compares equal work.
    for ctx in events[:1000]:
        assert hook.plan(ctx).actions == baseline(ctx), ctx
    engine, hand = [], []
    for _ in range(args.rounds):
        engine.append(timed(lambda: [hook.plan(ctx) for ctx in events]))
        hand.append(timed(lambda: [baseline(ctx) for ctx in events]))
    rate = args.events / statistics.median(engine)
    result = {
        "events": args.events,
        "rounds": args.rounds,
        "engine_events_per_second": round(rate),
        "baseline_events_per_second": round(args.events / statistics.median(hand)),
        "ratio_engine_to_baseline_time": round(
            statistics.median(e / h for e, h in zip(engine, hand, strict=True)), 2
        ),
        "target_events_per_second": 20_000,
        "meets_target": rate >= 20_000,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
