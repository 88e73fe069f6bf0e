from __future__ import annotations


def test_company_crud_filters_and_unlinking(api, clock):
    created = api.post(
        "/api/v1/companies",
        json={
            "name": "Initech",
            "account_type": "partner",
            "industry": "software",
            "is_customer": True,
            "city": "Austin",
            "state": "TX",
            "country": "US",
        },
    )
    assert created.status_code == 201
    company = created.json["data"]
    assert company["name"] == "Initech" and company["is_customer"] is True and company["is_supplier"] is False
    clock.advance(seconds=1)
    other = api.post("/api/v1/companies", json={"name": "Globex", "is_supplier": True}).json["data"]

    assert [c["id"] for c in api.get("/api/v1/companies?account_type=partner").json["data"]] == [
        company["id"]
    ]
    assert [c["id"] for c in api.get("/api/v1/companies?is_supplier=true").json["data"]] == [other["id"]]
    listed = api.get("/api/v1/companies?limit=1").json
    assert listed["meta"] == {"total": 2, "limit": 1, "offset": 0, "next_offset": 1}

    updated = api.patch(f"/api/v1/companies/{company['id']}", json={"industry": "fintech", "city": None})
    assert updated.json["data"]["industry"] == "fintech" and updated.json["data"]["city"] is None

    contact = api.post("/api/v1/contacts", json={"email": "a@x.com", "company_id": company["id"]}).json[
        "data"
    ]
    assert api.delete(f"/api/v1/companies/{company['id']}").status_code == 204
    assert api.get(f"/api/v1/companies/{company['id']}").status_code == 404
    # The contact stays, unlinked.
    assert api.get(f"/api/v1/contacts/{contact['id']}").json["data"]["company_id"] is None


def test_company_name_is_required_and_not_blank(api):
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 201}):
        response = api.post("/api/v1/companies", json=body)
        assert response.status_code == 400, body
        assert response.json["error"]["code"] == "validation_failed"
        assert response.json["error"]["details"]["errors"][0]["path"] in ("$", "$.name")
