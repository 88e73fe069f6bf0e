"""A remote backend speaking the sequences dialect (seed 003): enroll by email or customer_id,
``enroll_bulk`` in chunks of 1000, unenroll by finding the active enrollment and deleting it
with a reason."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connectors.remote import RemoteTarget, chunks, contact_of, done, failed, identifiers, skipped

BULK_CHUNK = 1000
PAGE = 100


class SequencesApi(RemoteTarget):
    type = "sequences_api"
    actions = frozenset({"enroll", "unenroll", "bulk_enroll"})

    def _base(self, action: dict[str, Any]) -> str:
        return f"/api/v1/sequences/{quote(self.resolve_sequence(action), safe='')}"

    def _enroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        contact = contact_of(action)
        body = (
            {"customer_id": contact["id"]}
            if "id" in contact
            else {"email": contact["email"]}
            if "email" in contact
            else None
        )
        if body is None:
            return failed(
                "missing_contact", f"{self.name}: the sequences dialect enrolls by email or customer_id"
            )
        if isinstance(action.get("data"), dict):
            body["enrollment_data"] = action["data"]
        response = self.call("POST", self._base(action) + "/enroll", key=key, json=body)
        remote = (response.json().get("data") or {}) if response.status_code in (200, 201) else {}
        return self.outcome(response, "the sequence", enrollment_id=remote.get("id"))

    def _bulk_enroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        items = action.get("contacts")
        if not isinstance(items, list):
            return failed("invalid_contacts", "bulk_enroll contacts must be a list of emails or ids")
        values = identifiers(items)
        enrolled = skipped_count = 0
        for n, chunk in enumerate(chunks(values, BULK_CHUNK)):
            body = {
                "customer_ids": [v for v in chunk if "@" not in v],
                "emails": [v for v in chunk if "@" in v],
            }
            response = self.call(
                "POST", self._base(action) + "/enroll_bulk", key=f"{key}:chunk{n}", json=body
            )
            if response.status_code != 200:
                return self.outcome(response, "the sequence", enrolled=enrolled, chunks_done=n)
            data = response.json().get("data") or {}
            enrolled += int(data.get("enrolled", 0))
            skipped_count += int(data.get("skipped", 0))
        return done(enrolled=enrolled, skipped=skipped_count)

    def _unenroll(self, action: dict[str, Any], key: str) -> dict[str, Any]:
        if action.get("sequence", action.get("queue")) == "*":
            return failed("unsupported", f'{self.name}: unenroll from "*" works on the local target only')
        contact = contact_of(action)
        contact_id = contact.get("id")
        if contact_id is None and "email" in contact:
            found = self.call("GET", "/api/v1/customers", params={"email": contact["email"]})
            if found.status_code != 200:  # e.g. 403: the key lacks contacts:read
                return self.outcome(found, "the contact")
            rows = found.json().get("data") or []
            if not rows:
                return skipped("not_enrolled", f"{self.name} has no contact with email {contact['email']}")
            contact_id = rows[0]["id"]
        if contact_id is None:
            return failed("missing_contact", f"{self.name}: unenroll needs the contact's email or id")
        base = self._base(action)
        offset = 0
        while True:  # the active enrollment of this contact
            page = self.call(
                "GET", base + "/enrollments", params={"status": "active", "limit": PAGE, "offset": offset}
            )
            if page.status_code != 200:
                return self.outcome(page, "the sequence")
            rows = page.json().get("data") or []
            match = next((r for r in rows if contact_id in (r.get("contact_id"), r.get("customer_id"))), None)
            if match is not None:
                break
            if len(rows) < PAGE:
                return skipped("not_enrolled", f"the contact is not actively enrolled in {self.name}")
            offset += PAGE
        reason = str(action.get("reason") or "unenrolled")
        response = self.call(
            "DELETE", f"{base}/enrollments/{quote(match['id'], safe='')}", key=key, params={"reason": reason}
        )
        return self.outcome(response, "the enrollment", enrollment_id=match["id"], reason=reason)
