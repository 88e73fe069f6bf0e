"""Replay by filter: POST /api/v1/deliveries/replay → a job the worker runs in batches through
DeliveryService.replay; poll it, cancel it; the filter is frozen and organizations stay apart."""

from __future__ import annotations

from datetime import timedelta

from seqbridge.worker.replay_jobs import ReplayJobRunner
from tests import factories


def _run(services, batch: int = 2) -> int:
    runner = ReplayJobRunner(services, batch=batch)
    turns = 0
    while runner.run_once("test-worker") > 0:
        turns += 1
        assert turns < 100
    return turns


def _status(services, org_id, delivery_id) -> str:
    with services.db.transaction(write=False) as tx:
        return tx.deliveries.get_delivery(org_id, delivery_id)["status"]


def test_replay_by_filter_replays_every_match_in_batches_and_audits_each(api, services, clock):
    org = factories.org_id(api)
    base = clock.now() - timedelta(hours=2)
    dead = [
        factories.delivery(services, org, status="dead", hook="wa", received_at=base + timedelta(minutes=i))
        for i in range(5)
    ]
    other_hook = factories.delivery(services, org, status="dead", hook="zap", received_at=base)
    processed = factories.delivery(services, org, status="processed", hook="wa", received_at=base)

    created = api.post("/api/v1/deliveries/replay", json={"hook": "wa", "status": ["dead"]})
    assert created.status_code == 202, created.json
    job = created.json["data"]
    assert job["status"] == "queued" and job["total"] == 5 and job["progress"] == 0
    assert created.headers["Location"] == f"/api/v1/deliveries/replay/{job['id']}"

    runner = ReplayJobRunner(services, batch=2)
    assert runner.run_once("w1") == 2
    halfway = api.get(f"/api/v1/deliveries/replay/{job['id']}").json["data"]
    assert halfway["status"] == "running" and halfway["replayed"] == 2 and halfway["progress"] == 0.4
    _run(services)
    done = api.get(f"/api/v1/deliveries/replay/{job['id']}").json["data"]
    assert (
        done["status"] == "done" and done["replayed"] == 5 and done["skipped"] == 0 and done["progress"] == 1
    )
    assert done["finished_at"] is not None

    assert all(_status(services, org, d) == "queued" for d in dead)
    assert _status(services, org, other_hook) == "dead" and _status(services, org, processed) == "processed"
    events = api.get("/api/v1/audit-events?tag=api:delivery:replayed&limit=100").json["data"]
    assert sorted(e["subject"]["id"] for e in events) == sorted(dead)
    assert all(e["data"]["via"] == {"replay_job": job["id"]} for e in events)
    tags = [
        e["tag"]
        for e in api.get(f"/api/v1/audit-events?subject_type=replay_job&subject_id={job['id']}").json["data"]
    ]
    assert tags == ["worker:replay_job:finished", "api:replay_job:created"]


def test_the_filter_is_frozen_and_each_delivery_is_visited_once(api, services, clock):
    org = factories.org_id(api)
    old = [
        factories.delivery(
            services, org, status="processed", received_at=clock.now() - timedelta(minutes=9 - i)
        )
        for i in range(3)
    ]
    job = api.post("/api/v1/deliveries/replay", json={"status": ["processed"]}).json["data"]
    assert job["total"] == 3
    clock.advance(timedelta(seconds=5))
    late = factories.delivery(services, org, status="processed", received_at=clock.now())
    # A replayed delivery that is processed again still matches the filter: it must not be replayed twice.
    runner = ReplayJobRunner(services, batch=1)
    runner.run_once("w1")
    with services.db.transaction() as tx:
        tx.conn.execute(
            __import__("sqlalchemy").text("UPDATE deliveries SET status = 'processed' WHERE id = :id"),
            {"id": old[0]},
        )
    _run(services, batch=1)
    done = api.get(f"/api/v1/deliveries/replay/{job['id']}").json["data"]
    assert done["status"] == "done" and done["replayed"] == 3
    with services.db.transaction(write=False) as tx:
        assert tx.deliveries.get_delivery(org, old[0])["replays"] == 1
        assert tx.deliveries.get_delivery(org, late)["replays"] == 0


def test_a_delivery_no_longer_replayable_is_skipped(api, services, clock):
    org = factories.org_id(api)
    ids = [
        factories.delivery(services, org, status="failed", received_at=clock.now() - timedelta(minutes=5 - i))
        for i in range(2)
    ]
    job = api.post("/api/v1/deliveries/replay", json={}).json["data"]
    assert job["filter"]["statuses"] == ["dead", "failed"] and job["total"] == 2
    assert api.post(f"/api/v1/deliveries/{ids[0]}/replay").status_code == 202  # queued by hand meanwhile
    _run(services)
    done = api.get(f"/api/v1/deliveries/replay/{job['id']}").json["data"]
    # The hand-replayed one no longer matches (it is queued), so the job never reaches it.
    assert done["status"] == "done" and done["replayed"] == 1 and done["skipped"] == 0


def test_cancel_stops_the_rest_and_a_finished_job_cannot_be_cancelled(api, services, clock):
    org = factories.org_id(api)
    for i in range(4):
        factories.delivery(services, org, status="dead", received_at=clock.now() - timedelta(minutes=10 - i))
    job = api.post("/api/v1/deliveries/replay", json={"status": ["dead"]}).json["data"]
    ReplayJobRunner(services, batch=1).run_once("w1")
    cancelled = api.post(f"/api/v1/deliveries/replay/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["data"]["status"] == "cancelled"
    assert cancelled.json["data"]["replayed"] == 1
    assert _run(services) == 0  # nothing more runs
    assert api.get(f"/api/v1/deliveries/replay/{job['id']}").json["data"]["replayed"] == 1
    again = api.post(f"/api/v1/deliveries/replay/{job['id']}/cancel")
    assert again.status_code == 409 and again.json["error"]["code"] == "replay_job_finished"


def test_bad_filters_scopes_and_other_organizations(api, other_api, make_key, services, client):
    bad = api.post("/api/v1/deliveries/replay", json={"status": ["queued"]})
    assert bad.status_code == 400, bad.json
    unknown = api.post("/api/v1/deliveries/replay", json={"hook": "x", "colour": "red"})
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "validation_failed"
    empty_range = api.post(
        "/api/v1/deliveries/replay", json={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    )
    assert empty_range.status_code == 400 and empty_range.json["error"]["code"] == "invalid_filter"

    job = api.post("/api/v1/deliveries/replay", json={}).json["data"]
    assert other_api.get(f"/api/v1/deliveries/replay/{job['id']}").status_code == 404
    assert other_api.post(f"/api/v1/deliveries/replay/{job['id']}/cancel").status_code == 404
    assert other_api.get("/api/v1/deliveries/replay").json["data"] == []
    assert [j["id"] for j in api.get("/api/v1/deliveries/replay").json["data"]] == [job["id"]]

    reader = api.with_key(make_key("acme", ["hooks:read"]))
    denied = reader.post("/api/v1/deliveries/replay", json={})
    assert denied.status_code == 403 and denied.json["error"]["code"] == "hooks_write_denied"
    assert reader.get(f"/api/v1/deliveries/replay/{job['id']}").status_code == 200
    assert reader.post(f"/api/v1/deliveries/replay/{job['id']}/cancel").status_code == 403
