"""What happened to whom: the deliveries that acted on a contact, a search by provider id, and
a contact's timeline (its audit events and its enrollments', and the deliveries that caused them).

A delivery's actions are recorded under the hook with ``data.via.delivery_id`` (see
:mod:`seqbridge.audit`), so the audit log already links a contact to every delivery that touched
it: no second index of "who was touched by what" is kept.
"""

from __future__ import annotations

from typing import Any

from seqbridge.context import Caller
from seqbridge.errors import NotFound
from seqbridge.services.audit_log import event_to_api
from seqbridge.services.deliveries import delivery_to_api
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx

#: The newest audit events a timeline reads.
TIMELINE_EVENTS = 200


def _via_delivery(event: dict[str, Any]) -> str | None:
    via = (event.get("data") or {}).get("via")
    return via.get("delivery_id") if isinstance(via, dict) else None


class ActivityService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def find_by_provider_id(self, caller: Caller, key: str) -> list[dict[str, Any]]:
        """The deliveries that carried this provider id (the dedupe key: a wamid, a MessageSid,
        a webhook-id …), on any hook, newest first."""
        with self.db.transaction(write=False) as tx:
            ids = tx.delivery_stats.find_by_dedupe_key(caller.org_id, key.strip())
            return [delivery_to_api(r) for r in tx.delivery_stats.summaries(caller.org_id, ids)]

    def deliveries_for_contacts(
        self, caller: Caller, contact_ids: list[str], limit: int = 50
    ) -> list[dict[str, Any]]:
        """The deliveries whose actions touched these contacts or their enrollments, newest first."""
        with self.db.transaction(write=False) as tx:
            events = self._events(tx, caller, contact_ids)
            ids = list(dict.fromkeys(i for i in map(_via_delivery, events) if i))[:limit]
            return [delivery_to_api(r) for r in tx.delivery_stats.summaries(caller.org_id, ids)]

    def contact_timeline(self, caller: Caller, contact_id: str) -> dict[str, Any]:
        """The contact's enrollments and a timeline, oldest first, of its newest audit events and
        its enrollments', each delivery that caused some of them appearing once, when it arrived.

        Raises :class:`NotFound` for an unknown contact (or another organization's)."""
        with self.db.transaction(write=False) as tx:
            contact = tx.contacts.get_contact(caller.org_id, contact_id)
            if contact is None:
                raise NotFound(f"No contact with id {contact_id}.")
            enrollments = tx.enrollments.enrollments_of_contact(caller.org_id, contact_id)
            names = {e["sequence_id"]: e["sequence_name"] for e in enrollments}
            events = tx.audit.events_about(
                caller.org_id,
                [("contact", contact_id)] + [("enrollment", e["id"]) for e in enrollments],
                TIMELINE_EVENTS,
            )
            delivery_ids = list(dict.fromkeys(i for i in map(_via_delivery, events) if i))
            deliveries = {
                d["id"]: d for d in tx.delivery_stats.summaries(caller.org_id, delivery_ids, with_events=True)
            }
        entries: list[dict[str, Any]] = []
        for delivery_id in delivery_ids:
            row = deliveries.get(delivery_id)
            if row is not None:  # pruned deliveries leave their audit events behind
                entries.append(
                    {
                        "kind": "delivery",
                        "at": row["received_at"],
                        "delivery": {**delivery_to_api(row), "events": row["events"]},
                    }
                )
        for event in events:
            sequence_id = (event["data"] or {}).get("sequence_id")
            entries.append(
                {
                    "kind": "audit",
                    "at": event["occurred_at"],
                    "event": event_to_api(event),
                    "sequence_name": names.get(sequence_id) if sequence_id else None,
                }
            )
        # Oldest first; at the same moment, a delivery comes before what it caused.
        entries.sort(
            key=lambda e: (e["at"], 0 if e["kind"] == "delivery" else 1, e.get("event", {}).get("id", 0))
        )
        return {"enrollments": enrollments, "timeline": entries, "truncated": len(events) >= TIMELINE_EVENTS}

    def delivery_audit(self, caller: Caller, delivery_id: str, hook: str) -> list[dict[str, Any]]:
        """The audit events a delivery caused, oldest first: its own (received, processed,
        replayed …) and, for each processing, what its actions recorded. Those are written in
        the processing's transaction, just before its ``processed`` / ``failed`` event and in one
        insert per organization, so they are the hook's events right before it."""
        with self.db.transaction(write=False) as tx:
            own = tx.audit.events_about(caller.org_id, [("delivery", delivery_id)], 100)
            caused: list[dict[str, Any]] = []
            for event in own:
                if event["actor_type"] != "hook" or not event["tag"].endswith(("processed", "failed")):
                    continue
                for earlier in tx.audit.events_by_actor_before(caller.org_id, hook, event["id"], 200):
                    if _via_delivery(earlier) != delivery_id:
                        break
                    caused.append(earlier)
        return [event_to_api(e) for e in sorted(own + caused, key=lambda e: e["id"])]

    def enrollment_counts(self, caller: Caller, kind: str, sequence_id: str) -> dict[str, int]:
        """How many enrollments a sequence or queue has in each status. Raises :class:`NotFound`."""
        with self.db.transaction(write=False) as tx:
            if tx.sequences.get_sequence(caller.org_id, sequence_id, str(kind)) is None:
                raise NotFound(f"No {str(kind).replace('_', ' ')} with id {sequence_id}.")
            return tx.enrollments.status_counts(sequence_id)

    def find_enrollment(self, caller: Caller, enrollment_id: str) -> dict[str, Any]:
        """An enrollment by id alone (sequence or queue). Raises :class:`NotFound`."""
        with self.db.transaction(write=False) as tx:
            row = tx.enrollments.get_enrollment(caller.org_id, enrollment_id)
        if row is None:
            raise NotFound(f"No enrollment with id {enrollment_id}.")
        return row

    @staticmethod
    def _events(tx: Tx, caller: Caller, contact_ids: list[str]) -> list[dict[str, Any]]:
        subjects = [("contact", c) for c in contact_ids]
        for contact_id in contact_ids:
            subjects += [
                ("enrollment", e["id"])
                for e in tx.enrollments.enrollments_of_contact(caller.org_id, contact_id)
            ]
        return tx.audit.events_about(caller.org_id, subjects, TIMELINE_EVENTS)
