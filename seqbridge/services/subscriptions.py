"""REST hooks: Seqbridge as a trigger for Zapier, n8n and anything else that takes a webhook.

A subscriber registers ``{target_url, event}``. Events are read from the audit log, which is
written in the same transaction as the change it describes: nothing on the request path knows
about subscriptions, and an event is never announced for a change that was rolled back. A
subscription keeps a cursor into its organization's audit chain (appends to one chain are
serialised, so ids within an organization commit in order); the relay turns new matching events
into notifications, and the worker sends them signed with Standard Webhooks, retrying with
backoff. A target that answers 410 Gone is unsubscribed, and one that fails for
``HOOK_DISABLE_AFTER_SECONDS`` is disabled, with an audit event saying so.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from connectors.net import AddressRefused, check_address
from seqbridge.audit import SOURCES, record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import BadRequest, NotFound
from seqbridge.jobs import Done, Failed, Outcome, Retry
from seqbridge.services.common import CursorPage, decode_time_cursor, format_time, new_id, time_cursor
from seqbridge.services.contacts import contact_to_api
from seqbridge.services.deliveries import delivery_to_api
from seqbridge.signing import derived_secret, master_secret
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx

#: Each event a subscriber can ask for, and the audit events (subject, action) it stands for.
EVENTS: dict[str, tuple[str, str]] = {
    "enrollment.created": ("enrollment", "created"),
    "enrollment.completed": ("enrollment", "completed"),
    "enrollment.exited": ("enrollment", "exited"),
    "contact.unsubscribed": ("contact", "unsubscribed"),
    "delivery.dead": ("delivery", "dead"),
}
_TAGS = {event: [f"{s}:{subject}:{action}" for s in SOURCES] for event, (subject, action) in EVENTS.items()}
_EVENT_OF_TAG = {tag: event for event, tags in _TAGS.items() for tag in tags}
_NAMESPACE = uuid.UUID("0b6c5a52-58e4-4e0f-9a43-52b1f8b1c2d7")
#: Audit events read per subscription per relay pass.
RELAY_BATCH = 500


def subscription_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event": row["event"],
        "target_url": row["target_url"],
        "status": row["status"],
        "created_at": format_time(row["created_at"]),
        "failing_since": format_time(row["failing_since"]),
        "last_success_at": format_time(row["last_success_at"]),
        "last_failure_at": format_time(row["last_failure_at"]),
        "last_error": row["last_error"],
        "disabled_at": format_time(row["disabled_at"]),
        "disabled_reason": row["disabled_reason"],
    }


def _origin(url: str) -> str:
    """What the audit log keeps of a target URL: a Zapier hook URL is itself a credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


#: What a send the target answered 410 Gone comes to (``Failed(detail, GONE)``): the target
#: wants no more, so the subscription goes, as REST hooks ask.
GONE = "gone"


