"""The event-queue dialect (seed 000), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from seqbridge.storage.schema import enrollments, step_tasks
from tests.conftest import Api
from tests.factories import bulk_contacts, contact, org_id


def _queue(api, *steps, name="Onboarding"):
    queue = api.post("/api/v1/event-queues", json={"name": name})
    assert queue.status_code == 201, queue.json
    qid = queue.json["data"]["id"]
    for step in steps or (
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "Day 1", "body": "Hi"}},
    ):
        response = api.post(f"/api/v1/event-queues/{qid}/steps", json=step)
        assert response.status_code == 201, response.json
    return api.get(f"/api/v1/event-queues/{qid}").json["data"]


def _z(moment):
    return moment.isoformat().replace("+00:00", "Z")


def _tasks(api, queue, query=""):
    response = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments?limit=200{query}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def test_queue_crud_and_steps(api, clock):
    queue = _queue(
        api,
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "A", "body": "a"}},
        {
            "action_type": "send_webhook",
            "delay_minutes": 90,
            "delay_from": "enrollment",
            "action_config": {"url": "https://hooks.example.com/x"},
        },
    )
    assert queue["status"] == "active" and queue["name"] == "Onboarding"
    assert [(s["position"], s["action_type"], s["delay_from"]) for s in queue["steps"]] == [
        (1, "send_email", "previous_step"),
        (2, "send_webhook", "enrollment"),
    ]
    assert queue["steps"][1]["action_config"] == {"url": "https://hooks.example.com/x"}
    tag_step = api.post(
        f"/api/v1/event-queues/{queue['id']}/steps",
        json={"action_type": "add_tag", "position": 1, "action_config": {"tag": "onboarded"}},
    )
    assert tag_step.status_code == 201 and tag_step.json["data"]["action_config"] == {"tag": "onboarded"}
    steps = api.get(f"/api/v1/event-queues/{queue['id']}").json["data"]["steps"]
    assert [s["action_type"] for s in steps] == ["add_tag", "send_email", "send_webhook"]
    moved = api.patch(f"/api/v1/event-queues/{queue['id']}/steps/{steps[0]['id']}", json={"position": 3})
    assert moved.status_code == 200 and moved.json["data"]["position"] == 3
    updated = api.patch(f"/api/v1/event-queues/{queue['id']}", json={"name": "Renamed", "status": "paused"})
    assert updated.json["data"]["name"] == "Renamed" and updated.json["data"]["status"] == "paused"
    listed = api.get("/api/v1/event-queues").json
    assert [q["id"] for q in listed["data"]] == [queue["id"]] and listed["meta"]["has_more"] is False
    bad = api.post(
        f"/api/v1/event-queues/{queue['id']}/steps", json={"action_type": "add_tag", "action_config": {}}
    )
    assert bad.status_code == 400 and bad.json["error"]["details"]["errors"][0]["path"] == "$.config.tag"
    unknown = api.post(f"/api/v1/event-queues/{queue['id']}/steps", json={"action_type": "send_sms"})
    assert unknown.status_code == 400
    # Queues and sequences never see each other.
    assert api.get(f"/api/v1/sequences/{queue['id']}").status_code == 404
    assert api.get("/api/v1/sequences").json["data"] == []


def test_queue_list_pages_with_a_cursor(api, clock):
    ids = []
    for n in range(3):
        ids.append(api.post("/api/v1/event-queues", json={"name": f"Q{n}"}).json["data"]["id"])
        clock.advance(seconds=1)
    first = api.get("/api/v1/event-queues?limit=2").json
    assert [q["id"] for q in first["data"]] == ids[:2] and first["meta"]["has_more"] is True
    second = api.get(f"/api/v1/event-queues?limit=2&cursor={first['meta']['next_cursor']}").json
    assert [q["id"] for q in second["data"]] == ids[2:] and second["meta"]["next_cursor"] is None


def test_tasks_one_per_step_with_anchor_and_linked_ids(api, clock):
    queue = _queue(
        api,
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "A", "body": "a"}},
        {"action_type": "send_email", "delay_days": 2, "action_config": {"subject": "B", "body": "b"}},
        {
            "action_type": "send_webhook",
            "delay_minutes": 30,
            "delay_from": "enrollment",
            "action_config": {"url": "https://hooks.example.com/x"},
        },
    )
    company = api.post("/api/v1/companies", json={"name": "Initech"}).json["data"]
    person = contact(api, company_id=company["id"])
    anchor = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    response = api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll",
        json={"contact_ids": [person["id"]], "enrollment_time": _z(anchor), "deal_id": "deal-42"},
    )
    assert response.json["data"]["enrolled"] == 1
    tasks = _tasks(api, queue)
    assert [(t["step_position"], t["scheduled_for"]) for t in tasks] == [
        (1, _z(anchor + timedelta(days=1))),
        (2, _z(anchor + timedelta(days=3))),  # previous step + 2 days
        (3, _z(anchor + timedelta(minutes=30))),  # counted from the anchor
    ]
    assert {
        (t["enrollment_time"], t["contact_id"], t["customer_id"], t["deal_id"], t["status"]) for t in tasks
    } == {(_z(anchor), person["id"], company["id"], "deal-42", "pending")}
    default_anchor = contact(api)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [default_anchor["id"]]})
    assert _tasks(api, queue)[3]["enrollment_time"] == _z(clock.now())
    assert len(_tasks(api, queue, "&status=pending")) == 6 and _tasks(api, queue, "&status=completed") == []
    assert api.get(f"/api/v1/event-queues/{queue['id']}/enrollments?status=done").status_code == 400


def test_task_pages_stay_correct_while_tasks_are_added(api, services, clock):
    queue = _queue(api)
    people = bulk_contacts(services, org_id(api), 30, clock.now())
    api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll",
        json={"contact_ids": [p["id"] for p in people[:10]]},
    )
    seen, cursor, added = [], None, 10
    while True:
        url = f"/api/v1/event-queues/{queue['id']}/enrollments?limit=3" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = api.get(url).json
        seen.extend(t["id"] for t in page["data"])
        if added < 30:  # new tasks arrive between pages
            api.post(
                f"/api/v1/event-queues/{queue['id']}/bulk-enroll",
                json={"contact_ids": [p["id"] for p in people[added : added + 5]]},
            )
            added += 5
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a task was repeated"
    assert [int(i) for i in seen] == sorted(int(i) for i in seen)
    assert len(seen) == 30, "every task, including those added while paging, is seen exactly once"
    bad = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments?cursor=nonsense!")
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_cursor"


# bulk-enroll rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"contact_ids": ["a"], "contact_filter": {"city": "Berlin"}},
        {"contact_filter": {"city": "x"}, "customer_filter": {"industry": "y"}},
        {"contact_ids": ["a"], "contact_filter": {"city": "x"}, "customer_filter": {"industry": "y"}},
    ],
)
def test_exactly_one_targeting_mode(api, body):
    queue = _queue(api)
    response = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "targeting_mode"
    assert "exactly one" in error["message"] and "contact_ids" in error["message"]
    assert error["details"]["given"] == [
        m for m in ("contact_ids", "contact_filter", "customer_filter") if m in body
    ]


@pytest.mark.parametrize(
    ("body", "path", "hint"),
    [
        ({"contact_filter": {"account_type": "partner"}}, "$.contact_filter.account_type", "customer_filter"),
        ({"contact_filter": {"industry": "x"}}, "$.contact_filter.industry", "customer_filter"),
        ({"customer_filter": {"contact_type": "lead"}}, "$.customer_filter.contact_type", "contact_filter"),
        ({"customer_filter": {"job_title": "CTO"}}, "$.customer_filter.job_title", "contact_filter"),
        ({"contact_filter": {"opportunity_type": "new"}}, "$.contact_filter.opportunity_type", "deal"),
        (
            {"customer_filter": {"favourite_colour": "red"}},
            "$.customer_filter.favourite_colour",
            "account_type",
        ),
    ],
)
def test_filter_fields_on_the_wrong_axis_name_the_right_filter(api, body, path, hint):
    queue = _queue(api)
    response = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "wrong_filter_axis"
    assert response.json["error"]["details"]["errors"][0]["path"] == path
    assert hint in response.json["error"]["message"]


def test_contact_ids_cap_is_500(api, services, clock):
    queue = _queue(api)
    people = bulk_contacts(services, org_id(api), 501, clock.now())
    over = api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [p["id"] for p in people]}
    )
    assert over.status_code == 400 and over.json["error"]["code"] == "too_many_contacts"
    assert over.json["error"]["details"]["limit"] == 500
    exact = api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll",
        json={"contact_ids": [p["id"] for p in people[:500]]},
    )
    assert exact.status_code == 200 and exact.json["data"]["enrolled"] == 500


def test_contact_ids_report_each_skip_and_reruns_are_idempotent(api):
    queue = _queue(api)
    good, blocked = contact(api), contact(api, status="bounced")
    body = {"contact_ids": [good["id"], blocked["id"], "missing", good["id"]]}
    first = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert (first["enrolled"], first["skipped"]) == (1, 3)
    assert [(r["contact_id"], r["status"], r.get("code")) for r in first["results"]] == [
        (good["id"], "enrolled", None),
        (blocked["id"], "skipped", "ineligible"),
        ("missing", "skipped", "customer_not_found"),
        (good["id"], "skipped", "duplicate"),
    ]
    assert first["results"][1]["reason"] == "contact_status:bounced"
    again = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert again["enrolled"] == 0 and again["results"][0]["code"] == "already_enrolled"
    assert len(_tasks(api, queue)) == 1
    override = api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll",
        json={"contact_ids": [good["id"]], "skip_if_already_enrolled": False},
    ).json["data"]
    assert override["enrolled"] == 1
    assert len(_tasks(api, queue, "&status=pending")) == 2  # a second run beside the first


def test_filters_select_by_contact_fields_and_by_company(api):
    queue = _queue(api)
    software = api.post(
        "/api/v1/companies", json={"name": "A", "industry": "software", "is_customer": True}
    ).json["data"]
    retail = api.post(
        "/api/v1/companies", json={"name": "B", "industry": "retail", "is_customer": True}
    ).json["data"]
    a = contact(api, company_id=software["id"], city="Berlin", contact_type="lead", email="Ann@Example.com")
    b = contact(api, company_id=software["id"], city="Paris", contact_type="customer")
    c = contact(api, company_id=retail["id"], city="Berlin", contact_type="lead")
    contact(api, city="Berlin", contact_type="partner")

    def enrolled(body, queue_name):
        q = _queue(api, name=queue_name)
        response = api.post(f"/api/v1/event-queues/{q['id']}/bulk-enroll", json=body)
        assert response.status_code == 200, response.json
        return sorted(r["contact_id"] for r in response.json["data"]["results"] if r["status"] == "enrolled")

    assert enrolled({"customer_filter": {"industry": "software"}}, "q1") == sorted([a["id"], b["id"]])
    assert enrolled(
        {"customer_filter": {"is_customer": True, "industry": ["retail", "software"]}}, "q2"
    ) == sorted([a["id"], b["id"], c["id"]])
    assert enrolled({"contact_filter": {"city": "Berlin", "contact_type": "lead"}}, "q3") == sorted(
        [a["id"], c["id"]]
    )
    assert enrolled({"contact_filter": {"email": "ann@example.com"}}, "q4") == [a["id"]]
    assert enrolled({"customer_filter": {"industry": "mining"}}, "q5") == []
    assert queue["id"]


def _page_through(api, queue, body, *, calls=10):
    """Call bulk-enroll with the same body until has_more is false; every answer, in order."""
    answers = []
    while True:
        response = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body)
        assert response.status_code == 200, response.json
        answers.append(response.json["data"])
        if not answers[-1]["has_more"]:
            return answers
        assert len(answers) < calls, "paging did not end"


def test_a_1200_contact_filter_pages_to_the_end_without_duplicates_or_gaps(api, services, clock):
    queue = _queue(api)
    org = org_id(api)
    matching = bulk_contacts(services, org, 1200, clock.now(), prefix="m", city="Lisbon")
    bulk_contacts(services, org, 50, clock.now(), prefix="other", city="Porto")
    ineligible = bulk_contacts(
        services, org, 20, clock.now(), prefix="bad", city="Lisbon", status="unsubscribed"
    )
    body = {"contact_filter": {"city": "Lisbon"}}
    calls = _page_through(api, queue, body)
    # Seed 000: a call is capped at 500 contacts. Each call accounts for at most 500 of the 1220
    # matches in all, enrolled or skipped; the earlier calls' contacts are not counted again.
    assert [c["has_more"] for c in calls] == [True, True, False]
    assert [c["enrolled"] + c["skipped"] for c in calls] == [500, 500, 220]
    assert sum(c["enrolled"] for c in calls) == 1200 and sum(c["skipped"] for c in calls) == 20
    assert [len(c["results"]) for c in calls] == [500, 500, 220]
    reported = [r["contact_id"] for c in calls for r in c["results"]]
    assert len(reported) == len(set(reported)) == 1220, "a contact was reported by two calls"
    enrolled_ids = {r["contact_id"] for c in calls for r in c["results"] if r["status"] == "enrolled"}
    assert enrolled_ids == {m["id"] for m in matching}
    skipped = {r["contact_id"]: r["reason"] for c in calls for r in c["results"] if r["status"] == "skipped"}
    assert skipped == {b["id"]: "contact_status:unsubscribed" for b in ineligible}
    # What earlier calls enrolled is a separate, uncapped count, never a skip.
    enrolled_before = [sum(c["enrolled"] for c in calls[:n]) for n in range(len(calls))]
    assert [c["already_enrolled"] for c in calls] == enrolled_before
    with services.db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(enrollments)).scalar_one() == 1200
        assert conn.execute(select(func.count()).select_from(step_tasks)).scalar_one() == 1200
    # The pass is over: the same body again starts a new one, which enrolls nobody new, says how
    # many are enrolled already (all 1200, uncapped) and reports the ineligible ones once more.
    final = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert (final["enrolled"], final["skipped"], final["already_enrolled"]) == (0, 20, 1200)
    assert final["has_more"] is False


def test_ineligible_matches_count_towards_the_cap_and_never_stall_paging(api, services, clock):
    queue = _queue(api)
    org = org_id(api)
    blocked = bulk_contacts(services, org, 700, clock.now(), prefix="u", city="Oslo", status="unsubscribed")
    eligible = bulk_contacts(services, org, 30, clock.now(), prefix="e", city="Oslo")
    calls = _page_through(api, queue, {"contact_filter": {"city": "Oslo"}})
    assert [c["enrolled"] + c["skipped"] for c in calls] == [500, 230]
    assert sum(c["skipped"] for c in calls) == 700 and sum(c["enrolled"] for c in calls) == 30
    reported = [r["contact_id"] for c in calls for r in c["results"]]
    assert sorted(reported) == sorted(p["id"] for p in blocked + eligible)


def test_the_same_body_continues_where_the_last_call_stopped(api, services, clock):
    # An enrollment of the first page that ends between calls (unenrolled here; a queue's last step
    # sent, in real life) is behind the pass: the next page does not enroll that contact again.
    queue = _queue(api)
    people = bulk_contacts(services, org_id(api), 600, clock.now(), city="Rome")
    body = {"contact_filter": {"city": "Rome"}}
    first = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert first["enrolled"] == 500 and first["has_more"] is True
    left = first["results"][0]["contact_id"]
    assert (
        api.post(f"/api/v1/event-queues/{queue['id']}/unenroll", json={"contact_id": left}).status_code == 200
    )
    second = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert (second["enrolled"], second["skipped"], second["has_more"]) == (100, 0, False)
    assert left not in {r["contact_id"] for r in second["results"]}
    ids = [r["contact_id"] for r in first["results"] + second["results"]]
    assert sorted(ids) == sorted(p["id"] for p in people)
    # Another body is another pass, and a pass left alone for a day starts over.
    other = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={**body, "deal_id": "d-1"}).json[
        "data"
    ]
    assert (other["enrolled"], other["already_enrolled"]) == (1, 599)
    assert other["results"] == [
        {"contact_id": left, "status": "enrolled", "enrollment_id": other["results"][0]["enrollment_id"]}
    ]


def test_a_pass_idle_for_a_day_starts_over(api, services, clock):
    queue = _queue(api)
    bulk_contacts(services, org_id(api), 510, clock.now(), city="Nice", status="bounced")
    body = {"contact_filter": {"city": "Nice"}}
    first = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert (first["skipped"], first["has_more"]) == (500, True)
    clock.advance(timedelta(hours=25))
    again = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert [r["contact_id"] for r in again["results"]] == [r["contact_id"] for r in first["results"]]


def test_without_skip_the_same_body_also_pages(api, services, clock):
    queue = _queue(api)
    people = bulk_contacts(services, org_id(api), 700, clock.now(), city="Bern")
    calls = _page_through(api, queue, {"contact_filter": {"city": "Bern"}, "skip_if_already_enrolled": False})
    assert [c["enrolled"] for c in calls] == [500, 200]
    ids = [r["contact_id"] for c in calls for r in c["results"]]
    assert sorted(ids) == sorted(p["id"] for p in people)


def test_paging_without_skip_uses_the_cursor(api, services, clock):
    queue = _queue(api)
    people = bulk_contacts(services, org_id(api), 700, clock.now(), city="Oslo")
    body = {"contact_filter": {"city": "Oslo"}, "skip_if_already_enrolled": False}
    first = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=body).json["data"]
    assert first["enrolled"] == 500 and first["has_more"] and first["next_cursor"]
    second = api.post(
        f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={**body, "cursor": first["next_cursor"]}
    ).json["data"]
    assert second["enrolled"] == 200 and not second["has_more"]
    ids = [r["contact_id"] for r in first["results"] + second["results"] if r["status"] == "enrolled"]
    assert sorted(ids) == sorted(p["id"] for p in people)


# Unenroll, deletes, audit, scopes ---------------------------------------------------------------


def test_unenroll_cancels_pending_tasks(api):
    queue = _queue(
        api,
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "A", "body": "a"}},
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "B", "body": "b"}},
    )
    person = contact(api)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [person["id"]]})
    response = api.post(f"/api/v1/event-queues/{queue['id']}/unenroll", json={"contact_id": person["id"]})
    assert response.status_code == 200
    assert response.json["data"]["status"] == "exited" and response.json["data"]["contact_id"] == person["id"]
    assert {t["status"] for t in _tasks(api, queue)} == {"cancelled"}
    again = api.post(f"/api/v1/event-queues/{queue['id']}/unenroll", json={"contact_id": person["id"]})
    assert again.status_code == 404 and again.json["error"]["code"] == "not_enrolled"
    missing = api.post(f"/api/v1/event-queues/{queue['id']}/unenroll", json={})
    assert missing.status_code == 400
    cancel = api.get("/api/v1/audit-events?tag=api:enrollment:exited").json["data"][0]
    assert cancel["data"]["tasks_cancelled"] == 2 and cancel["data"]["reason"] == "unenrolled"


def test_deleting_a_step_cancels_its_tasks_and_a_queue_keeps_its_history(api, services):
    queue = _queue(
        api,
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "A", "body": "a"}},
        {"action_type": "send_email", "delay_days": 1, "action_config": {"subject": "B", "body": "b"}},
    )
    person = contact(api)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [person["id"]]})
    api.delete(f"/api/v1/event-queues/{queue['id']}/steps/{queue['steps'][0]['id']}")
    assert sorted(t["status"] for t in _tasks(api, queue)) == ["cancelled", "pending"]
    step_event = api.get("/api/v1/audit-events?tag=api:step:deleted").json["data"][0]
    assert step_event["data"]["tasks_cancelled"] == 1
    assert api.delete(f"/api/v1/event-queues/{queue['id']}").status_code == 204
    assert api.get(f"/api/v1/event-queues/{queue['id']}").status_code == 404
    assert api.get("/api/v1/event-queues").json["data"] == []
    with services.db.engine.connect() as conn:
        statuses = conn.execute(select(step_tasks.c.status)).scalars().all()
        assert sorted(statuses) == ["cancelled", "cancelled"]  # history kept, nothing left pending
    deleted = api.get("/api/v1/audit-events?tag=api:sequence:deleted").json["data"][0]
    assert deleted["subject"] == {"type": "event_queue", "id": queue["id"]}
    assert deleted["data"]["tasks_cancelled"] == 1 and deleted["data"]["live_enrollments_cancelled"] == 1


def test_enrollments_and_skips_are_audited(api):
    queue = _queue(api)
    good, bad = contact(api), contact(api, converted=True)
    api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [good["id"], bad["id"]]})
    created = api.get("/api/v1/audit-events?tag=api:enrollment:created").json["data"]
    skipped = api.get("/api/v1/audit-events?tag=api:enrollment:skipped").json["data"]
    assert [e["data"]["contact_id"] for e in created] == [good["id"]]
    assert [(e["subject"]["id"], e["data"]["reason"]) for e in skipped] == [(bad["id"], "converted_customer")]


def test_automation_scopes(api, client, make_key):
    queue = _queue(api)
    reader = Api(client, make_key("acme", ["automations:read"], "reader"))
    assert reader.get(f"/api/v1/event-queues/{queue['id']}").status_code == 200
    denied = reader.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": ["x"]})
    assert denied.status_code == 403 and denied.json["error"]["code"] == "automations_write_denied"
    sequences_only = Api(client, make_key("acme", ["sequences:write"], "seq"))
    forbidden = sequences_only.get("/api/v1/event-queues")
    assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == "automations_read_denied"


def test_other_organizations_cannot_touch_a_queue(api, other_api):
    queue = _queue(api)
    theirs = contact(other_api)
    for method, path, body in (
        ("get", "", None),
        ("patch", "", {"name": "x"}),
        ("delete", "", None),
        ("get", "/enrollments", None),
        ("post", "/bulk-enroll", {"contact_ids": [theirs["id"]]}),
        ("post", "/unenroll", {"contact_id": theirs["id"]}),
        ("post", "/steps", {"action_type": "add_tag", "action_config": {"tag": "t"}}),
    ):
        response = getattr(other_api, method)(
            f"/api/v1/event-queues/{queue['id']}{path}", **({"json": body} if body else {})
        )
        assert response.status_code == 404, (method, path)
        assert response.json["error"]["code"] == "not_found"
    assert api.get(f"/api/v1/event-queues/{queue['id']}").json["data"]["name"] == "Onboarding"
