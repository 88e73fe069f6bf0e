"""Contacts and the /customers alias: CRUD, normalisation, filters, pagination, tags, hooks."""

from __future__ import annotations

import pytest


def _create(api, **fields):
    response = api.post("/api/v1/contacts", json=fields)
    assert response.status_code == 201, response.json
    return response.json["data"]


def test_create_normalises_and_returns_every_field(api, clock):
    company = api.post("/api/v1/companies", json={"name": "Initech"}).json["data"]
    data = _create(
        api,
        email="  Ada@Example.COM ",
        phone="whatsapp:+44 20 7946 0958",
        first_name="Ada",
        last_name="Lovelace",
        contact_type="lead",
        source="typeform",
        job_title="CTO",
        city="London",
        state=None,
        country="GB",
        tags=["vip", "beta", "vip"],
        timezone="Europe/London",
        company_id=company["id"],
        attributes={"plan": "pro", "seats": 3},
    )
    assert data["email"] == "Ada@Example.COM"
    assert data["phone"] == "+442079460958"
    assert data["tags"] == ["beta", "vip"]
    assert data["status"] == "active" and data["converted"] is False
    assert data["company_id"] == company["id"]
    assert data["attributes"] == {"plan": "pro", "seats": 3}
    assert data["created_at"] == clock.now().isoformat().replace("+00:00", "Z")
    assert api.get(f"/api/v1/contacts/{data['id']}").json["data"] == data


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("16505551234", "+16505551234"),
        ("+1 (650) 555-1234", "+16505551234"),
        ("0049 30 901820", "+4930901820"),
        ("whatsapp:+14155238886", "+14155238886"),
    ],
)
def test_phone_numbers_are_stored_in_e164(api, phone, e164):
    assert _create(api, phone=phone)["phone"] == e164


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"email": "not-an-email"}, "$.email"),
        ({"phone": "12"}, "$.phone"),
        ({"email": "a@b.co", "timezone": "Mars/Olympus"}, "$.timezone"),
        ({"email": "a@b.co", "tags": ["  "]}, "$.tags[0]"),
        ({"first_name": "Nobody"}, "$"),
        ({"email": "a@b.co", "status": "gone"}, "$.status"),
    ],
)
def test_invalid_values_name_the_field(api, fields, path):
    response = api.post("/api/v1/contacts", json=fields)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "validation_failed"
    assert response.json["error"]["details"]["errors"][0]["path"] == path


def test_email_is_unique_per_organization_case_insensitively(api, other_api):
    first = _create(api, email="ada@example.com")
    clash = api.post("/api/v1/contacts", json={"email": "ADA@example.com"})
    assert clash.status_code == 409
    assert clash.json["error"] == {
        "code": "email_taken",
        "message": "A contact with this email already exists.",
        "details": {"existing_id": first["id"]},
    }
    # Another organization may hold the same address.
    assert other_api.post("/api/v1/contacts", json={"email": "ada@example.com"}).status_code == 201
    # Changing another contact's email onto a taken one is refused too.
    second = _create(api, email="grace@example.com")
    moved = api.patch(f"/api/v1/contacts/{second['id']}", json={"email": "Ada@Example.com"})
    assert moved.status_code == 409 and moved.json["error"]["code"] == "email_taken"


def test_patch_changes_only_given_fields_and_tags_replace(api, clock):
    contact = _create(api, email="ada@example.com", first_name="Ada", tags=["a", "b"])
    clock.advance(minutes=5)
    response = api.patch(
        f"/api/v1/contacts/{contact['id']}",
        json={"last_name": "Lovelace", "tags": ["b", "c"], "status": "unsubscribed", "city": None},
    )
    assert response.status_code == 200
    data = response.json["data"]
    assert data["first_name"] == "Ada" and data["last_name"] == "Lovelace"
    assert data["tags"] == ["b", "c"]
    assert data["status"] == "unsubscribed"
    assert data["updated_at"] != contact["updated_at"] and data["created_at"] == contact["created_at"]
    empty = api.patch(f"/api/v1/contacts/{contact['id']}", json={})
    assert empty.status_code == 400 and empty.json["error"]["code"] == "validation_failed"


def test_tags_add_and_remove(api):
    contact = _create(api, email="ada@example.com", tags=["a"])
    added = api.post(f"/api/v1/contacts/{contact['id']}/tags", json={"tags": ["b", "a", "c"]})
    assert added.status_code == 200 and added.json["data"]["tags"] == ["a", "b", "c"]
    removed = api.delete(f"/api/v1/contacts/{contact['id']}/tags/b")
    assert removed.status_code == 200 and removed.json["data"]["tags"] == ["a", "c"]
    missing = api.delete(f"/api/v1/contacts/{contact['id']}/tags/zzz")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "tag_not_found"


