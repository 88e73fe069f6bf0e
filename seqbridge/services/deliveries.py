"""Webhook deliveries after the inbox stored them: the operator's view (list, show, replay, dry
run) and the entry points of processing, which is :mod:`seqbridge.services.processing`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.base import MalformedPayload
from seqbridge.audit import record
from seqbridge.audit import tag_for as _tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, Conflict, NotFound
from seqbridge.mapping.planner import delivery_events
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.common import CursorPage, decode_time_cursor, format_time, time_cursor
from seqbridge.services.inbox import REPLAYABLE, DeliveryStatus, Inbox
from seqbridge.services.processing import DeliveryProcessing
from seqbridge.storage.db import Database
from seqbridge.storage.wakeup import wake_workers

log = logging.getLogger("seqbridge.deliveries")


def delivery_to_api(row: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "hook": row["hook"],
        "status": row["status"],
        "received_at": format_time(row["received_at"]),
        "request_id": row["request_id"],
        "attempts": row["attempts"],
        "next_attempt_at": format_time(row["next_attempt_at"]) if row["status"] == "queued" else None,
        "processed_at": format_time(row["processed_at"]),
        "reject_reason": row["reject_reason"],
        "replays": row["replays"],
        "priority": row.get("priority", 0),
        "last_error": (row["errors"] or [None])[-1],
    }
    if detail:
        body = row["body"]
        text = None
        if body is not None:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        out["request"] = {
            "method": row["method"],
            "content_type": row["content_type"],
            "headers": row["headers"],
            "query": row["query"],
            "body": text,
            "body_size": row["body_size"],
        }
        out["events"] = row["events"]
        out["results"] = row["results"] or []
        out["errors"] = row["errors"] or []
    return out


class DeliveryService:
    """Processing (claim → map → act → record, or retry) and the operator's view of deliveries."""

    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any], services, inbox: Inbox) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.inbox = inbox
        self.processing = DeliveryProcessing(db, clock, settings, services, lambda: inbox.registry)

    @property
    def registry(self) -> HookRegistry:
        return self.inbox.registry

    # Processing (see :mod:`seqbridge.services.processing`) -------------------------------------

    def claim(self, worker_id: str, limit: int) -> list[str]:
        """Lease up to ``limit`` due deliveries; return their ids."""
        return [row["id"] for row in self.processing.claim(worker_id, limit)]

    def process(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """Run one delivery that ``worker_id`` holds the lease of (``respond: after_actions``
        hooks claim theirs at ingest), as a batch of one. Returns the row as settled, or None if
        the lease is not held. Never raises for a delivery's own problems."""
        processing = self.processing
        row = processing.leased(delivery_id, worker_id)
        if row is None:
            return None
        try:
            outcome = processing.run(row)
        except Exception as error:
            log.exception("delivery %s: attempt failed", delivery_id, extra={"delivery_id": delivery_id})
            outcome = processing.crashed(row, error)
        settled = processing.settle(worker_id, [(row, outcome)])
        return settled[0].row if settled else None

    # The operator's view -------------------------------------------------------------------------

    def list_deliveries(
        self,
        caller: Caller,
        *,
        hook: str | None,
        statuses: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> CursorPage:
        before = decode_time_cursor(cursor)
        with self.db.transaction(write=False) as tx:
            rows = tx.deliveries.list_deliveries(
                caller.org_id,
                hook=hook,
                statuses=statuses,
                since=since,
                until=until,
                before=before,
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = time_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None
        return CursorPage([delivery_to_api(r) for r in rows], limit, next_cursor)

    def get_delivery(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
        if row is None:
            raise NotFound(f"No delivery with id {delivery_id}.")
        return delivery_to_api(self._with_events(row), detail=True)

    def _with_events(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with its events: as stored, or read again from its request by its hook's
        connector when the inbox left them to be (none if the hook cannot read it any more)."""
        if row["events"] is not None:
            return row
        try:
            events = delivery_events(self.registry.get(row["hook"]), row)
        except (UnknownHook, BrokenHook, MalformedPayload):
            events = []
        return {**row, "events": events}

    def replay(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        """Queue a processed, failed or dead delivery again. Raises :class:`NotFound`, or
        :class:`Conflict` ``not_replayable`` for one that is queued, in progress, rejected or ignored."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
            if row is None:
                raise NotFound(f"No delivery with id {delivery_id}.")
            if not tx.deliveries.requeue(caller.org_id, delivery_id, now, tuple(s.value for s in REPLAYABLE)):
                raise Conflict(
                    f"A {row['status']} delivery cannot be replayed.",
                    code="not_replayable",
                    details={"status": row["status"]},
                )
            record(
                tx,
                caller,
                _tag_for(caller, "delivery", "replayed"),
                "delivery",
                delivery_id,
                {"hook": row["hook"], "previous_status": row["status"]},
                now,
            )
            wake_workers(tx)
            return delivery_to_api(
                self._with_events(tx.deliveries.get_delivery(caller.org_id, delivery_id)), detail=True
            )

    def replay_many(
        self,
        caller_for_org,
        *,
        statuses: list[str],
        since: datetime | None,
        hook: str | None,
        org_id: str | None,
        limit: int = 10_000,
    ) -> list[str]:
        """Replay every matching delivery (the CLI's bulk replay); return the ids queued again."""
        with self.db.transaction(write=False) as tx:
            targets = tx.deliveries.ids_to_replay(statuses, since, hook, org_id, limit)
        queued = []
        for target_org, delivery_id in targets:
            try:
                self.replay(caller_for_org(target_org), delivery_id)
                queued.append(delivery_id)
            except Exception as error:  # one bad row does not stop a bulk replay
                log.warning("replay of %s skipped: %s", delivery_id, error)
        return queued

    def mapping_statuses(self, caller: Caller) -> list[dict[str, Any]]:
        """The hooks that act for the caller's organization, with their status and problems."""
        return self.registry.statuses(self._org_name(caller))

    def dry_run(self, caller: Caller, hook_name: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Parse ``spec`` (body, content_type, headers, query) as the hook would and plan each
        event. Nothing is stored or executed. Raises :class:`NotFound` for a hook of another
        organization, :class:`HookMisconfigured`, and :class:`BadRequest` ``malformed_payload``."""
        from seqbridge.mapping.testing import build_request, simulate

        hook = self.inbox.hook(hook_name)
        if hook.organization != self._org_name(caller):
            raise NotFound(f"No hook named {hook_name!r}.", code="hook_not_found")
        request = build_request(spec, Path(hook.file).parent, hook.name)
        try:
            results = simulate(hook, request, format_time(self.clock.now()))
        except MalformedPayload as error:
            raise BadRequest(
                f"The body is not what {hook.connector_name} sends: {error}", code="malformed_payload"
            ) from None
        return {"hook": hook.name, "connector": hook.connector_name, "events": results}

    def _org_name(self, caller: Caller) -> str:
        with self.db.transaction(write=False) as tx:
            org = tx.orgs.get_org(caller.org_id)
        return org["name"] if org else ""

    def backlog(self) -> dict[str, Any]:
        """Due, processing and retrying deliveries, and how long the oldest due one has waited."""
        with self.db.transaction(write=False) as tx:
            return tx.deliveries.backlog(self.clock.now())

    def queue_counts(self) -> dict[str, dict[str, Any]]:
        """Step tasks, deliveries (by status, and the backlog) and REST hook notifications by
        state, for the metrics' gauges."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            return {
                "steps": tx.processor.counts(now),
                "deliveries": tx.deliveries.count_by_status(),
                "backlog": tx.deliveries.backlog(now),
                "rest_hooks": tx.subscriptions.count_by_status(),
            }


__all__ = ["DeliveryService", "DeliveryStatus"]
