"""What the Zapier and n8n integrations need of the core: ``/me`` names the organization (the
connection label), and ``POST /contacts/{id}/unenroll`` exits a contact from one sequence or from
everything with a reason (their "Unenroll" action), on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.factories import active_sequence, contact


def _queue(api, name="Nurture") -> dict:
    created = api.post("/api/v1/event-queues", json={"name": name})
    assert created.status_code == 201, created.json
    queue = created.json["data"]
    step = api.post(
        f"/api/v1/event-queues/{queue['id']}/steps",
        json={"action_type": "add_tag", "action_config": {"tag": "nurtured"}, "delay_minutes": 60},
    )
    assert step.status_code == 201, step.json
    return queue


def test_me_names_the_key_and_its_organization(api, make_key, client):
    key = make_key("Acme Corp", ["contacts:read"], "zapier")
    data = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json["data"]
    assert data["organization_name"] == "Acme Corp"
    assert data["key_name"] == "zapier"
    assert data["scopes"] == ["contacts:read"]
    # The fixture's key belongs to another organization, with another id and name.
    other = api.get("/api/v1/me").json["data"]
    assert other["organization_name"] == "acme" and other["organization_id"] != data["organization_id"]


def test_unenroll_from_one_sequence_exits_with_the_reason_and_leaves_the_others(api):
    welcome, upsell = active_sequence(api, name="Welcome"), active_sequence(api, name="Upsell")
    ada = contact(api, email="ada@example.com")
    for sequence in (welcome, upsell):
        assert (
            api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": ada["id"]}).status_code
            == 201
        )

    response = api.post(
        f"/api/v1/contacts/{ada['id']}/unenroll", json={"sequence_id": welcome["id"], "reason": "replied"}
    )
    assert response.status_code == 200, response.json
    data = response.json["data"]
    assert data["contact_id"] == ada["id"] and data["enrollments_ended"] == 1
    [ended] = data["enrollments"]
    assert ended["sequence_id"] == welcome["id"]
    assert (ended["status"], ended["exit_reason"], ended["next_send_at"]) == ("exited", "replied", None)
    assert (
        api.get(f"/api/v1/sequences/{welcome['id']}/enrollments/{ended['id']}").json["data"]["status"]
        == "exited"
    )
    still = api.get(f"/api/v1/sequences/{upsell['id']}/enrollments?status=active").json["data"]
    assert [e["contact_id"] for e in still] == [ada["id"]]

    # Nothing live any more: a retry answers none ended, not an error.
    again = api.post(f"/api/v1/contacts/{ada['id']}/unenroll", json={"sequence_id": welcome["id"]})
    assert again.status_code == 200 and again.json["data"] == {
        "contact_id": ada["id"],
        "enrollments_ended": 0,
        "enrollments": [],
    }


def test_unenroll_from_everything_ends_sequences_and_queues_and_is_audited(api):
    welcome = active_sequence(api, name="Welcome")
    queue = _queue(api)
    ada = contact(api)
    api.post(f"/api/v1/sequences/{welcome['id']}/enroll", json={"contact_id": ada["id"]})
    bulk = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [ada["id"]]})
    assert bulk.json["data"]["enrolled"] == 1
    paused = api.get(f"/api/v1/sequences/{welcome['id']}/enrollments").json["data"][0]
    api.patch(f"/api/v1/sequences/{welcome['id']}/enrollments/{paused['id']}", json={"status": "paused"})

    data = api.post(f"/api/v1/contacts/{ada['id']}/unenroll", json={"reason": "unsubscribed"}).json["data"]
    assert data["enrollments_ended"] == 2
    assert {e["sequence_id"] for e in data["enrollments"]} == {welcome["id"], queue["id"]}
    assert {(e["status"], e["exit_reason"]) for e in data["enrollments"]} == {("exited", "unsubscribed")}
    tasks = api.get(f"/api/v1/event-queues/{queue['id']}/enrollments").json["data"]
    assert [t["status"] for t in tasks] == ["cancelled"]
    audit = api.get("/api/v1/audit-events?tag=api:enrollment:exited").json["data"]
    assert {a["subject"]["id"] for a in audit} == {e["id"] for e in data["enrollments"]}


def test_unenroll_defaults_to_manual_and_refuses_bad_input(api, other_api, make_key, client):
    welcome = active_sequence(api)
    ada = contact(api)
    api.post(f"/api/v1/sequences/{welcome['id']}/enroll", json={"contact_id": ada["id"]})
    url = f"/api/v1/contacts/{ada['id']}/unenroll"

    bad_reason = api.post(url, json={"reason": "bored"})
    assert bad_reason.status_code == 400 and bad_reason.json["error"]["code"] == "validation_failed"
    typo = api.post(url, json={"sequenceid": welcome["id"]})
    assert typo.status_code == 400 and "sequenceid" in typo.json["error"]["message"]
    unknown_sequence = api.post(url, json={"sequence_id": "no-such-sequence"})
    assert unknown_sequence.status_code == 404 and unknown_sequence.json["error"]["code"] == "not_found"
    # Another organization sees neither the contact nor the sequence.
    assert other_api.post(url, json={}).status_code == 404
    read_only = make_key("acme", ["sequences:read"], "ro")
    denied = client.post(url, json={}, headers={"Authorization": f"Bearer {read_only}"})
    assert denied.status_code == 403 and denied.json["error"]["code"] == "sequences_write_denied"
    assert api.get(f"/api/v1/sequences/{welcome['id']}/enrollments?status=active").json["meta"]["total"] == 1

    done = api.post(url, json={}).json["data"]
    assert [(e["status"], e["exit_reason"]) for e in done["enrollments"]] == [("exited", "manual")]


def test_already_enrolled_names_the_live_enrollment(api):
    """A retried enroll (Zapier replays a step, n8n retries on fail) can answer the enrollment
    the first attempt made: the 409 names it."""
    welcome = active_sequence(api)
    ada = contact(api, email="ada@example.com")
    url = f"/api/v1/sequences/{welcome['id']}/enroll"
    first = api.post(url, json={"contact_id": ada["id"]})
    assert first.status_code == 201
    again = api.post(url, json={"email": "ADA@example.com"})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "already_enrolled"
    assert again.json["error"]["details"] == {
        "contact_id": ada["id"],
        "enrollment_id": first.json["data"]["id"],
    }
    # Once it has ended, enrolling again is a new enrollment, not a conflict.
    api.post(f"/api/v1/contacts/{ada['id']}/unenroll", json={})
    assert api.post(url, json={"contact_id": ada["id"]}).status_code == 201
