"""Dedupe windows: a key that is only a hash of the body (Zapier, n8n, a form: no id of the sender's
own) makes a repeat a duplicate for the hook's ``dedupe`` window, not for a week; a provider's own
id keeps its delivery's lifetime. A duplicate's answer says what became of the original and where
to replay it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from connectors.base import InboundRequest
from seqbridge.mapping.registry import HookRegistry
from tests import factories
from tests.test_hooks import drain, write_mapping

HOOKS = """
hooks:
  zap:
    organization: acme
    source: {connector: zapier, token: zap-token}
    rules:
      - name: enroll
        when: {field: event.payload.email, exists: true}
        actions:
          - upsert_contact: {email: "{{ event.payload.email }}"}
          - enroll: {sequence: Welcome, contact: {email: {path: event.payload.email}}}
  zap-short:
    organization: acme
    dedupe: 90s
    source: {connector: zapier, token: zap-token}
    rules: []
  zap-never:
    organization: acme
    dedupe: 0
    source: {connector: zapier, token: zap-token}
    rules: []
"""
BODY = {"email": "ada@example.com", "first_name": "Ada"}


@pytest.fixture
def hooks(app_config, api):
    write_mapping(app_config, HOOKS)
    return api


def _post(client, hook: str = "zap", **headers):
    return client.post(f"/hooks/{hook}", json=BODY, headers={"X-Seqbridge-Token": "zap-token", **headers})


def test_the_same_body_within_the_window_is_a_duplicate_naming_the_originals_fate(
    hooks, client, services, clock
):
    api = hooks
    first = _post(client)
    assert first.status_code == 202, first.json
    original = first.json["data"]["delivery_id"]
    assert drain(services) == 1  # no "Welcome" sequence yet: the enroll fails
    assert api.get(f"/api/v1/deliveries/{original}").json["data"]["status"] == "failed"

    clock.advance(timedelta(minutes=9))
    again = _post(client)
    assert again.status_code == 200
    data = again.json["data"]
    assert data["status"] == "duplicate" and data["delivery_id"] == original
    assert data["original"] == {
        "status": "failed",
        "received_at": first_time(api, original),
        "path": f"/api/v1/deliveries/{original}",
        "replay_path": f"/api/v1/deliveries/{original}/replay",
        "dedupe_until": data["original"]["dedupe_until"],
    }
    # The default window is 10 minutes from the original.
    assert data["original"]["dedupe_until"] == "2026-01-05T09:10:00Z"
    assert drain(services) == 0  # nothing acts

    # Where the answer says: fix the cause, replay the original.
    factories.active_sequence(api, name="Welcome")
    assert api.post(data["original"]["replay_path"]).status_code == 202
    assert drain(services) == 1
    assert api.get(data["original"]["path"]).json["data"]["status"] == "processed"


def test_the_same_body_after_the_window_is_a_new_delivery(hooks, client, services, clock):
    api = hooks
    factories.active_sequence(api, name="Welcome")
    first = _post(client).json["data"]["delivery_id"]
    assert drain(services) == 1
    clock.advance(timedelta(minutes=10, seconds=1))
    later = _post(client)
    assert later.status_code == 202 and later.json["data"]["status"] == "queued"
    assert later.json["data"]["delivery_id"] != first
    assert drain(services) == 1
    # It took the key over: a repeat now names the new delivery, with a new window.
    again = _post(client).json["data"]
    assert again["status"] == "duplicate" and again["delivery_id"] == later.json["data"]["delivery_id"]
    assert again["original"]["dedupe_until"] == "2026-01-05T09:20:01Z"
    listed = {d["id"] for d in api.get("/api/v1/deliveries").json["data"]}
    assert listed == {first, later.json["data"]["delivery_id"]}


def test_a_hooks_dedupe_setting_sets_the_window(hooks, client, clock):
    first = _post(client, "zap-short").json["data"]["delivery_id"]
    clock.advance(timedelta(seconds=60))
    assert _post(client, "zap-short").json["data"]["status"] == "duplicate"
    clock.advance(timedelta(seconds=31))
    assert _post(client, "zap-short").json["data"]["delivery_id"] != first
    # dedupe: 0 — every repeat of a body is a new delivery.
    ids = {_post(client, "zap-never").json["data"]["delivery_id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_senders_own_id_is_a_duplicate_for_as_long_as_its_delivery_is_kept(hooks, client, services, clock):
    first = _post(client, **{"Idempotency-Key": "zap-run-1"}).json["data"]["delivery_id"]
    clock.advance(timedelta(days=3))
    again = _post(client, **{"Idempotency-Key": "zap-run-1"}).json["data"]
    assert again["status"] == "duplicate" and again["delivery_id"] == first
    assert "dedupe_until" not in again["original"]
    # Another id with the same body is another delivery, window or not.
    assert _post(client, **{"Idempotency-Key": "zap-run-2"}).json["data"]["status"] == "queued"


def test_two_copies_in_one_commit_are_one_delivery_and_a_duplicate(hooks, services):
    """Concurrent repeats share a commit: the first claims the key, the second is its duplicate,
    although neither was committed when the other arrived."""
    inbox = services.inbox
    hook = inbox.hook("zap")
    body = b'{"email": "a@b.co"}'
    request = InboundRequest("POST", "", {"x-seqbridge-token": "zap-token"}, {}, body, "application/json")
    results = []

    def receive() -> None:
        results.append(inbox.receive(hook, request, None))

    threads = [threading.Thread(target=receive) for _ in range(2)]
    with services.db.write_lock():  # held, so both queue for the same batch
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(inbox._commit._pending) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join(10)
    assert sorted(r.status for r in results) == ["duplicate", "queued"]
    assert len({r.delivery_id for r in results}) == 1
    duplicate = next(r for r in results if r.status == "duplicate")
    assert duplicate.original["status"] == "queued"


@pytest.mark.parametrize(
    ("setting", "problem"),
    [("8d", "dedupe is at most 7d"), ("10 minutes", "dedupe"), (-1, "dedupe")],
)
def test_a_dedupe_setting_out_of_bounds_is_reported_where_it_is(tmp_path, setting, problem):
    (tmp_path / "h.yaml").write_text(
        f"hooks:\n  h:\n    organization: acme\n    dedupe: {setting}\n"
        "    source: {connector: zapier, token: t}\n    rules: []\n"
    )
    registry = HookRegistry(str(tmp_path), watch_seconds=0)
    problems = registry.reload()
    assert any(problem in str(p) for p in problems), [str(p) for p in problems]
    assert any("h.yaml:4" in str(p) for p in problems), [str(p) for p in problems]


def first_time(api, delivery_id: str) -> str:
    return api.get(f"/api/v1/deliveries/{delivery_id}").json["data"]["received_at"]
