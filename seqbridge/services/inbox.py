"""The webhook inbox: find the hook, rate-limit, verify, parse, deduplicate and store — all before
the sender gets its answer.

A delivery's receipt (its raw body, redacted headers and dedupe keys) is committed before the
2xx; concurrent deliveries share one commit (:mod:`seqbridge.services.group_commit`), and so do
rejected requests, which are recorded all the same. Its ``received`` (or ``rejected``) audit
event is written later, by the worker that claims it (:mod:`seqbridge.services.receipts`). A
repeat of a dedupe key acts on nothing and answers with the original delivery: what became of
it and where to replay it. How a receipt is made and written is :mod:`seqbridge.services.intake`;
processing is :mod:`seqbridge.services.deliveries`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from connectors.base import InboundEvent, InboundRequest, MalformedPayload, VerificationError, body_hash
from seqbridge import strictjson
from seqbridge.clock import Clock
from seqbridge.errors import BadRequest, HookMisconfigured, NotFound, SignatureRejected
from seqbridge.mapping.hooks import Hook
from seqbridge.mapping.registry import BrokenHook, HookRegistry, UnknownHook
from seqbridge.services.common import format_time, new_id
from seqbridge.services.group_commit import GroupCommit
from seqbridge.services.intake import (
    REPLAYABLE,
    DeliveryStatus,
    Receipt,
    Received,
    delivery_tag,
    hook_caller,
    key_expiry,
    receipt_values,
    stored_events,
    write_receipts,
)
from seqbridge.storage.db import Database
from seqbridge.storage.deliveries import receipt_time
from seqbridge.storage.schema import delivery_keys
from seqbridge.storage.wakeup import wake_workers

log = logging.getLogger("seqbridge.deliveries")

_KEY_LENGTH = delivery_keys.c.dedupe_key.type.length
#: The stored events of a delivery whose events the connector reads again from its request.
_LAZY_EVENTS = "null"
#: How often a hook's rejections make a log line at most (each is in the audit log and /metrics).
_REJECTION_LOG_SECONDS = 10.0

__all__ = ["REPLAYABLE", "DeliveryStatus", "Inbox", "Received", "delivery_tag", "hook_caller"]


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
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: dict[str, Any],
        process: Callable[[str, str], dict[str, Any] | None],
    ) -> None:
        """``process(delivery_id, lease_owner)`` runs a delivery at once (``respond: after_actions``)."""
        self.db = db
        self.clock = clock
        self.settings = settings
        self.process = process
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])
        self._registry: HookRegistry | None = None
        self._orgs: dict[str, tuple[str, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._time = receipt_time(db.engine.dialect.name)
        self._commit: GroupCommit[Receipt] = GroupCommit(
            self._write_receipts,
            lock=db.write_lock,
            # SQLite: the workers' wake-up datagrams go once the write lock is free again.
            after=db.announcer.announce if db.is_sqlite else None,
        )
        self._rejections = _RejectionLog()
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
        try:
            hook.connector.verify(request, now)
        except VerificationError as error:
            self._reject(org_id, hook, request, request_id, error.reason, now, keep_body=False)
            raise SignatureRejected(error.message, code=error.reason) from None
        except MalformedPayload as error:  # verifying needed the body read, and it cannot be
            self._reject(org_id, hook, request, request_id, "malformed_payload", now, keep_body=False)
            raise _malformed(hook, error) from None
        try:
            parsed = hook.connector.parse(request)
            events = _storable(parsed, request)
        except MalformedPayload as error:
            self._reject(org_id, hook, request, request_id, "malformed_payload", now, keep_body=True)
            raise _malformed(hook, error) from None
        # Stored events only when reading the request again would not give the same ones.
        lazy = len(events) == len(parsed) and all(a is b for a, b in zip(events, parsed, strict=True))
        return self._store(org_id, hook, request, request_id, events, lazy, now)

    def _secret_header(self, hook: Hook) -> str | None:
        """The hook's own token header (redacted whatever it is called)."""
        return getattr(getattr(hook.connector, "auth", None), "header", None)

    def _reject(
        self,
        org_id: str,
        hook: Hook,
        request: InboundRequest,
        request_id: str | None,
        reason: str,
        now: datetime,
        *,
        keep_body: bool,
    ) -> None:
        """Record a refused request (body kept only when it was verified) in the next shared
        commit; its ``rejected`` audit event is the worker's to write."""
        delivery_id = new_id()
        values = receipt_values(
            self._time,
            delivery_id=delivery_id,
            org_id=org_id,
            hook=hook.name,
            status=DeliveryStatus.REJECTED,
            now=now,
            request_id=request_id,
            request=request,
            secret_header=self._secret_header(hook),
            body=request.body if keep_body else None,
            events_json="[]",
            reject_reason=reason,
        )
        receipt = Receipt(delivery_id, org_id, hook.name, request_id, DeliveryStatus.REJECTED, values, [], [])
        self._commit.submit(receipt)
        self._rejections.note(hook.name, reason)

    def _store(
        self,
        org_id: str,
        hook: Hook,
        request: InboundRequest,
        request_id: str | None,
        events: list[InboundEvent],
        lazy: bool,
        now: datetime,
    ) -> Received:
        inline = bool(events) and hook.respond == "after_actions"
        if not events:
            status = DeliveryStatus.IGNORED
        else:
            status = DeliveryStatus.PROCESSING if inline else DeliveryStatus.QUEUED
        delivery_id = new_id()
        values = receipt_values(
            self._time,
            delivery_id=delivery_id,
            org_id=org_id,
            hook=hook.name,
            status=status,
            now=now,
            request_id=request_id,
            request=request,
            secret_header=self._secret_header(hook),
            body=request.body,
            events_json=_LAZY_EVENTS if lazy else json.dumps(stored_events(events)),
            lease=(f"inline:{delivery_id}", now + self.lease) if inline else None,
            processed=not events,
            # An opt-out jumps the queue: decided here from the parsed events (a rule's ``when``
            # only, and only for a hook with a prioritised rule), stored in the same INSERT.
            priority=(
                hook.priority_of(events, request, format_time(now))
                if hook.prioritised and status == DeliveryStatus.QUEUED
                else 0
            ),
        )
        keys = [(e.dedupe_key, key_expiry(e, now, hook.dedupe_window)) for e in events]
        received = self._commit.submit(
            Receipt(delivery_id, org_id, hook.name, request_id, status, values, keys, events)
        )
        if inline and received.status == "queued":
            return self._respond_after_actions(hook, received.delivery_id, received.events)
        return received

    def _write_receipts(self, receipts: list[Receipt]) -> list[Received]:
        """Store a batch of receipts in one transaction (the group commit's writer)."""
        with self.db.transaction() as tx:
            if self.db.is_postgresql:  # SQLite's wake-up goes after the group commit's lock instead
                wake_workers(tx)
            return write_receipts(tx, receipts, self.clock.now())

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


