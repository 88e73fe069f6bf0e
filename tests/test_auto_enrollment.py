"""Auto-enrollment: contact_created and tag_added sequences (seed 003), on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.factories import active_sequence, contact


def _enrolled(api, sequence):
    return sorted(
        e["contact_id"] for e in api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]
    )


def test_creating_a_customer_enrolls_it_into_contact_created_sequences(api):
    welcome = active_sequence(api, name="Welcome", trigger_type="contact_created")
    manual = active_sequence(api, name="Manual")
    draft = api.post("/api/v1/sequences", json={"name": "Draft", "trigger_type": "contact_created"}).json[
        "data"
    ]
    created = api.post("/api/v1/customers", json={"email": "lead@example.com", "first_name": "Lee"})
    assert created.status_code == 201
    lead = created.json["data"]
    assert _enrolled(api, welcome) == [lead["id"]]
    assert _enrolled(api, manual) == [] and _enrolled(api, draft) == []
    via_contacts = contact(api)
    assert _enrolled(api, welcome) == sorted([lead["id"], via_contacts["id"]])
    event = api.get("/api/v1/audit-events?tag=api:enrollment:created").json["data"][0]
    assert event["data"]["source"] == "auto:contact_created"


def test_tags_enroll_into_matching_tag_added_sequences_when_supplied_or_added_later(api):
    vip = active_sequence(api, name="VIP", trigger_type="tag_added", trigger_config={"tag": "vip"})
    beta = active_sequence(api, name="Beta", trigger_type="tag_added", trigger_config={"tag": "beta"})
    tagged = contact(api, tags=["vip", "other"])
    assert _enrolled(api, vip) == [tagged["id"]] and _enrolled(api, beta) == []

    later = contact(api)
    assert _enrolled(api, beta) == []
    api.post(f"/api/v1/contacts/{later['id']}/tags", json={"tags": ["beta"]})
    assert _enrolled(api, beta) == [later["id"]]
    api.patch(f"/api/v1/contacts/{later['id']}", json={"tags": ["beta", "vip"]})
    assert _enrolled(api, vip) == sorted([tagged["id"], later["id"]])
    # Re-adding a tag the contact already has starts nothing new.
    api.post(f"/api/v1/contacts/{later['id']}/tags", json={"tags": ["vip"]})
    assert len(_enrolled(api, vip)) == 2
    sources = {
        e["data"]["source"] for e in api.get("/api/v1/audit-events?tag=api:enrollment:created").json["data"]
    }
    assert sources == {"auto:tag_added"}


def test_a_tag_added_sequence_without_a_tag_enrolls_nobody_until_patch_gives_it_one(api):
    created = api.post("/api/v1/sequences", json={"name": "Later", "trigger_type": "tag_added"})
    assert created.status_code == 201, created.json
    sequence = created.json["data"]
    step = {"channel": "email", "subject": "Hi", "body": "Hi", "delay_days": 0}
    assert api.post(f"/api/v1/sequences/{sequence['id']}/steps", json=step).status_code == 201
    assert api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"}).status_code == 200
    early = contact(api, tags=["vip"])
    api.post(f"/api/v1/contacts/{early['id']}/tags", json={"tags": ["anything"]})
    assert _enrolled(api, sequence) == []  # no tag: nothing automatically
    manual = contact(api)
    enrolled = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": manual["id"]})
    assert enrolled.status_code == 201  # an explicit enroll works as for any active sequence
    patched = api.patch(f"/api/v1/sequences/{sequence['id']}", json={"trigger_config": {"tag": "vip"}})
    assert patched.status_code == 200 and patched.json["data"]["trigger_config"] == {"tag": "vip"}
    tagged = contact(api, tags=["vip"])
    assert _enrolled(api, sequence) == sorted([manual["id"], tagged["id"]])


def test_ineligible_contacts_are_skipped_and_the_skip_is_audited(api):
    welcome = active_sequence(api, trigger_type="contact_created")
    vip = active_sequence(api, name="VIP", trigger_type="tag_added", trigger_config={"tag": "vip"})
    blocked = contact(api, status="unsubscribed", tags=["vip"])
    assert _enrolled(api, welcome) == [] and _enrolled(api, vip) == []
    skips = api.get("/api/v1/audit-events?tag=api:enrollment:skipped&order=asc").json["data"]
    assert [(s["data"]["sequence_id"], s["data"]["reason"], s["data"]["source"]) for s in skips] == [
        (welcome["id"], "contact_status:unsubscribed", "auto:contact_created"),
        (vip["id"], "contact_status:unsubscribed", "auto:tag_added"),
    ]
    assert all(s["subject"] == {"type": "contact", "id": blocked["id"]} for s in skips)
    # The contact itself was created.
    assert api.get(f"/api/v1/contacts/{blocked['id']}").json["data"]["status"] == "unsubscribed"


def test_already_enrolled_contacts_are_skipped_when_tagged_again(api):
    vip = active_sequence(api, name="VIP", trigger_type="tag_added", trigger_config={"tag": "vip"})
    person = contact(api, tags=["vip"])
    api.delete(f"/api/v1/contacts/{person['id']}/tags/vip")
    api.post(f"/api/v1/contacts/{person['id']}/tags", json={"tags": ["vip"]})  # still live in VIP
    assert _enrolled(api, vip) == [person["id"]]
    skip = api.get("/api/v1/audit-events?tag=api:enrollment:skipped").json["data"][0]
    assert skip["data"]["code"] == "already_enrolled"
