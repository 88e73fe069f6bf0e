"""Enrollment in the sequences and bot dialects (seeds 003 and 004), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from seqbridge.storage.schema import step_tasks
from tests.conftest import Api
from tests.factories import active_sequence, contact


def _tasks(services, enrollment_id):
    with services.db.engine.connect() as conn:
        rows = conn.execute(
            select(step_tasks).where(step_tasks.c.enrollment_id == enrollment_id).order_by(step_tasks.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def _z(moment):
    return moment.isoformat().replace("+00:00", "Z")


# The seeds' examples, request bodies exactly as documented ----------------------------------------


def test_seed_enroll_by_email_curl(api, clock, services):
    """-d '{ "email": "reporter@example.com", "enrollment_source": "press_list" }' → 201 enrollment."""
    sequence = active_sequence(api, name="Press Outreach", steps=({"delay_days": 3}, {"delay_days": 2}))
    reporter = contact(api, email="reporter@example.com", first_name="Rita")
    response = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"email": "reporter@example.com", "enrollment_source": "press_list"},
    )
    assert response.status_code == 201
    data = response.json["data"]
    assert data["sequence_id"] == sequence["id"]
    assert data["contact_id"] == data["customer_id"] == reporter["id"]
    assert data["status"] == "active"
    assert data["enrollment_source"] == "press_list"
    assert data["enrolled_at"] == _z(clock.now())
    # Enrollment schedules the first step: enrollment time plus its delay.
    assert data["next_send_at"] == _z(clock.now() + timedelta(days=3))
    first_step = api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["steps"][0]
    assert data["current_step_id"] == first_step["id"]
    tasks = _tasks(services, data["id"])
    assert [(t["status"], t["step_id"], t["position"]) for t in tasks] == [("pending", first_step["id"], 1)]
    from seqbridge.services.scheduling import task_idempotency_key

    assert task_idempotency_key(tasks[0]) == f"{data['id']}:{first_step['id']}"


def test_seed_enroll_bulk_curl(api):
    """-d '{ "emails": ["a@example.com", "b@example.com"] }' → enrolled 1, skipped 1, as in the seed."""
    sequence = active_sequence(api)
    a = contact(api, email="a@example.com")
    response = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll_bulk", json={"emails": ["a@example.com", "b@example.com"]}
    )
    assert response.status_code == 200
    data = response.json["data"]
    assert data["enrolled"] == 1 and data["skipped"] == 1
    assert data["results"][0]["customerId"] == a["id"] and data["results"][0]["status"] == "enrolled"
    assert data["results"][1] == {
        "email": "b@example.com",
        "status": "skipped",
        "code": "customer_not_found",
        "reason": "No contact found with this email",
    }
    listed = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]
    assert [e["enrollment_source"] for e in listed] == ["api_bulk"]


def test_seed_unenroll_with_reason_curl(api, services):
    """curl -X DELETE …/enrollments/ENR_ID?reason=replied"""
    sequence = active_sequence(api)
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}
    ).json["data"]
    response = api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}?reason=replied")
    assert response.status_code == 200
    data = response.json["data"]
    assert (data["status"], data["exit_reason"]) == ("exited", "replied")
    assert data["next_send_at"] is None and data["exited_at"] is not None
    assert [t["status"] for t in _tasks(services, enrollment["id"])] == ["cancelled"]
    again = api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}?reason=bounced")
    assert again.status_code == 200 and again.json["data"]["exit_reason"] == "replied"  # idempotent
    default = contact(api)
    second = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": default["id"]}).json[
        "data"
    ]
    exited = api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{second['id']}").json["data"]
    assert exited["exit_reason"] == "manual"
    bad = api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{second['id']}?reason=bored")
    assert bad.status_code == 400 and bad.json["error"]["details"]["errors"][0]["path"] == "reason"


def test_seed_bot_enroll_and_unenroll(api, clock):
    """POST …/enroll { "contact_id": … } → 201; POST …/unenroll { "contact_id": … } → completed."""
    sequence = active_sequence(api, steps=({"delay_days": 0},))
    person = contact(api)
    enrolled = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    assert enrolled.status_code == 201
    # delay_days = 0: due at once (the next processor tick).
    assert enrolled.json["data"]["next_send_at"] == _z(clock.now())
    response = api.post(f"/api/v1/sequences/{sequence['id']}/unenroll", json={"contact_id": person["id"]})
    assert response.status_code == 200
    assert response.json == {
        "data": {
            "id": enrolled.json["data"]["id"],
            "status": "completed",
            "sequence_id": sequence["id"],
            "contact_id": person["id"],
        }
    }
    again = api.post(f"/api/v1/sequences/{sequence['id']}/unenroll", json={"contact_id": person["id"]})
    assert again.status_code == 404 and again.json["error"]["code"] == "not_enrolled"


def test_bot_accepts_camel_case_and_first_identifier_wins(api):
    sequence = active_sequence(api)
    first, second = contact(api), contact(api)
    camel = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contactId": first["id"]})
    assert camel.status_code == 201 and camel.json["data"]["contact_id"] == first["id"]
    both = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"contact_id": second["id"], "contactId": first["id"]},
    )
    assert both.status_code == 201 and both.json["data"]["contact_id"] == second["id"]
    third = contact(api, email="third@example.com")
    ordered = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"customer_id": third["id"], "email": "nobody@example.com", "contact_id": "zzz"},
    )
    assert ordered.status_code == 201 and ordered.json["data"]["contact_id"] == third["id"]
    unenrolled = api.post(f"/api/v1/sequences/{sequence['id']}/unenroll", json={"contactId": first["id"]})
    assert unenrolled.status_code == 200 and unenrolled.json["data"]["contact_id"] == first["id"]


# Every documented error ---------------------------------------------------------------------------


def test_enroll_errors(api):
    sequence = active_sequence(api)
    person = contact(api)
    url = f"/api/v1/sequences/{sequence['id']}/enroll"
    missing = api.post(url, json={"enrollment_source": "x"})
    assert missing.status_code == 400 and missing.json["error"]["code"] == "missing_field"
    unknown_sequence = api.post("/api/v1/sequences/nope/enroll", json={"contact_id": person["id"]})
    assert unknown_sequence.status_code == 404 and unknown_sequence.json["error"]["code"] == "not_found"
    unknown_contact = api.post(url, json={"contact_id": "cnt_abc123"})
    assert unknown_contact.status_code == 404 and unknown_contact.json["error"]["code"] == "not_found"
    unknown_email = api.post(url, json={"email": "ghost@example.com"})
    assert unknown_email.status_code == 404
    assert api.post(url, json={"contact_id": person["id"]}).status_code == 201
    duplicate = api.post(url, json={"email": person["email"].upper()})
    assert duplicate.status_code == 409 and duplicate.json["error"]["code"] == "already_enrolled"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "unsubscribed"}, "contact_status:unsubscribed"),
        ({"status": "bounced"}, "contact_status:bounced"),
        ({"status": "do_not_contact"}, "contact_status:do_not_contact"),
        ({"converted": True}, "converted_customer"),
        ({"has_open_ticket": True}, "active_ticket:open"),
    ],
)
def test_ineligible_contacts_get_422_with_the_reason_and_the_skip_is_audited(api, fields, reason):
    sequence = active_sequence(api)
    person = contact(api, **fields)
    response = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]})
    assert response.status_code == 422
    assert response.json["error"]["code"] == "ineligible"
    assert response.json["error"]["details"]["reason"] == reason
    skip = api.get("/api/v1/audit-events?tag=api:enrollment:skipped").json["data"][0]
    assert skip["subject"] == {"type": "contact", "id": person["id"]}
    assert skip["data"]["reason"] == reason and skip["data"]["sequence_id"] == sequence["id"]
    assert api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"] == []


def test_enrolling_into_sequences_that_are_not_active(api):
    person = contact(api)
    draft = api.post("/api/v1/sequences", json={"name": "Draft"}).json["data"]
    api.post(f"/api/v1/sequences/{draft['id']}/steps", json={"subject": "s", "body": "b"})
    refused = api.post(f"/api/v1/sequences/{draft['id']}/enroll", json={"contact_id": person["id"]})
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "sequence_not_active"
    assert refused.json["error"]["details"]["reason"] == "sequence_status:draft"
    archived = active_sequence(api, name="Old")
    api.patch(f"/api/v1/sequences/{archived['id']}", json={"status": "archived"})
    gone = api.post(f"/api/v1/sequences/{archived['id']}/enroll", json={"contact_id": person["id"]})
    assert gone.json["error"]["details"]["reason"] == "sequence_status:archived"
    paused = active_sequence(api, name="Paused")
    api.patch(f"/api/v1/sequences/{paused['id']}", json={"status": "paused"})
    held = api.post(f"/api/v1/sequences/{paused['id']}/enroll", json={"contact_id": person["id"]})
    assert held.status_code == 201 and held.json["data"]["status"] == "active"  # the processor holds it
    bulk = api.post(f"/api/v1/sequences/{draft['id']}/enroll_bulk", json={"customer_ids": [person["id"]]})
    assert bulk.status_code == 422 and bulk.json["error"]["code"] == "sequence_not_active"


def test_unenroll_errors(api):
    sequence = active_sequence(api)
    url = f"/api/v1/sequences/{sequence['id']}/unenroll"
    missing = api.post(url, json={})
    assert missing.status_code == 400 and missing.json["error"]["code"] == "missing_field"
    unknown_sequence = api.post("/api/v1/sequences/nope/unenroll", json={"contact_id": "x"})
    assert unknown_sequence.status_code == 404 and unknown_sequence.json["error"]["code"] == "not_found"
    never = api.post(url, json={"contact_id": contact(api)["id"]})
    assert never.status_code == 404 and never.json["error"]["code"] == "not_enrolled"
    ghost = api.post(url, json={"contact_id": "cnt_abc123"})
    assert ghost.status_code == 404 and ghost.json["error"]["code"] == "not_enrolled"


def test_writes_without_sequences_write_are_403_sequences_write_denied(api, client, make_key):
    sequence = active_sequence(api)
    person = contact(api)
    reader = Api(client, make_key("acme", ["sequences:read", "contacts:write"], "reader"))
    for path, body in (
        ("enroll", {"contact_id": person["id"]}),
        ("unenroll", {"contact_id": person["id"]}),
        ("enroll_bulk", {"customer_ids": [person["id"]]}),
    ):
        response = reader.post(f"/api/v1/sequences/{sequence['id']}/{path}", json=body)
        assert response.status_code == 403
        assert response.json["error"]["code"] == "sequences_write_denied"
    assert reader.get(f"/api/v1/sequences/{sequence['id']}/enrollments").status_code == 200


# Pause, resume, listing, counters ------------------------------------------------------------------


def test_pause_keeps_the_remaining_delay_and_resume_reschedules_from_now(api, clock, services):
    sequence = active_sequence(api, steps=({"delay_days": 3},))
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    url = f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}"
    clock.advance(days=2)  # 2 days into the 3-day delay
    paused = api.patch(url, json={"status": "paused"}).json["data"]
    assert (
        paused["status"] == "paused"
        and paused["next_send_at"] is None
        and paused["paused_at"] == _z(clock.now())
    )
    assert [(t["status"], t["remaining_seconds"]) for t in _tasks(services, enrollment["id"])] == [
        ("paused", 86400)
    ]
    assert api.patch(url, json={"status": "paused"}).json["data"]["paused_at"] == paused["paused_at"]  # no-op
    clock.advance(days=10)
    resumed = api.patch(url, json={"status": "active"}).json["data"]
    assert resumed["status"] == "active" and resumed["paused_at"] is None
    assert resumed["next_send_at"] == _z(clock.now() + timedelta(days=1))
    tags = [
        e["tag"] for e in api.get("/api/v1/audit-events?order=asc").json["data"] if "enrollment" in e["tag"]
    ]
    assert tags == ["api:enrollment:created", "api:enrollment:paused", "api:enrollment:resumed"]
    api.delete(url + "?reason=unsubscribed")
    ended = api.patch(url, json={"status": "active"})
    assert ended.status_code == 409 and ended.json["error"]["code"] == "enrollment_ended"
    invalid = api.patch(url, json={"status": "completed"})
    assert invalid.status_code == 400


def test_list_enrollments_filters_paginates_and_embeds_the_customer(api, clock):
    sequence = active_sequence(api)
    people = []
    for n in range(3):
        people.append(contact(api, email=f"p{n}@example.com", first_name=f"P{n}"))
        api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": people[-1]["id"]})
        clock.advance(seconds=1)
    listed = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments?limit=2").json
    assert listed["meta"] == {"total": 3, "limit": 2, "offset": 0, "next_offset": 2}
    assert listed["data"][0]["customer"] == {
        "id": people[0]["id"],
        "email": "p0@example.com",
        "first_name": "P0",
        "last_name": None,
        "phone": None,
        "status": "active",
    }
    first_id = listed["data"][0]["id"]
    api.patch(f"/api/v1/sequences/{sequence['id']}/enrollments/{first_id}", json={"status": "paused"})
    paused = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments?status=paused").json
    assert [e["id"] for e in paused["data"]] == [first_id] and paused["meta"]["total"] == 1
    assert api.get(f"/api/v1/sequences/{sequence['id']}/enrollments?status=gone").status_code == 400
    one = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments/{first_id}")
    assert one.status_code == 200 and one.json["data"]["status"] == "paused"


def test_counters_follow_the_enrollments(api):
    sequence = active_sequence(api)
    people = [contact(api) for _ in range(4)]
    ids = [
        api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": p["id"]}).json["data"][
            "id"
        ]
        for p in people
    ]
    api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{ids[0]}?reason=unsubscribed")
    api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{ids[1]}?reason=replied")
    api.post(f"/api/v1/sequences/{sequence['id']}/unenroll", json={"contact_id": people[2]["id"]})
    data = api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]
    assert (data["total_enrolled"], data["total_completed"], data["total_unsubscribed"]) == (4, 1, 1)
    # Re-enrolling someone who has left is allowed and counts again.
    assert (
        api.post(
            f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": people[0]["id"]}
        ).status_code
        == 201
    )
    assert api.get("/api/v1/sequences").json["data"][0]["total_enrolled"] == 5


def test_deleting_the_pending_step_moves_enrollments_to_the_next(api, services, clock):
    sequence = active_sequence(api, steps=({"delay_days": 1}, {"delay_days": 2}))
    steps = api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["steps"]
    person = contact(api)
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).json["data"]
    api.delete(f"/api/v1/sequences/{sequence['id']}/steps/{steps[0]['id']}")
    after = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}").json["data"]
    assert after["current_step_id"] == steps[1]["id"]
    assert after["next_send_at"] == enrollment["next_send_at"]
    assert [t["status"] for t in _tasks(services, enrollment["id"])] == ["cancelled", "pending"]
    api.delete(f"/api/v1/sequences/{sequence['id']}/steps/{steps[1]['id']}")
    done = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}").json["data"]
    assert done["status"] == "completed" and done["next_send_at"] is None


def test_every_enrollment_change_is_audited_with_actor_and_reason(api):
    sequence = active_sequence(api)
    person = contact(api)
    key_id = api.get("/api/v1/me").json["data"]["key_id"]
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"contact_id": person["id"], "enrollment_source": "zapier"},
    ).json["data"]
    api.delete(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}?reason=converted")
    events = api.get("/api/v1/audit-events?subject_type=enrollment&order=asc").json["data"]
    assert [e["tag"] for e in events] == ["api:enrollment:created", "api:enrollment:exited"]
    assert all(e["actor"] == {"type": "api_key", "id": key_id} for e in events)
    assert events[0]["data"]["source"] == "zapier" and events[1]["data"]["reason"] == "converted"
    assert events[1]["data"]["tasks_cancelled"] == 1


def test_concurrent_enrollments_of_one_contact_make_exactly_one(api):
    sequence = active_sequence(api)
    person = contact(api)
    statuses = []

    def enroll():
        response = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
        statuses.append((response.status_code, response.json.get("error", {}).get("code")))

    threads = [threading.Thread(target=enroll) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses, key=str) == sorted([(201, None)] + [(409, "already_enrolled")] * 5, key=str)
    assert api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["total_enrolled"] == 1