def _may_hold_nul(request: InboundRequest) -> bool:
    """Could any event of this request hold U+0000? Not if neither the body, the query nor the
    headers hold it in any spelling (raw, JSON's escape, a form's %00): most requests."""
    body = request.body
    if b"\x00" in body or b"\\u0000" in body or b"%00" in body:
        return True
    return any("\x00" in v for v in request.headers.values()) or any(
        "\x00" in k or any("\x00" in v for v in values) for k, values in request.query.items()
    )


def _storable(events: list[InboundEvent], request: InboundRequest) -> list[InboundEvent]:
    """The events, each once, ready to store: a dedupe key longer than its column becomes its
    SHA-256 (still unique, still the same on a retry). Raises :class:`MalformedPayload` for text
    holding U+0000, which no PostgreSQL text or jsonb can store. Events that need no change are
    returned as they are (the same objects)."""
    check = _may_hold_nul(request)
    seen: set[str] = set()
    out = []
    for event in events:
        if check:
            where = strictjson.find_nul(
                {"dedupe_key": event.dedupe_key, "kind": event.kind, "data": event.data}
            )
            if where is not None:
                raise MalformedPayload(f"{where} holds the NUL character (U+0000), which cannot be stored")
        if len(event.dedupe_key) > _KEY_LENGTH:
            event = replace(event, dedupe_key="sha256:" + body_hash(event.dedupe_key.encode()))
        if event.dedupe_key not in seen:
            seen.add(event.dedupe_key)
            out.append(event)
    return out


class _RejectionLog:
    """One warning line per hook every :data:`_REJECTION_LOG_SECONDS` at most, with the counts
    since the last: a flood of bad signatures must not become a flood of log lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}
        self._next: dict[str, float] = {}

    def note(self, hook: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            counts = self._counts.setdefault(hook, Counter())
            counts[reason] += 1
            if now < self._next.get(hook, 0.0):
                return
            self._next[hook] = now + _REJECTION_LOG_SECONDS
            summary = ", ".join(f"{why} x{n}" for why, n in counts.most_common())
            total = sum(counts.values())
            counts.clear()
        log.warning("hook %s rejected %d request(s) since its last report: %s", hook, total, summary)