def test_delete_then_404(api):
    contact = _create(api, email="ada@example.com", tags=["x"])
    assert api.delete(f"/api/v1/contacts/{contact['id']}").status_code == 204
    gone = api.get(f"/api/v1/contacts/{contact['id']}")
    assert gone.status_code == 404 and gone.json["error"]["code"] == "not_found"
    assert api.delete(f"/api/v1/contacts/{contact['id']}").status_code == 404
    # The email is free again.
    assert api.post("/api/v1/contacts", json={"email": "ada@example.com"}).status_code == 201


def test_filters_and_lookup_by_email_and_phone(api, clock):
    a = _create(api, email="a@x.com", phone="+14155550001", city="Berlin", tags=["vip"], contact_type="lead")
    clock.advance(seconds=1)
    b = _create(
        api, email="b@x.com", phone="+14155550002", city="Berlin", contact_type="customer", converted=True
    )
    _create(api, email="c@x.com", city="Paris")

    def ids(query):
        response = api.get(f"/api/v1/contacts?{query}")
        assert response.status_code == 200, response.json
        return [c["id"] for c in response.json["data"]]

    assert ids("city=Berlin") == [a["id"], b["id"]]
    assert ids("email=A@X.COM") == [a["id"]]
    assert ids("phone=14155550002") == [b["id"]]
    assert ids("tag=vip") == [a["id"]]
    assert ids("contact_type=customer&converted=true") == [b["id"]]
    assert ids("city=Berlin&status=unsubscribed") == []


def test_offset_pagination_meta(api, clock):
    created = []
    for n in range(5):
        created.append(_create(api, email=f"p{n}@x.com")["id"])
        clock.advance(seconds=1)
    first = api.get("/api/v1/contacts?limit=2").json
    assert [c["id"] for c in first["data"]] == created[:2]
    assert first["meta"] == {"total": 5, "limit": 2, "offset": 0, "next_offset": 2}
    last = api.get("/api/v1/contacts?limit=2&offset=4").json
    assert [c["id"] for c in last["data"]] == created[4:]
    assert last["meta"] == {"total": 5, "limit": 2, "offset": 4, "next_offset": None}


def test_customers_is_the_same_resource(api):
    via_customers = api.post("/api/v1/customers", json={"email": "c@x.com", "first_name": "C"})
    assert via_customers.status_code == 201
    customer_id = via_customers.json["data"]["id"]
    assert api.get(f"/api/v1/contacts/{customer_id}").json["data"] == via_customers.json["data"]
    patched = api.patch(f"/api/v1/customers/{customer_id}", json={"first_name": "Cee"})
    assert patched.json["data"]["first_name"] == "Cee"
    assert [c["id"] for c in api.get("/api/v1/customers").json["data"]] == [customer_id]
    assert api.delete(f"/api/v1/customers/{customer_id}").status_code == 204
    assert api.get(f"/api/v1/contacts/{customer_id}").status_code == 404


def test_unknown_company_reference_is_refused(api):
    response = api.post("/api/v1/contacts", json={"email": "a@x.com", "company_id": "nope"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "company_not_found"
    assert response.json["error"]["details"]["errors"][0]["path"] == "$.company_id"


def test_created_and_tag_listeners_run_inside_the_write(api, services):
    """The clean hook auto-enrollment plugs into: listeners see the contact and only new tags."""
    seen = []
    services.contacts.created_listeners.append(
        lambda tx, caller, contact: seen.append(("created", contact["email"]))
    )
    services.contacts.tags_added_listeners.append(
        lambda tx, caller, contact, tags: seen.append(("tags", contact["email"], tags))
    )
    contact = _create(api, email="a@x.com", tags=["x"])
    api.post(f"/api/v1/contacts/{contact['id']}/tags", json={"tags": ["x", "y"]})
    api.patch(f"/api/v1/contacts/{contact['id']}", json={"tags": ["y", "z"]})
    assert seen == [
        ("created", "a@x.com"),
        ("tags", "a@x.com", ["x"]),
        ("tags", "a@x.com", ["y"]),
        ("tags", "a@x.com", ["z"]),
    ]


def test_a_failing_listener_rolls_back_the_contact(api, services):
    def boom(tx, caller, contact):
        raise RuntimeError("listener failed")

    services.contacts.created_listeners.append(boom)
    response = api.post("/api/v1/contacts", json={"email": "a@x.com"})
    assert response.status_code == 500
    services.contacts.created_listeners.remove(boom)
    assert api.get("/api/v1/contacts").json["meta"]["total"] == 0
