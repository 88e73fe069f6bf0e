"""Webhook deliveries: receive (verify → parse → dedupe → store), process (map → act → record),
and the operator's view (list, show, replay).

The promises:
- a delivery is committed, with its dedupe keys and its ``received`` audit event, before the
  sender gets its 2xx;
- a repeat of a dedupe key acts on nothing and answers with the original delivery;
- processing runs the actions, marks the delivery and writes the audit log in one transaction,
  so a crash mid-way leaves nothing half done; the lease then expires and another attempt runs;
- transient trouble retries with backoff; after ``DELIVERY_MAX_ATTEMPTS`` the delivery is dead;
  a replay queues it again.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from connectors.base import InboundEvent, InboundRequest, MalformedPayload, VerificationError
from connectors.remote import Transient
from seqbridge.audit import record, record_each, redact
from seqbridge.audit import tag_for as _tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import BadRequest, HookMisconfigured, NotFound, SignatureRejected
from seqbridge.mapping.context import event_context, parse_body
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.mapping.rules import EvaluationError
from seqbridge.services.actions import LocalTarget
from seqbridge.services.common import CursorPage, decode_cursor, encode_cursor, format_time, new_id
from seqbridge.services.group_commit import GroupCommit
from seqbridge.storage.bulk import RawJSON
from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.deliveries")

#: Headers that prove identity; never stored (the audit redaction catches most by name too).
_SECRET_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-hub-signature", "x-hub-signature-256",
                   "x-twilio-signature", "typeform-signature", "x-hubspot-signature", "x-hubspot-signature-v3",
                   "webhook-signature", "svix-signature", "x-seqbridge-token"}  # fmt: skip


class DeliveryStatus(StrEnum):
    QUEUED = "queued"  # stored; waiting for its first or next attempt
    PROCESSING = "processing"  # leased by a worker (or by the request, for respond: after_actions)
    PROCESSED = "processed"  # every event mapped, every action done or skipped
    FAILED = "failed"  # the mapping or an action failed in a way a retry cannot fix; replayable
    DEAD = "dead"  # out of attempts after transient failures; replayable
    REJECTED = "rejected"  # failed verification or was malformed; never processed
    IGNORED = "ignored"  # verified but held nothing to act on (a status callback, a honeypot hit)


REPLAYABLE = (DeliveryStatus.PROCESSED, DeliveryStatus.FAILED, DeliveryStatus.DEAD)


@dataclass(frozen=True)
class Received:
    """What a hook answers: 202 queued, 200 duplicate / ignored, or 200 with results."""

    delivery_id: str | None
    status: str
    results: list[dict[str, Any]] | None = None
    events: int = 0

    @property
    def http_status(self) -> int:
        return 202 if self.status == "queued" else 200


@dataclass(frozen=True)
class _Arrival:
    """One request's delivery on its way into the inbox."""

    caller: Caller
    hook: str
    row: dict[str, Any]
    keys: list[str]
    events: list[dict[str, Any]]


