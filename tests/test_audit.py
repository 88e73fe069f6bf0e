"""The audit log: one event per write, filters, cursor pages, redaction, and the hash chain."""

from __future__ import annotations

import itertools
import threading

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update

from seqbridge.audit import REDACTED, redact, verify_chain
from seqbridge.cli import main
from seqbridge.storage.schema import audit_events


def _events(api, query=""):
    response = api.get(f"/api/v1/audit-events?order=asc&limit=200{query}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def _me(api):
    return api.get("/api/v1/me").json["data"]


def test_every_api_write_records_one_event_with_actor_subject_and_request(api):
    me = _me(api)
    contact = api.post("/api/v1/contacts", json={"email": "a@x.com"}, headers={"X-Request-Id": "req-1"}).json[
        "data"
    ]
    api.patch(f"/api/v1/contacts/{contact['id']}", json={"first_name": "A"})
    api.post(f"/api/v1/contacts/{contact['id']}/tags", json={"tags": ["t"]})
    api.delete(f"/api/v1/contacts/{contact['id']}/tags/t")
    company = api.post("/api/v1/companies", json={"name": "Initech"}).json["data"]
    api.patch(f"/api/v1/companies/{company['id']}", json={"industry": "software"})
    api.delete(f"/api/v1/companies/{company['id']}")
    api.delete(f"/api/v1/contacts/{contact['id']}")
    api.get(f"/api/v1/contacts/{contact['id']}")  # reads record nothing

    events = [e for e in _events(api) if e["tag"].startswith("api:")]
    assert [e["tag"] for e in events] == [
        "api:contact:created",
        "api:contact:updated",
        "api:contact:updated",
        "api:contact:updated",
        "api:company:created",
        "api:company:updated",
        "api:company:deleted",
        "api:contact:deleted",
    ]
    assert all(e["actor"] == {"type": "api_key", "id": me["key_id"]} for e in events)
    assert events[0]["subject"] == {"type": "contact", "id": contact["id"]}
    assert events[0]["request_id"] == "req-1"
    assert events[0]["data"]["email"] == "a@x.com"
    assert events[1]["data"] == {"changes": {"first_name": "A"}}
    assert events[2]["data"] == {"tags_added": ["t"], "tags": ["t"]}
    assert events[5]["data"] == {"changes": {"industry": "software"}}


def test_failed_writes_record_nothing(api):
    api.post("/api/v1/contacts", json={"email": "a@x.com"})
    before = len(_events(api))
    assert api.post("/api/v1/contacts", json={"email": "A@x.com"}).status_code == 409
    assert api.post("/api/v1/contacts", json={"email": 5}).status_code == 400
    assert len(_events(api)) == before


def test_filters_by_tag_subject_actor_and_time(api, make_key, client, clock):
    from tests.conftest import Api

    second = Api(client, make_key("acme", ["contacts:write", "audit:read"], "second"))
    first_contact = api.post("/api/v1/contacts", json={"email": "a@x.com"}).json["data"]
    start = clock.advance(hours=1)
    second_contact = second.post("/api/v1/contacts", json={"email": "b@x.com"}).json["data"]
    api.patch(f"/api/v1/contacts/{second_contact['id']}", json={"city": "Oslo"})

    created = _events(api, "&tag=api:contact:created")
    assert [e["subject"]["id"] for e in created] == [first_contact["id"], second_contact["id"]]
    both = _events(api, "&tag=api:contact:created&tag=api:contact:updated")
    assert len(both) == 3
    about_second = _events(api, f"&subject_type=contact&subject_id={second_contact['id']}")
    assert [e["tag"] for e in about_second] == ["api:contact:created", "api:contact:updated"]
    by_second_key = _events(api, f"&actor={_me(second)['key_id']}")
    assert [e["subject"]["id"] for e in by_second_key] == [second_contact["id"]]
    since = start.isoformat().replace("+00:00", "Z")
    assert len(_events(api, f"&since={since}")) == 2
    assert [e["subject"]["id"] for e in _events(api, f"&until={since}&tag=api:contact:created")] == [
        first_contact["id"]
    ]
    bad = api.get("/api/v1/audit-events?since=yesterday")
    assert bad.status_code == 400 and bad.json["error"]["details"]["errors"][0]["path"] == "since"


def test_cursor_pages_are_stable_while_events_are_appended(api):
    for n in range(5):
        api.post("/api/v1/contacts", json={"email": f"p{n}@x.com"})
    seen = []
    page = api.get("/api/v1/audit-events?limit=2&tag=api:contact:created").json
    while True:
        seen.extend(e["id"] for e in page["data"])
        # New events arrive between pages; newest-first paging must neither repeat nor skip.
        api.post("/api/v1/contacts", json={"email": f"late{len(seen)}@x.com"})
        if not page["meta"]["has_more"]:
            break
        page = api.get(
            f"/api/v1/audit-events?limit=2&tag=api:contact:created&cursor={page['meta']['next_cursor']}"
        ).json
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)
    bad = api.get("/api/v1/audit-events?cursor=garbage!")
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_cursor"


