"""Factories for tests: build realistic objects through the API or, for volume, the store."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from seqbridge.storage.schema import contacts


def active_sequence(api, *, name="Welcome", steps=({"delay_days": 3},), **fields) -> dict[str, Any]:
    """An active sequence with the given steps (email steps unless a channel is given)."""
    created = api.post("/api/v1/sequences", json={"name": name, **fields})
    assert created.status_code == 201, created.json
    sequence = created.json["data"]
    for index, step in enumerate(steps):
        body = {"channel": "email", "subject": f"Step {index + 1}", "body": "Hello {{ first_name }}", **step}
        if body["channel"] == "webhook":
            body = {k: v for k, v in body.items() if k not in ("subject", "body")}
            body.setdefault("webhook_url", "https://hooks.example.com/in")
        response = api.post(f"/api/v1/sequences/{sequence['id']}/steps", json=body)
        assert response.status_code == 201, response.json
    activated = api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"})
    assert activated.status_code == 200, activated.json
    return activated.json["data"]


def contact(api, **fields) -> dict[str, Any]:
    fields.setdefault("email", f"{uuid.uuid4().hex[:10]}@example.com")
    response = api.post("/api/v1/contacts", json=fields)
    assert response.status_code == 201, response.json
    return response.json["data"]


def bulk_contacts(services, org_id: str, count: int, now, prefix="bulk", **overrides) -> list[dict[str, Any]]:
    """Insert ``count`` contacts in one statement (for volume tests); returns the rows."""
    rows = []
    for n in range(count):
        email = f"{prefix}{n}@example.com"
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "org_id": org_id,
                "email": email,
                "email_normalized": email,
                "phone": None,
                "first_name": f"F{n}",
                "last_name": None,
                "contact_type": None,
                "source": None,
                "job_title": None,
                "city": None,
                "state": None,
                "country": None,
                "status": "active",
                "converted": False,
                "has_open_ticket": False,
                "timezone": None,
                "company_id": None,
                "attributes": {},
                "created_at": now,
                "updated_at": now,
                **overrides,
            }
        )
    with services.db.transaction() as tx:
        tx.conn.execute(insert(contacts), rows)
    return rows


def org_id(api) -> str:
    return api.get("/api/v1/me").json["data"]["organization_id"]


def delivery(
    services,
    org_id: str,
    *,
    status: str = "processed",
    hook: str = "fixture",
    received_at=None,
    keys: tuple[str, ...] = (),
    took=None,
) -> str:
    """A stored webhook delivery (as the inbox would have stored it), owning the dedupe ``keys``,
    processed ``took`` (a timedelta) after its receipt; returns its id."""
    now = received_at or services.clock.now()
    row = {
        "id": str(uuid.uuid4()),
        "org_id": org_id,
        "hook": hook,
        "status": status,
        "received_at": now,
        "request_id": None,
        "method": "POST",
        "content_type": "application/json",
        "headers": {},
        "query": {},
        "body": b"{}",
        "body_size": 2,
        "events": [{"dedupe_key": "k", "kind": "event", "data": {}}],
        "reject_reason": None,
        "attempts": 1,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "results": [],
        "errors": [],
        "replays": 0,
        "processed_at": now + (took or timedelta(0)),
        "updated_at": now,
    }
    with services.db.transaction() as tx:
        tx.deliveries.insert_delivery(row)
        if keys:
            tx.deliveries.claim_keys([(org_id, hook, key, row["id"], None) for key in keys], now)
    return row["id"]
