"""The webhook inbox: find the hook, rate-limit, verify, parse, deduplicate and store — all before
the sender gets its answer.

A delivery is committed, with its dedupe keys, before the 2xx; concurrent deliveries share one
commit (:mod:`seqbridge.services.group_commit`). Its ``received`` (or ``rejected``) audit event is
written later, by the worker that claims it (:mod:`seqbridge.services.receipts`). A repeat of a
dedupe key acts on nothing and answers with the original delivery. Processing is
:mod:`seqbridge.services.deliveries`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from connectors.base import InboundEvent, InboundRequest, MalformedPayload, VerificationError, body_hash
from seqbridge import strictjson
from seqbridge.audit import REDACTED, record_each, redact
from seqbridge.audit import tag_for as _tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import BadRequest, HookMisconfigured, NotFound, SignatureRejected
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.common import new_id
from seqbridge.services.group_commit import GroupCommit
from seqbridge.storage.bulk import RawJSON
from seqbridge.storage.db import Database
from seqbridge.storage.schema import deliveries, delivery_keys

log = logging.getLogger("seqbridge.deliveries")

_KEY_LENGTH = delivery_keys.c.dedupe_key.type.length
_CONTENT_TYPE_LENGTH = deliveries.c.content_type.type.length


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


def hook_caller(org_id: str, hook: str, request_id: str | None, **via: Any) -> Caller:
    return Caller(org_id, Actor(ActorType.HOOK, hook), request_id, via={"hook": hook, **via})


def delivery_tag(caller: Caller, action: str):
    """``<source>:delivery:<action>`` for this caller (``hook:delivery:received``, …)."""
    return _tag_for(caller, "delivery", action)


def stored_headers(headers: dict[str, str], extra_secret: str | None = None) -> dict[str, str]:
    """The headers with secrets redacted: the audit log's rule (authorization, cookies, signatures,
    tokens, keys …) plus the hook's own token header, whatever it is called."""
    secret = extra_secret.lower() if extra_secret else None
    return redact({k: (REDACTED if k == secret else v) for k, v in headers.items()})


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


class Inbox:
    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any],
                 process: Callable[[str, str], dict[str, Any] | None]) -> None:  # fmt: skip
        """``process(delivery_id, lease_owner)`` runs a delivery at once (``respond: after_actions``)."""
        self.db = db
        self.clock = clock
        self.settings = settings
        self.process = process
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self._registry: HookRegistry | None = None
        self._orgs: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._commit: GroupCommit[_Arrival] = GroupCommit(self._write_arrivals, lock=db.write_lock)
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
        except MalformedPayload as error:  # verifying needed the body read, and it cannot be
            self._store_rejected(caller, hook, request, "malformed_payload", now, keep_body=False)
            raise _malformed(hook, error) from None
        try:
            events = _storable(hook.connector.parse(request))
        except MalformedPayload as error:
            self._store_rejected(caller, hook, request, "malformed_payload", now, keep_body=True)
            raise _malformed(hook, error) from None
        return self._store(caller, hook, request, events, now)

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
            "content_type": request.content_type[:_CONTENT_TYPE_LENGTH] or None,
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
            "receipt_audited": False,  # the worker writes its receipt's audit event (services.receipts)
        }

    def _store_rejected(self, caller: Caller, hook: Hook, request: InboundRequest, reason: str, now: datetime,
                        *, keep_body: bool) -> None:  # fmt: skip
        row = self._row(
            caller, hook, request, DeliveryStatus.REJECTED, now, request.body if keep_body else None, []
        )
        row["reject_reason"] = reason
        with self.db.transaction() as tx:
            tx.deliveries.insert_delivery(row)
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
        received = self._commit.submit(
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
                    continue
                owners = [claimed.get((caller.org_id, arrival.hook, key)) for key in keys]
                fresh = [key for key, owner in zip(keys, owners, strict=True) if owner == row["id"]]
                if not fresh:
                    duplicates.append(row["id"])
                    original = owners[0] or store.key_owner(caller.org_id, arrival.hook, keys[0])
                    results.append(Received(original, "duplicate", events=len(keys)))
                    audit.append((caller, delivery_tag(caller, "duplicate"), "delivery", original,
                                  {"hook": arrival.hook, "dedupe_keys": keys[:20]}))  # fmt: skip
                    continue
                if len(fresh) < len(keys):  # some events were seen before: keep only the new ones
                    store.set_events(row["id"], [e for e in arrival.events if e["dedupe_key"] in fresh])
                results.append(Received(row["id"], "queued", events=len(fresh)))
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


def _malformed(hook: Hook, error: MalformedPayload) -> BadRequest:
    return BadRequest(f"The body is not what {hook.connector_name} sends: {error}", code="malformed_payload")


def _storable(events: list[InboundEvent]) -> list[InboundEvent]:
    """The events, each once, ready to store: a dedupe key longer than its column becomes its
    SHA-256 (still unique, still the same on a retry). Raises :class:`MalformedPayload` for text
    holding U+0000, which no PostgreSQL text or jsonb can store."""
    seen: set[str] = set()
    out = []
    for event in events:
        where = strictjson.find_nul({"dedupe_key": event.dedupe_key, "kind": event.kind, "data": event.data})
        if where is not None:
            raise MalformedPayload(f"{where} holds the NUL character (U+0000), which cannot be stored")
        if len(event.dedupe_key) > _KEY_LENGTH:
            event = replace(event, dedupe_key="sha256:" + body_hash(event.dedupe_key.encode()))
        if event.dedupe_key not in seen:
            seen.add(event.dedupe_key)
            out.append(event)
    return out
