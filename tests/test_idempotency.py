"""Idempotency-Key on the API's POST routes: a retry gets the first answer and changes nothing."""

from __future__ import annotations

from datetime import timedelta

from tests import factories


def test_a_retried_enroll_replays_the_first_answer_and_enrolls_once(api):
    sequence = factories.active_sequence(api)
    person = factories.contact(api)
    headers = {"Idempotency-Key": "delivery-1:action-0"}
    first = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}, headers=headers
    )
    again = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}, headers=headers
    )
    assert first.status_code == 201
    assert again.status_code == 201 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]) == 1
    created = [
        e for e in api.get("/api/v1/audit-events").json["data"] if e["tag"] == "api:enrollment:created"
    ]
    assert len(created) == 1
    # Without the key the same request is a new one: already enrolled.
    plain = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]})
    assert plain.status_code == 409 and plain.json["error"]["code"] == "already_enrolled"


def test_the_same_key_with_another_request_is_refused_and_keys_are_per_organization(api, other_api):
    headers = {"Idempotency-Key": "k-1"}
    assert api.post("/api/v1/contacts", json={"email": "a@example.com"}, headers=headers).status_code == 201
    reused = api.post("/api/v1/contacts", json={"email": "b@example.com"}, headers=headers)
    assert reused.status_code == 422 and reused.json["error"]["code"] == "idempotency_key_reused"
    # Another organization's identical key is its own.
    assert (
        other_api.post("/api/v1/contacts", json={"email": "a@example.com"}, headers=headers).status_code
        == 201
    )
    bad = api.post(
        "/api/v1/contacts", json={"email": "c@example.com"}, headers={"Idempotency-Key": "x" * 300}
    )
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_idempotency_key"


def test_answers_are_kept_but_not_validation_failures_and_keys_expire_after_a_day(api, clock):
    headers = {"Idempotency-Key": "k-err"}
    path = "/api/v1/sequences/00000000-0000-0000-0000-000000000000/enroll"
    first = api.post(path, json={"customer_id": "c"}, headers=headers)
    again = api.post(path, json={"customer_id": "c"}, headers=headers)
    assert first.status_code == again.status_code == 404 and again.headers["Idempotent-Replayed"] == "true"
    # A request the contract refuses never ran: nothing is kept, the retry is checked again.
    invalid = {"Idempotency-Key": "k-invalid"}
    assert api.post("/api/v1/contacts", json={"emial": "a@example.com"}, headers=invalid).status_code == 400
    fixed = api.post("/api/v1/contacts", json={"email": "a@example.com"}, headers=invalid)
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed.headers
    clock.advance(timedelta(hours=25))
    fresh = api.post(path, json={"customer_id": "c"}, headers=headers)
    assert fresh.status_code == 404 and "Idempotent-Replayed" not in fresh.headers


def test_a_key_held_by_a_request_that_died_is_free_after_its_lock(api, services, clock):
    from seqbridge.services.idempotency import request_hash

    caller = type("C", (), {"org_id": factories.org_id(api)})()
    fingerprint = request_hash("POST", "/api/v1/contacts", b"", b'{"email": "z@example.com"}')
    assert services.idempotency.begin(caller, "k-dead", "POST", "/api/v1/contacts", fingerprint) is None
    busy = api.post(
        "/api/v1/contacts",
        data='{"email": "z@example.com"}',
        headers={"Idempotency-Key": "k-dead", "Content-Type": "application/json"},
    )
    assert busy.status_code == 409 and busy.json["error"]["code"] == "idempotency_key_in_use"
    clock.advance(timedelta(seconds=61))
    retried = api.post(
        "/api/v1/contacts",
        data='{"email": "z@example.com"}',
        headers={"Idempotency-Key": "k-dead", "Content-Type": "application/json"},
    )
    assert retried.status_code == 201