class SubscriptionService:
    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any]) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self._master: str | None = None
        self.allow_private = settings["ALLOW_PRIVATE_TARGETS"]
        self.disable_after = timedelta(seconds=settings["HOOK_DISABLE_AFTER_SECONDS"])

    # The subscriber's API ----------------------------------------------------------------------

    def subscribe(self, caller: Caller, target_url: str, event: str) -> dict[str, Any]:
        """Start sending ``event`` to ``target_url``; the answer carries the signing secret, the
        only time it is shown. Raises :class:`BadRequest` for an unknown event or a refused URL."""
        _check_event(event)
        try:
            check_address(target_url, self.allow_private)
        except AddressRefused as refused:
            raise BadRequest(f"target_url is refused: {refused.message}", code="target_refused") from None
        now = self.clock.now()
        row = {
            "id": new_id(),
            "org_id": caller.org_id,
            "event": event,
            "target_url": target_url,
            "status": "active",
            "created_by": caller.actor.id,
            "created_at": now,
            "updated_at": now,
            "failing_since": None,
            "last_success_at": None,
            "last_failure_at": None,
            "last_error": None,
            "disabled_at": None,
            "disabled_reason": None,
        }
        with self.db.transaction() as tx:
            # Only what happens from now on: the cursor starts at the chain's newest event.
            row["audit_cursor"] = tx.subscriptions.audit_head(caller.org_id)
            tx.subscriptions.insert_subscription(row)
            record(
                tx,
                caller,
                tag_for(caller, "hook_subscription", "created"),
                "hook_subscription",
                row["id"],
                {"event": event, "target": _origin(target_url)},
                now,
            )
        return {**subscription_to_api(row), "secret": self.secret_of(row["id"])}

    def secret_of(self, subscription_id: str) -> str:
        """The subscription's signing secret, derived from the master secret (never stored)."""
        if self._master is None:
            self._master = master_secret(self.settings)
        return derived_secret(self._master, f"rest-hook:{subscription_id}")

    def unsubscribe(self, caller: Caller, subscription_id: str) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.subscriptions.get_subscription(caller.org_id, subscription_id)
            if row is None or not tx.subscriptions.delete_subscription(caller.org_id, subscription_id):
                raise NotFound(
                    f"No hook subscription with id {subscription_id}.", code="subscription_not_found"
                )
            record(
                tx,
                caller,
                tag_for(caller, "hook_subscription", "deleted"),
                "hook_subscription",
                subscription_id,
                {"event": row["event"], "target": _origin(row["target_url"]), "reason": "unsubscribed"},
                now,
            )

    def get(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        with self.db.transaction(write=False) as tx:
            row = tx.subscriptions.get_subscription(caller.org_id, subscription_id)
        if row is None:
            raise NotFound(f"No hook subscription with id {subscription_id}.", code="subscription_not_found")
        return subscription_to_api(row)

    def list(self, caller: Caller, *, event: str | None, cursor: str | None, limit: int) -> CursorPage:
        after = decode_time_cursor(cursor)
        with self.db.transaction(write=False) as tx:
            rows = tx.subscriptions.list_subscriptions(
                caller.org_id, event=event, after=after, limit=limit + 1
            )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = time_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return CursorPage([subscription_to_api(r) for r in rows], limit, next_cursor)

    def samples(self, caller: Caller, event: str, limit: int = 3) -> list[dict[str, Any]]:
        """Zapier's "perform list": the newest real events of this kind, shaped exactly like the
        notifications, or one example when there are none yet."""
        _check_event(event)
        with self.db.transaction(write=False) as tx:
            rows = tx.audit.list_events(caller.org_id, tags=_TAGS[event], limit=limit)
            payloads = [_payload(tx, row) for row in rows]
        return payloads or [_EXAMPLES[event]]

    # Relay: audit events → notifications -------------------------------------------------------

    def relay(self, limit: int = 100) -> int:
        """Queue a notification for each new audit event that an active subscription asked for;
        return how many were queued. Everything is read (and the payloads built) in one read
        transaction; the cursors then move in one write transaction, each with a compare-and-set,
        so two workers never queue one event twice and a poll takes the write lock once at most."""
        now = self.clock.now()
        moves = []
        with self.db.transaction(write=False) as tx:
            for sub in tx.subscriptions.behind(limit):
                events = tx.audit.list_events(
                    sub["org_id"],
                    tags=_TAGS[sub["event"]],
                    after_id=sub["audit_cursor"],
                    descending=False,
                    limit=RELAY_BATCH,
                )
                rows = [_notification(sub, event, _payload(tx, event), now) for event in events]
                # Every event up to the head read with the subscription was visible to the read
                # above (a chain's events commit in id order), so a short batch skips to it.
                cursor = max([sub["head"] if len(events) < RELAY_BATCH else 0, *(e["id"] for e in events)])
                moves.append((sub, cursor, rows))
        if not moves:
            return 0
        queued = 0
        with self.db.transaction() as tx:
            for sub, cursor, rows in moves:
                if tx.subscriptions.advance(sub["id"], sub["audit_cursor"], cursor, rows):
                    queued += len(rows)
        return queued

    # Sending ------------------------------------------------------------------------------------

    def claim(self, worker_id: str, limit: int, lease: timedelta) -> list[dict[str, Any]]:
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.subscriptions.any_due(now):  # an idle poll only reads
                return []
        with self.db.transaction() as tx:
            return tx.subscriptions.claim_due(now, worker_id, now + lease, limit)

    def record_outcome(self, notification: dict[str, Any], worker_id: str, outcome: Outcome) -> str:
        """Apply one send's outcome to the notification and its subscription; return the
        notification's new status: ``sent`` (:class:`Done`), ``pending`` (:class:`Retry`),
        ``failed`` (:class:`Failed`, or :class:`Dead` out of attempts), or ``gone`` when the
        target answered 410 (``Failed(detail, GONE)``) or the subscription no longer exists."""
        now = self.clock.now()
        caller = Caller(notification["org_id"], Actor(ActorType.WORKER, worker_id))
        with self.db.transaction() as tx:
            sub = tx.subscriptions.lock_subscription(notification["subscription_id"])
            if sub is None:
                return "gone"
            if isinstance(outcome, Failed) and outcome.result == GONE:
                tx.subscriptions.delete_subscription(sub["org_id"], sub["id"])
                record(
                    tx,
                    caller,
                    tag_for(caller, "hook_subscription", "deleted"),
                    "hook_subscription",
                    sub["id"],
                    {
                        "event": sub["event"],
                        "target": _origin(sub["target_url"]),
                        "reason": f"the target answered {outcome.error}: unsubscribed, as REST hooks ask",
                    },
                    now,
                )
                return "gone"
            if isinstance(outcome, Done):
                tx.subscriptions.finish(
                    notification["id"],
                    worker_id,
                    {
                        "status": "sent",
                        "sent_at": now,
                        "last_error": None,
                        "next_attempt_at": None,
                        "updated_at": now,
                    },
                )
                tx.subscriptions.update_subscription(
                    sub["id"], {"failing_since": None, "last_success_at": now, "updated_at": now}
                )
                return "sent"
            detail = outcome.error or "failed"
            status = "pending" if isinstance(outcome, Retry) else "failed"
            tx.subscriptions.finish(
                notification["id"],
                worker_id,
                {
                    "status": status,
                    "last_error": detail,
                    "updated_at": now,
                    "next_attempt_at": outcome.at if isinstance(outcome, Retry) else None,
                },
            )
            failing_since = sub["failing_since"] or now
            values = {
                "failing_since": failing_since,
                "last_failure_at": now,
                "last_error": detail,
                "updated_at": now,
            }
            if sub["status"] == "active" and now - failing_since >= self.disable_after:
                reason = (
                    f"every send has failed since {format_time(failing_since)} "
                    f"(last: {detail}); re-subscribe to start again"
                )
                values.update(status="disabled", disabled_at=now, disabled_reason=reason)
                dropped = tx.subscriptions.drop_pending(sub["id"], "the subscription was disabled", now)
                record(
                    tx,
                    caller,
                    tag_for(caller, "hook_subscription", "disabled"),
                    "hook_subscription",
                    sub["id"],
                    {
                        "event": sub["event"],
                        "target": _origin(sub["target_url"]),
                        "reason": reason,
                        "notifications_dropped": dropped,
                    },
                    now,
                )
            tx.subscriptions.update_subscription(sub["id"], values)
            return status


def _check_event(event: str) -> None:
    if event not in EVENTS:
        raise BadRequest(
            f"unknown event {event!r}; events are {', '.join(EVENTS)}",
            code="unknown_event",
            details={"events": list(EVENTS)},
        )


def _notification(sub: dict[str, Any], event: dict[str, Any], payload: dict[str, Any], now: datetime):
    return {
        "id": new_id(),
        "org_id": sub["org_id"],
        "subscription_id": sub["id"],
        "event": sub["event"],
        "audit_event_id": event["id"],
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
        "updated_at": now,
    }


def _payload(tx: Tx, event: dict[str, Any]) -> dict[str, Any]:
    """The body a subscriber receives for one audit event: ``{id, type, timestamp, data}``.

    ``id`` is the same for every subscriber of one event (receivers may dedupe on it). ``data``
    is the subject as it is now, with what the audit event says about the change (the exit
    reason, the actor); a subject deleted since is described by the audit event alone.
    """
    kind = _EVENT_OF_TAG[event["tag"]]
    audit = dict(event["data"] or {})
    org_id = event["org_id"]
    data: dict[str, Any] = {"id": event["subject_id"]}
    if kind.startswith("enrollment."):
        data.update(_enrollment(tx, org_id, event["subject_id"], audit))
    elif kind == "contact.unsubscribed":
        contact = tx.contacts.get_contact(org_id, event["subject_id"])
        if contact is not None:
            data.update(contact_to_api(contact, tx.contacts.tags_for([contact["id"]]).get(contact["id"], [])))
        data["previous_status"] = audit.get("from")
    elif kind == "delivery.dead":
        delivery = tx.deliveries.get_delivery(org_id, event["subject_id"])
        data.update(delivery_to_api(delivery) if delivery else {"hook": audit.get("hook")})
        data["error"] = audit.get("error")
    data["actor"] = {"type": event["actor_type"], "id": event["actor_id"]}
    if audit.get("via"):
        data["via"] = audit["via"]
    return {
        "id": str(uuid.uuid5(_NAMESPACE, f"{org_id}:{event['id']}")),
        "type": kind,
        "timestamp": format_time(event["occurred_at"]),
        "data": data,
    }


def _enrollment(tx: Tx, org_id: str, enrollment_id: str, audit: dict[str, Any]) -> dict[str, Any]:
    row = tx.enrollments.get_enrollment(org_id, enrollment_id)
    sequence_id = row["sequence_id"] if row else audit.get("sequence_id")
    contact_id = row["contact_id"] if row else audit.get("contact_id")
    out: dict[str, Any] = {"sequence_id": sequence_id, "contact_id": contact_id}
    if row is not None:
        out.update(
            status=row["status"],
            enrollment_source=row["enrollment_source"],
            enrolled_at=format_time(row["enrolled_at"]),
            completed_at=format_time(row["completed_at"]),
            exited_at=format_time(row["exited_at"]),
        )
    out["reason"] = audit.get("reason")
    name = tx.sequences.names(org_id, [sequence_id]).get(sequence_id) if sequence_id else None
    out["sequence"] = {"id": sequence_id, "name": name or audit.get("sequence_name")}
    contact = tx.contacts.get_contact(org_id, contact_id) if contact_id else None
    out["contact"] = {
        k: (contact or {}).get(k) for k in ("email", "phone", "first_name", "last_name", "status")
    }
    out["contact"]["id"] = contact_id
    return out


_EXAMPLE_CONTACT = {
    "id": "7d0c2c64-3f5e-4a53-9a37-0f0a3c9d9b11",
    "email": "ada@example.com",
    "phone": "+16505551234",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "status": "active",
}
_EXAMPLE_ENROLLMENT = {
    "id": "5f1b8f0e-9a1e-4c7e-8d55-2f0f7a6c1e21",
    "sequence_id": "c3a1f0de-2b7c-4f3e-9d11-6a8b0e4f2c10",
    "contact_id": _EXAMPLE_CONTACT["id"],
    "status": "active",
    "enrollment_source": "api",
    "enrolled_at": "2026-01-05T09:30:00Z",
    "completed_at": None,
    "exited_at": None,
    "reason": None,
    "sequence": {"id": "c3a1f0de-2b7c-4f3e-9d11-6a8b0e4f2c10", "name": "Welcome"},
    "contact": _EXAMPLE_CONTACT,
    "actor": {"type": "api_key", "id": "key_example"},
}
#: What perform-list shows before an organization has any event of a kind.
_EXAMPLES: dict[str, dict[str, Any]] = {
    "enrollment.created": {
        "id": "example",
        "type": "enrollment.created",
        "timestamp": "2026-01-05T09:30:00Z",
        "data": _EXAMPLE_ENROLLMENT,
    },
    "enrollment.completed": {
        "id": "example",
        "type": "enrollment.completed",
        "timestamp": "2026-01-19T09:30:00Z",
        "data": {
            **_EXAMPLE_ENROLLMENT,
            "status": "completed",
            "reason": "finished",
            "completed_at": "2026-01-19T09:30:00Z",
        },
    },
    "enrollment.exited": {
        "id": "example",
        "type": "enrollment.exited",
        "timestamp": "2026-01-07T14:02:00Z",
        "data": {
            **_EXAMPLE_ENROLLMENT,
            "status": "exited",
            "reason": "unsubscribed",
            "exited_at": "2026-01-07T14:02:00Z",
        },
    },
    "contact.unsubscribed": {
        "id": "example",
        "type": "contact.unsubscribed",
        "timestamp": "2026-01-07T14:02:00Z",
        "data": {
            **_EXAMPLE_CONTACT,
            "status": "unsubscribed",
            "previous_status": "active",
            "actor": {"type": "hook", "id": "whatsapp"},
        },
    },
    "delivery.dead": {
        "id": "example",
        "type": "delivery.dead",
        "timestamp": "2026-01-07T14:02:00Z",
        "data": {
            "id": "0e2f4a6c-8b1d-4e3f-a5c7-9d0b2e4f6a81",
            "hook": "zapier",
            "status": "dead",
            "attempts": 8,
            "error": "HTTP 503 from crm",
            "actor": {"type": "worker", "id": "host:1234"},
        },
    },
}