class _Retry(Exception):
    """A transient problem: try again later (not before ``retry_after`` seconds, if given)."""

    def __init__(
        self, message: str, retry_after: float | None = None, max_attempts: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.max_attempts = max_attempts


def hook_caller(org_id: str, hook: str, request_id: str | None, **via: Any) -> Caller:
    return Caller(org_id, Actor(ActorType.HOOK, hook), request_id, via={"hook": hook, **via})


def _tag(caller: Caller, action: str):
    return _tag_for(caller, "delivery", action)


def stored_headers(headers: dict[str, str], extra_secret: str | None = None) -> dict[str, str]:
    """The headers worth keeping, secrets redacted."""
    secret = {*_SECRET_HEADERS, *([extra_secret.lower()] if extra_secret else [])}
    return redact({k: ("[REDACTED]" if k in secret else v) for k, v in headers.items()})


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


class TokenBucket:
    """A per-process rate limit: ``rate`` per second with bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 if allowed, else the seconds until a token is free."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


class DeliveryService:
    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any], services) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.services = services
        self.local = LocalTarget(services)
        self.max_attempts = settings["DELIVERY_MAX_ATTEMPTS"]
        self.retry_base = settings["DELIVERY_RETRY_BASE_SECONDS"]
        self.retry_max = settings["DELIVERY_RETRY_MAX_SECONDS"]
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self.rng = random.Random()
        self._registry: HookRegistry | None = None
        self._orgs: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._inbox: GroupCommit[_Arrival] = GroupCommit(self._write_arrivals, lock=db.write_lock)
        self._lock = threading.Lock()

    # The hooks ---------------------------------------------------------------------------------

    @property
    def registry(self) -> HookRegistry:
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    self._registry = HookRegistry(
                        self.settings["MAPPINGS_DIR"],
                        watch_seconds=self.settings["MAPPINGS_WATCH_SECONDS"],
                        allow_private=bool(self.settings.get("ALLOW_PRIVATE_TARGETS")),
                    )
        return self._registry

    def load_mappings(self) -> None:
        """Load and validate the mappings now (a server does it at start, logging any problem)."""
        _ = self.registry

    def hook(self, name: str) -> Hook:
        """The hook, or :class:`NotFound` ``hook_not_found`` / :class:`HookMisconfigured`."""
        try:
            return self.registry.get(name)
        except UnknownHook:
            raise NotFound(f"No hook named {name!r}.", code="hook_not_found") from None
        except BrokenHook as broken:
            raise HookMisconfigured(
                f"Hook {name!r} has an invalid configuration; it accepts nothing until it is fixed.",
                details={"problems": len(broken.problems)},
                headers={"Retry-After": "60"},
            ) from None

    def organization_id(self, hook: Hook) -> str:
        """The id of the hook's organization (cached for 30 s). Raises :class:`HookMisconfigured`."""
        cached = self._orgs.get(hook.organization)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        with self.db.transaction(write=False) as tx:
            org = tx.orgs.get_org_by_name(hook.organization)
        if org is None:
            log.error("hook %s names organization %r, which does not exist", hook.name, hook.organization)
            raise HookMisconfigured(
                f"Hook {hook.name!r} names an organization that does not exist.",
                headers={"Retry-After": "60"},
            )
        self._orgs[hook.organization] = (org["id"], time.monotonic() + 30)
        return org["id"]

    def throttle(self, hook: Hook) -> float:
        """0 if the hook's rate limit lets this request in, else the seconds to wait."""
        if not hook.rate_per_second:
            return 0.0
        bucket = self._buckets.get(hook.name)
        if bucket is None or bucket.rate != hook.rate_per_second:
            burst = hook.rate_burst or max(1, int(hook.rate_per_second))
            bucket = self._buckets[hook.name] = TokenBucket(hook.rate_per_second, burst)
        return bucket.take()

    # Receiving ---------------------------------------------------------------------------------

    def receive(self, hook: Hook, request: InboundRequest, request_id: str | None) -> Received:
        """Verify, parse, deduplicate and store one request.

        Raises :class:`SignatureRejected` (401, the reason as code) after recording the attempt,
        :class:`BadRequest` ``malformed_payload`` for a verified body this sender never sends,
        and :class:`HookMisconfigured` when the hook's organization is missing.
        """
        org_id = self.organization_id(hook)
        now = self.clock.now()
        caller = hook_caller(org_id, hook.name, request_id)
        try:
            hook.connector.verify(request, now)
        except VerificationError as error:
            self._store_rejected(caller, hook, request, error.reason, now, keep_body=False)
            raise SignatureRejected(error.message, code=error.reason) from None
        try:
            events = hook.connector.parse(request)
        except MalformedPayload as error:
            self._store_rejected(caller, hook, request, "malformed_payload", now, keep_body=True)
            raise BadRequest(f"The body is not what {hook.connector_name} sends: {error}",
                             code="malformed_payload") from None  # fmt: skip
        return self._store(caller, hook, request, _unique(events), now)

    def _row(self, caller: Caller, hook: Hook, request: InboundRequest, status: str, now: datetime,
             body: bytes | None, events: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        header = getattr(getattr(hook.connector, "auth", None), "header", None)
        return {
            "id": new_id(),
            "org_id": caller.org_id,
            "hook": hook.name,
            "status": status,
            "received_at": now,
            "request_id": caller.request_id,
            "method": request.method,
            "content_type": request.content_type or None,
            # JSON made here, before the write lock is taken: the lock is the bottleneck.
            "headers": RawJSON(json.dumps(stored_headers(request.headers, header))),
            "query": RawJSON(json.dumps(redact(request.query))),
            "body": body,
            "body_size": len(request.body),
            "events": RawJSON(json.dumps(events)),
            "reject_reason": None,
            "attempts": 0,
            "next_attempt_at": now if status == DeliveryStatus.QUEUED else None,
            "lease_owner": None,
            "lease_expires_at": None,
            "results": None,
            "errors": RawJSON("[]"),
            "replays": 0,
            "processed_at": None,
            "updated_at": now,
        }

    def _store_rejected(self, caller: Caller, hook: Hook, request: InboundRequest, reason: str, now: datetime,
                        *, keep_body: bool) -> None:  # fmt: skip
        row = self._row(
            caller, hook, request, DeliveryStatus.REJECTED, now, request.body if keep_body else None, []
        )
        row["reject_reason"] = reason
        with self.db.transaction() as tx:
            tx.deliveries.insert_delivery(row)
            record(tx, caller, _tag(caller, "rejected"), "delivery", row["id"],
                   {"hook": hook.name, "reason": reason, "body_size": len(request.body)}, now)  # fmt: skip
        log.warning("hook %s rejected a request: %s", hook.name, reason)

    def _store(self, caller: Caller, hook: Hook, request: InboundRequest, events: list[InboundEvent],
               now: datetime) -> Received:  # fmt: skip
        inline = bool(events) and hook.respond == "after_actions"
        status = DeliveryStatus.IGNORED if not events else (
            DeliveryStatus.PROCESSING if inline else DeliveryStatus.QUEUED)  # fmt: skip
        payload = [{"dedupe_key": e.dedupe_key, "kind": e.kind, "data": e.data} for e in events]
        row = self._row(caller, hook, request, status, now, request.body, payload)
        if not events:
            row.update(processed_at=now, results=RawJSON("[]"))
        if inline:
            row.update(lease_owner=f"inline:{row['id']}", lease_expires_at=now + self.lease, attempts=1)
        received = self._inbox.submit(
            _Arrival(caller, hook.name, row, [e.dedupe_key for e in events], payload)
        )
        if inline and received.status == "queued":
            return self._respond_after_actions(hook, received.delivery_id, received.events)
        return received

    def _write_arrivals(self, arrivals: list[_Arrival]) -> list[Received]:
        """Store a batch of deliveries in one transaction (the group commit's writer).

        Dedupe keys are claimed in arrival order, so of two arrivals in one batch with the same
        key the first is stored and the second is its duplicate, exactly as if they came apart.
        """
        now = self.clock.now()
        with self.db.transaction() as tx:
            store = tx.deliveries
            store.insert_deliveries([a.row for a in arrivals])
            claimed = store.claim_keys([(a.caller.org_id, a.hook, key, a.row["id"]) for a in arrivals for key in a.keys],
                                       now)  # fmt: skip
            results: list[Received] = []
            audit: list[tuple] = []
            duplicates: list[str] = []
            for arrival in arrivals:
                caller, row, keys = arrival.caller, arrival.row, arrival.keys
                if not keys:
                    results.append(Received(row["id"], "ignored"))
                    audit.append((caller, _tag(caller, "received"), "delivery", row["id"],
                                  {"hook": arrival.hook, "events": 0, "status": "ignored"}))  # fmt: skip
                    continue
                owners = [claimed.get((caller.org_id, arrival.hook, key)) for key in keys]
                fresh = [key for key, owner in zip(keys, owners, strict=True) if owner == row["id"]]
                if not fresh:
                    duplicates.append(row["id"])
                    original = owners[0] or store.key_owner(caller.org_id, arrival.hook, keys[0])
                    results.append(Received(original, "duplicate", events=len(keys)))
                    audit.append((caller, _tag(caller, "duplicate"), "delivery", original,
                                  {"hook": arrival.hook, "dedupe_keys": keys[:20]}))  # fmt: skip
                    continue
                if len(fresh) < len(keys):  # some events were seen before: keep only the new ones
                    store.set_events(row["id"], [e for e in arrival.events if e["dedupe_key"] in fresh])
                results.append(Received(row["id"], "queued", events=len(fresh)))
                audit.append((caller, _tag(caller, "received"), "delivery", row["id"],
                              {"hook": arrival.hook, "events": len(fresh), "dedupe_keys": fresh[:20]}))  # fmt: skip
            store.delete_deliveries(duplicates)
            record_each(tx, audit, now)
        return results

    def _respond_after_actions(self, hook: Hook, delivery_id: str, events: int) -> Received:
        """Process at once, in a thread, and wait up to the hook's timeout for the results."""
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                done["row"] = self.process(delivery_id, f"inline:{delivery_id}")
            except Exception:  # the lease expires and the worker takes over
                log.exception("inline processing of delivery %s failed", delivery_id)

        thread = threading.Thread(target=run, name=f"delivery-{delivery_id}", daemon=True)
        thread.start()
        thread.join(hook.respond_timeout_seconds)
        row = done.get("row")
        if row is None or row["status"] not in (DeliveryStatus.PROCESSED, DeliveryStatus.FAILED):
            return Received(delivery_id, "queued", events=events)
        return Received(delivery_id, row["status"], results=row["results"], events=events)

    # Processing --------------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int) -> list[str]:
        """Reclaim expired leases, then lease up to ``limit`` due deliveries."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            tx.deliveries.reclaim_expired_leases(now)
            return tx.deliveries.claim_due(now, worker_id, now + self.lease, limit)

    def release(self, ids: list[str], worker_id: str) -> int:
        """Give back deliveries this worker claimed but will not run (it is stopping)."""
        with self.db.transaction() as tx:
            return tx.deliveries.release(ids, worker_id, self.clock.now())

    def process(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        """Run one leased delivery's events through its hook's rules and act. Returns the row as
        finished, or None if the lease was lost. Never raises for a delivery's own problems."""
        try:
            return self._process(delivery_id, worker_id)
        except Exception as error:  # any failure is recorded and retried
            if not isinstance(error, _Retry):
                log.exception("delivery %s: attempt failed", delivery_id)
            return self._retry_later(delivery_id, worker_id, _describe(error), getattr(error, "retry_after", None),
                                     getattr(error, "max_attempts", None))  # fmt: skip

    def _process(self, delivery_id: str, worker_id: str) -> dict[str, Any] | None:
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            row = tx.deliveries.get_leased(delivery_id, worker_id)
        if row is None:
            return None
        try:
            hook = self.registry.get(row["hook"])
        except (UnknownHook, BrokenHook) as error:
            kind = (
                "is no longer configured"
                if isinstance(error, UnknownHook)
                else "has an invalid configuration"
            )
            raise _Retry(f"hook {row['hook']!r} {kind}") from None
        plans = self._plan(hook, row)
        # Remote actions first, outside any transaction: no database lock is held over the network.
        # Their keys are the same on every automatic retry (the remote replays its first answer)
        # and new for an operator's replay (which should act again, e.g. after a fix).
        remote: dict[tuple[int, int], dict[str, Any]] = {}
        for e, (_, plan, _) in enumerate(plans):
            for a, action in enumerate(plan.actions if plan else []):
                if action["target"] != "local":
                    remote[(e, a)] = self._run_remote(
                        hook, action, f"{delivery_id}:r{row['replays']}:{e}:{a}"
                    )
        with self.db.transaction() as tx:
            if tx.deliveries.load_leased(delivery_id, worker_id) is None:
                return None  # the lease was lost while the remote calls ran
            results, failed = [], False
            for e, (entry, plan, event) in enumerate(plans):
                if plan is None:
                    results.append(entry)
                    failed = True
                    continue
                if not plan.matched:
                    entry["unmatched"] = True
                    failed = failed or hook.on_unmatched == "fail"
                caller = hook_caller(row["org_id"], hook.name, row["request_id"], delivery_id=delivery_id,
                                     rule=", ".join(plan.rules) or None, event=event["dedupe_key"])  # fmt: skip
                for a, action in enumerate(plan.actions):
                    outcome = remote[(e, a)] if (e, a) in remote else self.local.run(caller, action)
                    entry["actions"].append({**_public(action), "outcome": outcome})
                    failed = failed or outcome["status"] == "failed"
                results.append(entry)
            status = DeliveryStatus.FAILED if failed else DeliveryStatus.PROCESSED
            if not tx.deliveries.finish(delivery_id, worker_id, {"status": status.value, "results": results,
                                                                 "processed_at": now, "updated_at": now}):  # fmt: skip
                raise _Retry("the lease was lost")  # roll back every local action of this attempt
            caller = hook_caller(row["org_id"], hook.name, row["request_id"], delivery_id=delivery_id)
            record(tx, caller, _tag(caller, "failed" if failed else "processed"), "delivery", delivery_id,
                   {"hook": hook.name, "status": status.value, **_summary(results)}, now)  # fmt: skip
            row.update(status=status.value, results=results, processed_at=now)
            return row

    @staticmethod
    def _plan(hook: Hook, row: dict[str, Any]) -> list[tuple[dict[str, Any], Any, dict[str, Any]]]:
        """Each event with its plan (None when the rules could not be evaluated for it)."""
        body = parse_body(row["body"], row["content_type"])
        plans = []
        for event in row["events"]:
            ctx = event_context(hook=hook.name, event=event, body=body, headers=row["headers"], query=row["query"],
                                received_at=format_time(row["received_at"]))  # fmt: skip
            entry: dict[str, Any] = {"dedupe_key": event["dedupe_key"], "kind": event["kind"], "actions": []}
            try:
                plan = hook.plan(ctx)
            except EvaluationError as error:
                plans.append(({**entry, "rules": [], "error": str(error)}, None, event))
                continue
            plans.append(({**entry, "rules": plan.rules}, plan, event))
        return plans

    @staticmethod
    def _run_remote(hook: Hook, action: dict[str, Any], key: str) -> dict[str, Any]:
        target = hook.targets.get(action["target"])
        if target is None or target.client is None:
            return {
                "status": "failed",
                "code": "unknown_target",
                "message": f"no remote target {action['target']!r}",
            }
        try:
            return target.client.run(action, key)
        except Transient as error:
            raise _Retry(error.message, error.retry_after, error.max_attempts) from None
        except ValueError as error:
            return {"status": "failed", "code": "invalid_action", "message": str(error)}

    def _retry_later(self, delivery_id: str, worker_id: str, message: str, retry_after: float | None = None,
                     max_attempts: int | None = None) -> dict[str, Any] | None:  # fmt: skip
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.deliveries.load_leased(delivery_id, worker_id)
            if row is None:
                return None
            errors = [
                *(row["errors"] or []),
                {"at": format_time(now), "attempt": row["attempts"], "error": message},
            ]
            caller = hook_caller(row["org_id"], row["hook"], row["request_id"], delivery_id=delivery_id)
            if row["attempts"] >= (max_attempts or self.max_attempts):
                values = {"status": DeliveryStatus.DEAD.value, "errors": errors, "next_attempt_at": None,
                          "updated_at": now}  # fmt: skip
                record(tx, caller, _tag(caller, "dead"), "delivery", delivery_id,
                       {"hook": row["hook"], "attempts": row["attempts"], "error": message}, now)  # fmt: skip
            else:
                delay = min(self.retry_max, self.retry_base * 2 ** (row["attempts"] - 1))
                delay *= 0.5 + self.rng.random()  # jitter: a burst of failures does not retry in step
                delay = max(delay, min(retry_after or 0, self.retry_max))  # the server's Retry-After
                values = {"status": DeliveryStatus.QUEUED.value, "errors": errors, "updated_at": now,
                          "next_attempt_at": now + timedelta(seconds=delay)}  # fmt: skip
            tx.deliveries.finish(delivery_id, worker_id, values)
            row.update(values)
            return row

    # The operator's view -------------------------------------------------------------------------

    def list_deliveries(self, caller: Caller, *, hook: str | None, statuses: list[str] | None,
                        since: datetime | None, until: datetime | None, cursor: str | None,
                        limit: int) -> CursorPage:  # fmt: skip
        before = None
        if cursor:
            position = decode_cursor(cursor, {"at": str, "id": str})
            try:
                before = (datetime.fromisoformat(position["at"]), position["id"])
            except ValueError:
                raise BadRequest("cursor is not valid", code="invalid_cursor") from None
        with self.db.transaction(write=False) as tx:
            rows = tx.deliveries.list_deliveries(caller.org_id, hook=hook, statuses=statuses, since=since,
                                                 until=until, before=before, limit=limit + 1)  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            encode_cursor({"at": rows[-1]["received_at"].isoformat(), "id": rows[-1]["id"]}) if more else None
        )
        return CursorPage([delivery_to_api(r) for r in rows], limit, next_cursor)

    def get_delivery(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
        if row is None:
            raise NotFound(f"No delivery with id {delivery_id}.")
        return delivery_to_api(row, detail=True)

    def replay(self, caller: Caller, delivery_id: str) -> dict[str, Any]:
        """Queue a processed, failed or dead delivery again. Raises :class:`NotFound`, or
        :class:`Conflict` ``not_replayable`` for one that is queued, in progress, rejected or ignored."""
        from seqbridge.errors import Conflict

        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.deliveries.get_delivery(caller.org_id, delivery_id)
            if row is None:
                raise NotFound(f"No delivery with id {delivery_id}.")
            if not tx.deliveries.requeue(caller.org_id, delivery_id, now, tuple(s.value for s in REPLAYABLE)):
                raise Conflict(f"A {row['status']} delivery cannot be replayed.", code="not_replayable",
                               details={"status": row["status"]})  # fmt: skip
            record(tx, caller, _tag_for(caller, "delivery", "replayed"), "delivery", delivery_id,
                   {"hook": row["hook"], "previous_status": row["status"]}, now)  # fmt: skip
            return delivery_to_api(tx.deliveries.get_delivery(caller.org_id, delivery_id), detail=True)

    def replay_many(self, caller_for_org, *, statuses: list[str], since: datetime | None, hook: str | None,
                    org_id: str | None, limit: int = 10_000) -> list[str]:  # fmt: skip
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

        hook = self.hook(hook_name)
        if hook.organization != self._org_name(caller):
            raise NotFound(f"No hook named {hook_name!r}.", code="hook_not_found")
        request = build_request(spec, Path(hook.file).parent, hook.name)
        try:
            results = simulate(hook, request, format_time(self.clock.now()))
        except MalformedPayload as error:
            raise BadRequest(f"The body is not what {hook.connector_name} sends: {error}",
                             code="malformed_payload") from None  # fmt: skip
        return {"hook": hook.name, "connector": hook.connector_name, "events": results}

    def _org_name(self, caller: Caller) -> str:
        with self.db.transaction(write=False) as tx:
            org = tx.orgs.get_org(caller.org_id)
        return org["name"] if org else ""

    def counts(self) -> dict[str, int]:
        with self.db.transaction(write=False) as tx:
            return tx.deliveries.count_by_status()


def _unique(events: list[InboundEvent]) -> list[InboundEvent]:
    seen: set[str] = set()
    out = []
    for event in events:
        if event.dedupe_key not in seen:
            seen.add(event.dedupe_key)
            out.append(event)
    return out


def _public(action: dict[str, Any]) -> dict[str, Any]:
    return redact(action)


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for entry in results:
        for action in entry.get("actions", []):
            status = action["outcome"]["status"]
            counts[status] = counts.get(status, 0) + 1
    return {
        "events": len(results),
        "rules": sorted({r for e in results for r in e.get("rules", [])}),
        "unmatched": sum(1 for e in results if e.get("unmatched")),
        "actions": counts,
    }


def _describe(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message}"[:1000]


__all__ = ["DeliveryService", "DeliveryStatus", "Received", "replace"]
