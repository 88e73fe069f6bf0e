"""A remote backend speaking the event-queue dialect (seed 000): everything goes through
``bulk-enroll`` — ids in chunks of 500, emails as a ``contact_filter`` in chunks of 500 (the
dialect matches a list), filters followed through ``has_more``. The dialect has no unenroll; the
mapping validator refuses it for this target."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connectors.remote import RemoteTarget, chunks, contact_of, done, failed, identifiers, skipped

CHUNK = 500
MAX_PAGES = 1000


class EventQueuesApi(RemoteTarget):
    type = "event_queues_api"
    actions = frozenset({"enroll", "bulk_enroll"})

    def _post(self, action: dict[str, Any], body: dict[str, Any], key: str):
        path = f"/api/v1/event-queues/{quote(self.resolve_sequence(action), safe='')}/bulk-enroll"
        return self.call("POST", path, key=key, json=body)

    def _enroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        contact = contact_of(action)
        if "id" in contact:
            body: dict[str, Any] = {"contact_ids": [contact["id"]]}
        elif "email" in contact:
            body = {"contact_filter": {"email": contact["email"]}}
        else:
            return failed(
                "missing_contact", f"{self.name}: the event-queue dialect enrolls by contact id or email"
            )
        response = self._post(action, body, key)
        if response.status_code != 200:
            return self.outcome(response, "the queue")
        data = response.json().get("data") or {}
        if data.get("enrolled"):
            return done(enrolled=data["enrolled"])
        result = next(iter(data.get("results") or []), {})
        if not result:
            return skipped("no_match", f"{self.name} has no such contact")
        return skipped(
            result.get("code") or "skipped",
            result.get("reason") or "not enrolled",
            reason=result.get("reason"),
        )

    def _bulk_enroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        bodies: list[dict[str, Any]] = []
        if isinstance(action.get("filter"), dict):
            bodies.append({"contact_filter": action["filter"]})
        elif isinstance(action.get("customer_filter"), dict):
            bodies.append({"customer_filter": action["customer_filter"]})
        else:
            items = action.get("contacts")
            if not isinstance(items, list):
                return failed("invalid_contacts", "bulk_enroll contacts must be a list of emails or ids")
            values = identifiers(items)
            bodies += [{"contact_ids": c} for c in chunks([v for v in values if "@" not in v], CHUNK)]
            bodies += [
                {"contact_filter": {"email": c}} for c in chunks([v for v in values if "@" in v], CHUNK)
            ]
        enrolled = skipped_count = calls = 0
        for n, body in enumerate(bodies):
            for page in range(MAX_PAGES):  # same body again while has_more: each call takes the next 500
                response = self._post(action, body, f"{key}:chunk{n}:page{page}")
                calls += 1
                if response.status_code != 200:
                    return self.outcome(response, "the queue", enrolled=enrolled, calls=calls)
                data = response.json().get("data") or {}
                enrolled += int(data.get("enrolled", 0))
                skipped_count += int(data.get("skipped", 0))
                # A page may hold only skipped contacts; one that holds none cannot move on.
                if not data.get("has_more") or not (data.get("enrolled") or data.get("skipped")):
                    break
        return done(enrolled=enrolled, skipped=skipped_count, calls=calls)
