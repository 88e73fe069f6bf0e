"""Sequences and steps (seed 003), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.factories import active_sequence, contact


def _steps(api, sequence_id):
    return api.get(f"/api/v1/sequences/{sequence_id}").json["data"]["steps"]


def test_seed_create_sequence_curl(api, clock):
    """curl -X POST …/api/v1/sequences -d '{ "name": "Press Outreach", "trigger_type": "manual" }'"""
    response = api.post("/api/v1/sequences", json={"name": "Press Outreach", "trigger_type": "manual"})
    assert response.status_code == 201
    data = response.json["data"]
    assert data["name"] == "Press Outreach"
    assert data["status"] == "draft"
    assert data["trigger_type"] == "manual"
    assert data["trigger_config"] == {} and data["exit_conditions"] == {}
    assert (data["total_enrolled"], data["total_completed"], data["total_unsubscribed"]) == (0, 0, 0)
    assert data["organization_id"] == api.get("/api/v1/me").json["data"]["organization_id"]
    assert data["created_at"] == "2026-01-05T09:00:00Z"
    assert data["steps"] == []


def test_seed_list_sequences_curl(api, clock):
    """curl "…/api/v1/sequences?status=active&limit=20" """
    active = active_sequence(api, name="Press Outreach")
    clock.advance(seconds=1)
    api.post("/api/v1/sequences", json={"name": "Draft one"})
    response = api.get("/api/v1/sequences?status=active&limit=20")
    assert response.status_code == 200
    assert [s["id"] for s in response.json["data"]] == [active["id"]]
    assert response.json["data"][0]["total_enrolled"] == 0
    assert response.json["meta"] == {"total": 1, "limit": 20, "offset": 0, "next_offset": None}
    everything = api.get("/api/v1/sequences").json
    assert everything["meta"] == {"total": 2, "limit": 50, "offset": 0, "next_offset": None}


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=x", "status=running"])
def test_list_bounds_are_400(api, query):
    response = api.get(f"/api/v1/sequences?{query}")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "validation_failed"
    assert response.json["error"]["details"]["errors"][0]["in"] == "query"


def test_create_validates_fields(api):
    too_long = api.post("/api/v1/sequences", json={"name": "x" * 201})
    assert too_long.status_code == 400 and too_long.json["error"]["details"]["errors"][0]["path"] == "$.name"
    missing = api.post("/api/v1/sequences", json={"trigger_type": "manual"})
    assert missing.status_code == 400
    bad_trigger = api.post("/api/v1/sequences", json={"name": "n", "trigger_type": "cron"})
    assert bad_trigger.json["error"]["details"]["errors"][0]["path"] == "$.trigger_type"
    # Seed 003: trigger_config is optional on create (PATCH can set the tag later); a tag that is
    # not a tag is still refused.
    tag_without_tag = api.post("/api/v1/sequences", json={"name": "n", "trigger_type": "tag_added"})
    assert tag_without_tag.status_code == 201, tag_without_tag.json
    assert tag_without_tag.json["data"]["trigger_config"] == {}
    for bad in ({"tag": ""}, {"tag": "   "}, {"tag": "x" * 101}, {"tag": 7}):
        refused = api.post(
            "/api/v1/sequences", json={"name": "n", "trigger_type": "tag_added", "trigger_config": bad}
        )
        assert refused.status_code == 400, bad
        assert refused.json["error"]["details"]["errors"][0]["path"] == "$.trigger_config.tag"
    spaced = api.post(
        "/api/v1/sequences",
        json={"name": "n", "trigger_type": "tag_added", "trigger_config": {"tag": " vip "}},
    )
    assert spaced.json["data"]["trigger_config"] == {"tag": "vip"}  # trimmed, as contact tags are
    sid = tag_without_tag.json["data"]["id"]
    later_bad = api.patch(f"/api/v1/sequences/{sid}", json={"trigger_config": {"tag": " "}})
    assert (
        later_bad.status_code == 400
        and later_bad.json["error"]["details"]["errors"][0]["path"] == "$.trigger_config.tag"
    )
    full = api.post(
        "/api/v1/sequences",
        json={
            "name": "Full",
            "description": "d",
            "trigger_type": "tag_added",
            "trigger_config": {"tag": "vip"},
            "exit_conditions": {"replied": True, "unsubscribed": True},
            "from_email": "me@x.com",
            "from_name": "Me",
            "reply_to_email": "reply@x.com",
            "status": "active",
        },
    )
    assert full.status_code == 201
    data = full.json["data"]
    assert data["status"] == "draft"  # always created as a draft, whatever the body says
    assert data["exit_conditions"] == {"replied": True, "unsubscribed": True}
    assert (data["from_email"], data["from_name"], data["reply_to_email"]) == (
        "me@x.com",
        "Me",
        "reply@x.com",
    )


def test_activation_needs_a_step_and_statuses_move_freely(api):
    sequence = api.post("/api/v1/sequences", json={"name": "S"}).json["data"]
    refused = api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"})
    assert refused.status_code == 400
    assert refused.json["error"]["code"] == "sequence_has_no_steps"
    api.post(f"/api/v1/sequences/{sequence['id']}/steps", json={"subject": "s", "body": "b"})
    for status in ("active", "paused", "active", "archived"):
        response = api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": status})
        assert response.status_code == 200 and response.json["data"]["status"] == status
    renamed = api.patch(f"/api/v1/sequences/{sequence['id']}", json={"name": "Renamed", "description": None})
    assert renamed.json["data"]["name"] == "Renamed"


def test_steps_insert_move_delete_renumber(api):
    sequence = api.post("/api/v1/sequences", json={"name": "S"}).json["data"]
    sid = sequence["id"]

    def add(subject, **extra):
        response = api.post(f"/api/v1/sequences/{sid}/steps", json={"subject": subject, "body": "b", **extra})
        assert response.status_code == 201, response.json
        return response.json["data"]

    a, b = add("A"), add("B", delay_days=2, delay_minutes=30)
    c = add("C", position=1)
    assert [(s["subject"], s["position"]) for s in _steps(api, sid)] == [("C", 1), ("A", 2), ("B", 3)]
    assert b["delay_days"] == 2 and b["delay_minutes"] == 30 and b["channel"] == "email"
    moved = api.patch(f"/api/v1/sequences/{sid}/steps/{c['id']}", json={"position": 3})
    assert moved.status_code == 200 and moved.json["data"]["position"] == 3
    assert [s["subject"] for s in _steps(api, sid)] == ["A", "B", "C"]
    api.patch(f"/api/v1/sequences/{sid}/steps/{b['id']}", json={"position": 1, "subject": "B2"})
    assert [s["subject"] for s in _steps(api, sid)] == ["B2", "A", "C"]
    assert api.delete(f"/api/v1/sequences/{sid}/steps/{a['id']}").status_code == 204
    assert [(s["subject"], s["position"]) for s in _steps(api, sid)] == [("B2", 1), ("C", 2)]
    out_of_range = api.post(
        f"/api/v1/sequences/{sid}/steps", json={"subject": "Z", "body": "b", "position": 9}
    )
    assert (
        out_of_range.status_code == 400
        and out_of_range.json["error"]["details"]["errors"][0]["path"] == "$.position"
    )
    assert api.delete(f"/api/v1/sequences/{sid}/steps/{a['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"channel": "email", "body": "b"}, "$.subject"),
        ({"channel": "email", "subject": "{{ oops", "body": "b"}, "$.subject"),
        ({"channel": "webhook"}, "$.webhook_url"),
        ({"channel": "webhook", "webhook_url": "ftp://x"}, "$.webhook_url"),
        ({"channel": "sms", "body": "b"}, "$.channel"),
        ({"delay_days": -1, "subject": "s", "body": "b"}, "$.delay_days"),
        ({"action": "add_tag"}, "$.action"),
    ],
)
def test_step_validation_names_the_field(api, body, path):
    sequence = api.post("/api/v1/sequences", json={"name": "S"}).json["data"]
    response = api.post(f"/api/v1/sequences/{sequence['id']}/steps", json=body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["details"]["errors"][0]["path"] == path


def test_template_errors_carry_the_line(api):
    sequence = api.post("/api/v1/sequences", json={"name": "S"}).json["data"]
    response = api.post(
        f"/api/v1/sequences/{sequence['id']}/steps",
        json={"subject": "ok", "body": "line one\n{% if x %}\nno endif"},
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_template"
    assert "line 3" in response.json["error"]["message"] or "line 2" in response.json["error"]["message"]


def test_delete_cascades_and_is_audited(api, services):
    sequence = active_sequence(api)
    person = contact(api)
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    assert api.delete(f"/api/v1/sequences/{sequence['id']}").status_code == 204
    assert api.get(f"/api/v1/sequences/{sequence['id']}").status_code == 404
    assert api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").status_code == 404
    from sqlalchemy import func, select

    from seqbridge.storage.schema import enrollments, sequence_steps, step_tasks

    with services.db.engine.connect() as conn:
        for table in (enrollments, sequence_steps, step_tasks):
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
    event = api.get("/api/v1/audit-events?tag=api:sequence:deleted").json["data"][0]
    assert event["data"]["live_enrollments_cancelled"] == 1 and event["data"]["total_enrolled"] == 1
    # The person is untouched.
    assert api.get(f"/api/v1/contacts/{person['id']}").status_code == 200


def test_other_organizations_see_nothing(api, other_api):
    sequence = active_sequence(api)
    mine = contact(api)
    theirs = contact(other_api)
    assert other_api.get(f"/api/v1/sequences/{sequence['id']}").status_code == 404
    assert other_api.get("/api/v1/sequences").json["data"] == []
    foreign = other_api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": theirs["id"]})
    assert foreign.status_code == 404 and foreign.json["error"]["code"] == "not_found"
    cross = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": theirs["id"]})
    assert cross.status_code == 404 and "contact" in cross.json["error"]["message"]
    assert other_api.patch(f"/api/v1/sequences/{sequence['id']}", json={"name": "x"}).status_code == 404
    assert other_api.delete(f"/api/v1/sequences/{sequence['id']}").status_code == 404
    assert api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["name"] == "Welcome"
    assert (
        api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": mine["id"]}).status_code
        == 201
    )


def test_patching_a_step_keeps_what_is_not_given(api):
    sequence = api.post("/api/v1/sequences", json={"name": "S"}).json["data"]
    hook = api.post(
        f"/api/v1/sequences/{sequence['id']}/steps",
        json={"channel": "webhook", "webhook_url": "https://hooks.example.com/a"},
    ).json["data"]
    patched = api.patch(f"/api/v1/sequences/{sequence['id']}/steps/{hook['id']}", json={"delay_minutes": 15})
    assert patched.status_code == 200
    assert patched.json["data"]["channel"] == "webhook"
    assert patched.json["data"]["webhook_url"] == "https://hooks.example.com/a"
    assert patched.json["data"]["delay_minutes"] == 15
    default = api.post(f"/api/v1/sequences/{sequence['id']}/steps", json={"subject": "s", "body": "b"}).json[
        "data"
    ]
    assert default["channel"] == "email"
