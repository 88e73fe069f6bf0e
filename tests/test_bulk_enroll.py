"""Bulk enrollment: 1000 contacts with a realistic mix, in a bounded number of queries."""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import event

from tests.factories import active_sequence, bulk_contacts, contact, org_id


def test_thousand_contacts_with_a_mix_of_outcomes(api, services, clock):
    sequence = active_sequence(api)
    org = org_id(api)
    fresh = bulk_contacts(services, org, 700, clock.now(), prefix="fresh")
    enrolled_before = bulk_contacts(services, org, 100, clock.now(), prefix="already")
    ineligible = (
        bulk_contacts(services, org, 40, clock.now(), prefix="unsub", status="unsubscribed")
        + bulk_contacts(services, org, 30, clock.now(), prefix="conv", converted=True)
        + bulk_contacts(services, org, 30, clock.now(), prefix="ticket", has_open_ticket=True)
    )
    first = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk",
        json={"customer_ids": [c["id"] for c in enrolled_before]},
    )
    assert first.json["data"]["enrolled"] == 100

    customer_ids = (
        [c["id"] for c in fresh[:400]]
        + [c["id"] for c in enrolled_before]
        + [str(uuid.uuid4()) for _ in range(50)]
    )
    emails = (
        [c["email"].upper() for c in fresh[400:]]
        + [c["email"] for c in ineligible]
        + [f"ghost{n}@example.com" for n in range(50)]
    )
    assert len(customer_ids) + len(emails) == 1000
    response = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk",
        json={"customer_ids": customer_ids, "emails": emails, "enrollment_source": "import"},
    )
    assert response.status_code == 200
    data = response.json["data"]
    assert (data["enrolled"], data["skipped"]) == (700, 300)
    assert len(data["results"]) == 1000
    codes = Counter(r.get("code", r["status"]) for r in data["results"])
    assert codes == {"enrolled": 700, "already_enrolled": 100, "ineligible": 100, "customer_not_found": 100}
    reasons = Counter(r["reason"] for r in data["results"] if r.get("code") == "ineligible")
    assert reasons == {"contact_status:unsubscribed": 40, "converted_customer": 30, "active_ticket:open": 30}
    # Results come back in request order, ids first, then emails.
    assert data["results"][0] == {
        "customerId": fresh[0]["id"],
        "status": "enrolled",
        "enrollmentId": data["results"][0]["enrollmentId"],
    }
    assert data["results"][550]["email"] == fresh[400]["email"].upper()
    assert data["results"][550]["customerId"] == fresh[400]["id"]
    listed = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments?limit=1&status=active").json
    assert listed["meta"]["total"] == 800
    assert api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["total_enrolled"] == 800
    audit = api.get("/api/v1/audit-events?tag=api:enrollment:skipped&limit=1").json
    assert audit["data"][0]["data"]["code"] == "customer_not_found"


def test_more_than_1000_is_400_and_none_is_missing_field(api):
    sequence = active_sequence(api)
    too_many = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk",
        json={"customer_ids": ["x"] * 600, "emails": ["y@example.com"] * 401},
    )
    assert too_many.status_code == 400 and too_many.json["error"]["code"] == "too_many_contacts"
    schema_cap = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"emails": ["y@x.com"] * 1001}
    )
    assert schema_cap.status_code == 400
    empty = api.post(f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"emails": []})
    assert empty.status_code == 400 and empty.json["error"]["code"] == "missing_field"


def test_duplicates_in_one_request_are_enrolled_once(api):
    sequence = active_sequence(api)
    person = contact(api, email="dup@example.com")
    response = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk",
        json={"customer_ids": [person["id"]], "emails": ["DUP@example.com"]},
    )
    data = response.json["data"]
    assert (data["enrolled"], data["skipped"]) == (1, 1)
    assert data["results"][1]["code"] == "duplicate"


def test_bulk_enroll_runs_a_bounded_number_of_statements(api, services, clock):
    """The statement count does not grow with the number of contacts."""
    org = org_id(api)
    counts = []
    for size in (10, 500):
        sequence = active_sequence(api, name=f"S{size}")
        people = bulk_contacts(services, org, size, clock.now(), prefix=f"n{size}-")
        statements = []

        def count(conn, cursor, statement, parameters, context, executemany, seen=statements):
            seen.append(statement)

        event.listen(services.db.engine, "before_cursor_execute", count)
        try:
            response = api.post(
                f"/api/v1/sequences/{sequence['id']}/enroll_bulk",
                json={"emails": [p["email"] for p in people]},
            )
        finally:
            event.remove(services.db.engine, "before_cursor_execute", count)
        assert response.json["data"]["enrolled"] == size
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 20, counts
