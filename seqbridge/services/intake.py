"""Receipts on their way into the inbox: made by the request's thread, written by the group
commit's leader in batches, their dedupe keys claimed in the same transaction.

A receipt is the least a delivery needs to be durable and deduplicated: the raw body, the
redacted headers and query, its dedupe keys. Everything else waits:

- its audit event is the worker's to write (:mod:`seqbridge.services.receipts`);
- its events are stored as JSON ``null`` when they are exactly what the connector reads from the
  stored request again (the planner reads them then), and as JSON only when they are not (a key
  too long for its column, one event twice in a request, some events seen before).

The request's thread does all the preparing (JSON, the driver's form of every value) before it
queues, so the part under the write lock is two multi-row statements and the commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from connectors.base import InboundEvent, InboundRequest
from seqbridge.audit import AuditTag, record_each, redact, redact_strings, tag_for
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.services.common import format_time
from seqbridge.storage.schema import deliveries
from seqbridge.storage.tx import Tx

_CONTENT_TYPE_LENGTH = deliveries.c.content_type.type.length


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # stored; waiting for its first or next attempt
    PROCESSING = "processing"  # leased by a worker (or by the request, for respond: after_actions)
    PROCESSED = "processed"  # every event mapped, every action done or skipped
    FAILED = "failed"  # the mapping or an action failed in a way a retry cannot fix; replayable
    DEAD = "dead"  # out of attempts after transient failures; replayable
    REJECTED = "rejected"  # failed verification or was malformed; never processed
    IGNORED = "ignored"  # verified but held nothing to act on (a status callback, a honeypot hit)


#: What an operator can replay (``POST /api/v1/deliveries/{id}/replay``).
REPLAYABLE = (DeliveryStatus.PROCESSED, DeliveryStatus.FAILED, DeliveryStatus.DEAD)


def hook_caller(org_id: str, hook: str, request_id: str | None, **via: Any) -> Caller:
    """The caller a hook acts as: the hook is the actor, and ``via`` names it (and more)."""
    return Caller(org_id, Actor(ActorType.HOOK, hook), request_id, via={"hook": hook, **via})


def delivery_tag(caller: Caller, action: str) -> AuditTag:
    """``<source>:delivery:<action>`` for this caller (``hook:delivery:received``, …)."""
    return tag_for(caller, "delivery", action)


@dataclass(frozen=True)
class Received:
    """What a hook answers: 202 queued, 200 duplicate / ignored, or 200 with results. For a
    duplicate, ``original`` says what became of the first delivery and where to replay it."""

    delivery_id: str | None
    status: str
    results: list[dict[str, Any]] | None = None
    events: int = 0
    original: dict[str, Any] | None = None

    @property
    def http_status(self) -> int:
        return 202 if self.status == "queued" else 200

    def to_api(self) -> dict[str, Any]:
        data: dict[str, Any] = {"delivery_id": self.delivery_id, "status": self.status}
        if self.results is not None:
            data["results"] = self.results
        if self.original is not None:
            data["original"] = self.original
        return data


class Receipt:
    """One request's delivery on its way into the inbox: the row's values in the driver's form,
    and its dedupe keys ``(key, expires_at)`` (``expires_at`` None for a provider's own id)."""

    __slots__ = ("delivery_id", "events", "hook", "keys", "org_id", "request_id", "status", "values")

    def __init__(
        self,
        delivery_id: str,
        org_id: str,
        hook: str,
        request_id: str | None,
        status: str,
        values: tuple,
        keys: list[tuple[str, datetime | None]],
        events: list[InboundEvent],
    ) -> None:
        self.delivery_id = delivery_id
        self.org_id = org_id
        self.hook = hook
        self.request_id = request_id
        self.status = status
        self.values = values
        self.keys = keys
        self.events = events


def stored_events(events: list[InboundEvent]) -> list[dict[str, Any]]:
    return [{"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data} for e in events]


def receipt_values(
    time: Any,
    *,
    delivery_id: str,
    org_id: str,
    hook: str,
    status: str,
    now: datetime,
    request_id: str | None,
    request: InboundRequest,
    secret_header: str | None,
    body: bytes | None,
    events_json: str,
    reject_reason: str | None = None,
    lease: tuple[str, datetime] | None = None,
    processed: bool = False,
    priority: int = 0,
) -> tuple:
    """The ``deliveries`` row of a receipt, in the order of ``RECEIPT_COLUMNS`` and the driver's
    form (``time`` is :func:`~seqbridge.storage.deliveries.receipt_time` of the database).
    ``priority`` above 0 has the worker claim it before every ordinary delivery
    (:meth:`seqbridge.mapping.hooks.Hook.priority_of`)."""
    stamp = time(now)
    query = json.dumps(redact(request.query)) if request.query else "{}"
    queued = status == "queued"
    return (
        delivery_id,
        org_id,
        hook,
        status,
        stamp,
        request_id,
        request.method,
        request.content_type[:_CONTENT_TYPE_LENGTH] or None,
        json.dumps(redact_strings(request.headers, secret_header)),
        query,
        body,
        len(request.body),
        events_json,
        reject_reason,
        1 if lease else 0,
        stamp if queued else None,
        lease[0] if lease else None,
        time(lease[1]) if lease else None,
        "[]" if processed else None,
        "[]",
        0,
        stamp if processed else None,
        stamp,
        False,
        priority,
    )


def key_expiry(event: InboundEvent, now: datetime, window: timedelta) -> datetime | None:
    """When this event's dedupe key stops making a repeat a duplicate: after the hook's
    ``dedupe`` window for a hash of the body, never for a provider's own id (it is kept with
    its delivery, at least as long as the retention's dedupe window)."""
    return now + window if event.hashed else None


def write_receipts(tx: Tx, receipts: list[Receipt], now: datetime) -> list[Received]:
    """Store a batch of receipts in ``tx``, claim their dedupe keys and answer each.

    Keys are claimed in arrival order, so of two receipts in one batch with the same key the
    first is stored and the second is its duplicate, exactly as if they came apart. A duplicate
    is not kept: its row goes, and a ``hook:delivery:duplicate`` event names the original.
    """
    store = tx.deliveries
    store.insert_receipts([r.values for r in receipts])
    claims, seen = [], set()
    for receipt in receipts:
        for key, expires_at in receipt.keys:
            ident = (receipt.org_id, receipt.hook, key)
            if ident not in seen:
                seen.add(ident)
                claims.append((*ident, receipt.delivery_id, expires_at))
    owners = store.claim_keys(claims, now)
    answers: list[Received | None] = []
    duplicates: list[int] = []
    for receipt in receipts:
        if not receipt.keys:  # rejected, or verified with nothing to act on
            answers.append(Received(receipt.delivery_id, receipt.status))
            continue
        mine = [
            key
            for key, _ in receipt.keys
            if owners[(receipt.org_id, receipt.hook, key)][0] == receipt.delivery_id
        ]
        if not mine:
            duplicates.append(len(answers))
            answers.append(None)
            continue
        if len(mine) < len(receipt.keys):  # some events were seen before: keep only the new ones
            fresh = set(mine)
            store.set_events(
                receipt.delivery_id, stored_events([e for e in receipt.events if e.dedupe_key in fresh])
            )
        answers.append(Received(receipt.delivery_id, "queued", events=len(mine)))
    if duplicates:
        _answer_duplicates(tx, [receipts[i] for i in duplicates], owners, now, answers, duplicates)
    return answers  # type: ignore[return-value]


def _answer_duplicates(
    tx: Tx, duplicates: list[Receipt], owners: dict, now: datetime, answers: list, positions: list[int]
) -> None:
    store = tx.deliveries
    firsts = [owners[(d.org_id, d.hook, d.keys[0][0])] for d in duplicates]
    summaries = store.summaries(list({owner for owner, _ in firsts}))
    store.delete_deliveries([d.delivery_id for d in duplicates])
    audit = []
    for receipt, (original, expires_at), position in zip(duplicates, firsts, positions, strict=True):
        keys = [key for key, _ in receipt.keys]
        answers[position] = Received(
            original,
            "duplicate",
            events=len(keys),
            original=_original(original, summaries.get(original), expires_at),
        )
        caller = hook_caller(receipt.org_id, receipt.hook, receipt.request_id)
        audit.append(
            (
                caller,
                delivery_tag(caller, "duplicate"),
                "delivery",
                original,
                {"hook": receipt.hook, "dedupe_keys": keys[:20]},
            )
        )
    record_each(tx, audit, now)


def _original(
    delivery_id: str, summary: dict[str, Any] | None, expires_at: datetime | None
) -> dict[str, Any]:
    """What a duplicate's answer says of the original: its status, when it came, where to look at
    it and (when it is finished) where to replay it, and, for a body hash, from when the same
    body is a new delivery."""
    out: dict[str, Any] = {"path": f"/api/v1/deliveries/{delivery_id}"}
    if summary is not None:
        out["status"] = summary["status"]
        out["received_at"] = format_time(summary["received_at"])
        if summary["status"] in REPLAYABLE:
            out["replay_path"] = f"/api/v1/deliveries/{delivery_id}/replay"
    if expires_at is not None:
        out["dedupe_until"] = format_time(expires_at)
    return out