def test_secrets_are_redacted_from_audit_data(api):
    contact = api.post(
        "/api/v1/contacts",
        json={
            "email": "a@x.com",
            "attributes": {
                "api_key": "k-123",
                "nested": {"password": "hunter2", "note": "key rk_live_" + "A" * 43},
                "webhook_secret": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0",
                "plain": "visible",
            },
        },
    ).json["data"]
    event = _events(api, "&tag=api:contact:created")[0]
    attributes = event["data"]["attributes"]
    assert attributes["api_key"] == REDACTED
    assert attributes["nested"]["password"] == REDACTED
    assert attributes["nested"]["note"] == f"key {REDACTED}"
    assert attributes["webhook_secret"] == REDACTED
    assert attributes["plain"] == "visible"
    assert "hunter2" not in str(event)
    # The contact itself keeps what the caller stored: redaction is for the audit trail.
    assert (
        api.get(f"/api/v1/contacts/{contact['id']}").json["data"]["attributes"]["nested"]["password"]
        == "hunter2"
    )


def test_redact_unit():
    assert redact({"Authorization": "Bearer x", "token": "", "list": [{"secret": 1}], "n": 3}) == {
        "Authorization": REDACTED,
        "token": "",
        "list": [{"secret": REDACTED}],
        "n": 3,
    }


# The chain --------------------------------------------------------------------------------------


def _fill(api, other_api):
    for n in range(3):
        api.post("/api/v1/contacts", json={"email": f"a{n}@x.com"})
        other_api.post("/api/v1/contacts", json={"email": f"b{n}@x.com"})


def test_chain_links_each_event_to_its_predecessor_per_organization(api, other_api, services):
    _fill(api, other_api)
    events = _events(api)
    assert events[0]["prev_hash"] == ""
    for previous, current in itertools.pairwise(events):
        assert current["prev_hash"] == previous["hash"]
    checked, problems = verify_chain(services.db)
    assert problems == [] and checked == len(events) + len(_events(other_api))


def _cli_verify(database_url, monkeypatch):
    monkeypatch.setenv("SEQBRIDGE_DATABASE_URL", database_url)
    return CliRunner().invoke(main, ["audit", "verify"])


def test_verify_fails_after_a_manual_update_naming_the_event(
    api, other_api, services, database_url, monkeypatch
):
    _fill(api, other_api)
    ok = _cli_verify(database_url, monkeypatch)
    assert ok.exit_code == 0 and "audit chain intact" in ok.output
    target = _events(api)[2]
    with services.db.engine.begin() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.id == target["id"])
            .values(data={"email": "forged@x.com"})
        )
    result = _cli_verify(database_url, monkeypatch)
    assert result.exit_code == 1
    assert f"event {target['id']}" in result.output and "edited" in result.output
    # The other organization's chain is untouched and not reported.
    assert result.output.count("BROKEN") == 1


def test_verify_detects_a_deleted_event_and_a_truncated_tail(api, other_api, services):
    _fill(api, other_api)
    events = _events(api)
    with services.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.id == events[1]["id"]))
    _, problems = verify_chain(services.db)
    assert [(p.event_id, "deleted" in p.problem) for p in problems] == [(events[2]["id"], True)]


def test_verify_detects_a_deleted_newest_event(api, services):
    api.post("/api/v1/contacts", json={"email": "a@x.com"})
    newest = _events(api)[-1]
    with services.db.engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.id == newest["id"]))
    _, problems = verify_chain(services.db)
    assert len(problems) == 1 and "truncated" in problems[0].problem


def test_concurrent_writers_never_fork_the_chain(api, services, backend):
    errors = []

    def write(n):
        for i in range(5):
            response = api.post("/api/v1/contacts", json={"email": f"w{n}-{i}@x.com"})
            if response.status_code != 201:
                errors.append(response.json)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    checked, problems = verify_chain(services.db)
    assert problems == []
    with services.db.engine.connect() as conn:
        hashes = conn.execute(select(audit_events.c.prev_hash)).scalars().all()
    assert len(hashes) == len(set(hashes)) == checked  # no two events share a predecessor


@pytest.mark.parametrize("scopes", [["contacts:write"], ["hooks:read"]])
def test_reading_the_log_needs_audit_read(client, make_key, scopes):
    from tests.conftest import Api

    response = Api(client, make_key("acme", scopes)).get("/api/v1/audit-events")
    assert response.status_code == 403 and response.json["error"]["code"] == "audit_read_denied"


@pytest.mark.parametrize("request_id", [None, "req-1"])
def test_the_hashed_form_is_canonical_json(request_id):
    """The template that builds the hashed bytes equals json.dumps of the same event."""
    import json
    from datetime import UTC, datetime

    from seqbridge.audit import _canonical

    row = {
        "org_id": "o-1",
        "occurred_at": datetime(2026, 1, 5, 9, 0, 0, 5, tzinfo=UTC),
        "actor_type": "api_key",
        "actor_id": 'k "quoted" \\ ünïcödé 🚀',
        "tag": "api:contact:created",
        "subject_type": "contact",
        "subject_id": "c\n1\t\u0001",
        "request_id": request_id,
        "prev_hash": "ab" * 32,
        "data": {"z": [1, 2.5, None, True], "a": {"ü": "\u2028"}},
    }
    generic = {k: v for k, v in row.items() if k != "data"}
    generic["occurred_at"] = "2026-01-05T09:00:00.000005+00:00"
    rest = json.dumps(generic, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = json.dumps(row["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _canonical(row).decode() == '{"data":' + data + "," + rest[1:]


def test_appended_events_store_what_the_plain_canonical_form_gives(services, make_key):
    """The batched append splices each event's hashed text from shared pieces (the caller's
    actor, time and ``via`` serialised once); what it stores and chains must be exactly
    ``_dumps(redact({**data, "via": via}))`` and the hash :func:`verify_chain` recomputes, for
    data with secrets, keys that sort after ``via``, a ``via`` key of its own, none at all."""
    from datetime import UTC, datetime

    from seqbridge.audit import AuditTag, _dumps, record_each
    from seqbridge.context import Actor, ActorType, Caller

    make_key("acme")
    with services.db.transaction(write=False) as tx:
        org_id = tx.audit.chain_heads()[0]["org_id"]
    now = datetime(2026, 1, 5, 9, 0, 0, 5, tzinfo=UTC)
    via = {"hook": "h", "delivery_id": "d-1", "rule": "stop"}
    callers = [
        Caller(org_id, Actor(ActorType.HOOK, "h"), "req-1", via=via),
        Caller(org_id, Actor(ActorType.HOOK, "h"), None, via={"hook": "h", "token": "t0ps3cret"}),
        Caller(org_id, Actor(ActorType.API_KEY, 'k "q" ü'), "req-2"),
    ]
    datas = [
        {"changes": {"status": "unsubscribed"}},
        {"a": 1, "zeta": [1, None, True], "ü": "ß"},
        {"via": "mine", "b": 2},
        {"Authorization": "Bearer x", "nested": [{"api_key": "k"}], "text": "rk_live_" + "a" * 24},
        {"reason": "the token expired", "dedupe_keys": ["k1"]},
        {"\u017fecret": "a long s"},
        {},
        None,
    ]
    entries = [
        (caller, AuditTag.API_CONTACT_UPDATED, "contact", f"c-{n}\n", data)
        for n, (caller, data) in enumerate(itertools.product(callers, datas))
    ]
    with services.db.transaction() as tx:
        record_each(tx, entries, now)
    with services.db.transaction(write=False) as tx:
        stored = list(tx.audit.iter_chain(org_id))[-len(entries) :]
    for event, (caller, _tag, _type, subject_id, data) in zip(stored, entries, strict=True):
        expected = dict(data or {})
        if caller.via:
            expected["via"] = caller.via
        assert event["subject_id"] == subject_id
        assert _dumps(event["data"]) == _dumps(redact(expected))
    assert stored[1 * len(datas) + 0]["data"]["via"]["token"] == REDACTED
    assert stored[3]["data"]["Authorization"] == REDACTED and "rk_live_" not in str(stored[3]["data"])
    assert stored[5]["data"]["\u017fecret"] == REDACTED
    assert stored[2]["data"]["via"] == via  # the caller's via wins over the data's own
    checked, problems = verify_chain(services.db, org_id)
    assert problems == [] and checked >= len(entries)
