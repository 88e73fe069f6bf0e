"""Retention: ``seqbridge deliveries prune --older-than`` deletes finished deliveries with their
dedupe keys, expired idempotency keys and old outbox rows, in small batches, audited per
organization; it never touches a delivery still to be processed, and keeps dedupe keys for the
dedupe window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from seqbridge.audit import verify_chain
from seqbridge.cli import main
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.services.retention import DEDUPE_WINDOW
from seqbridge.storage.deliveries import DeliveryStore
from seqbridge.storage.schema import delivery_keys, idempotency_keys, outbox
from tests import factories
from tests.test_hooks import FIXTURES, WHATSAPP_STOP, drain, meta_body, post_meta, write_mapping
from tests.test_processor import _processor, _run, _tasks

FINISHED = ("processed", "failed", "dead", "rejected", "ignored")
KEYED = ("processed", "failed", "dead")


def cli(org_id: str) -> Caller:
    return Caller(org_id, Actor(ActorType.CLI, "cli"))


def delivery_ids(api) -> set[str]:
    return {d["id"] for d in api.get("/api/v1/deliveries?limit=200").get_json()["data"]}


def test_finished_deliveries_past_the_cutoff_go_with_their_keys_and_nothing_else_does(api, services, clock):
    org = factories.org_id(api)
    start = clock.now()
    old = {
        status: factories.delivery(
            services,
            org,
            status=status,
            received_at=start,
            keys=(f"old-{status}",) if status in (*KEYED, "queued", "processing") else (),
        )
        for status in (*FINISHED, "queued", "processing")
    }
    clock.advance(days=10)
    recent = {
        status: factories.delivery(
            services,
            org,
            status=status,
            received_at=clock.now() - timedelta(days=1),
            keys=(f"new-{status}",) if status in KEYED else (),
        )
        for status in ("processed", "rejected")
    }

    pruned = services.retention.prune(clock.now() - timedelta(days=3), cli)

    assert delivery_ids(api) == {old["queued"], old["processing"], *recent.values()}
    assert pruned.totals == {
        "deliveries": 5,
        "delivery_keys": 3,
        "idempotency_keys": 0,
        "outbox": 0,
        "rest_hook_notifications": 0,
    }
    with services.db.transaction(write=False) as tx:
        kept = set(tx.conn.execute(select(delivery_keys.c.dedupe_key)).scalars())
    assert kept == {"old-queued", "old-processing", "new-processed"}
    # A second prune finds nothing more.
    assert services.retention.prune(clock.now() - timedelta(days=3), cli).totals["deliveries"] == 0


def test_deliveries_that_own_dedupe_keys_outlive_a_short_cutoff_and_retries_stay_duplicates(
    app_config, api, client, services, clock
):
    write_mapping(app_config, WHATSAPP_STOP)
    body = meta_body("STOP", message_id="wamid.RETENTION")
    first = post_meta(client, body)
    assert first.status_code == 202
    assert post_meta(client, body, secret="not-the-secret").status_code == 401  # rejected
    status_only = (FIXTURES / "whatsapp_status.json").read_bytes()
    assert post_meta(client, status_only).get_json()["data"]["status"] == "ignored"
    drain(services)
    clock.advance(days=2)

    pruned = services.retention.prune(clock.now() - timedelta(hours=12), cli)
    assert pruned.totals["deliveries"] == 2  # the rejected and the ignored one: they own no keys
    assert pruned.keyed_cutoff == clock.now() - DEDUPE_WINDOW
    assert delivery_ids(api) == {first.get_json()["data"]["delivery_id"]}
    again = post_meta(client, body)  # the sender retries: still recognised
    assert again.get_json()["data"]["delivery_id"] == first.get_json()["data"]["delivery_id"]
    assert again.get_json()["data"]["status"] == "duplicate"

    clock.advance(DEDUPE_WINDOW)  # past the window, the delivery and its key go
    assert services.retention.prune(clock.now() - timedelta(hours=12), cli).totals == {
        "deliveries": 1,
        "delivery_keys": 1,
        "idempotency_keys": 0,
        "outbox": 0,
        "rest_hook_notifications": 0,
    }
    assert delivery_ids(api) == set()
    assert post_meta(client, body).status_code == 202  # beyond the window a repeat is new


def test_a_delivery_replayed_recently_is_kept(app_config, api, client, services, clock):
    write_mapping(app_config, WHATSAPP_STOP)
    delivery_id = post_meta(client, meta_body("START")).get_json()["data"]["delivery_id"]
    drain(services)
    clock.advance(days=30)
    assert api.post(f"/api/v1/deliveries/{delivery_id}/replay").status_code == 202
    assert services.retention.prune(clock.now() - timedelta(days=10), cli).totals["deliveries"] == 0  # queued
    drain(services)
    assert (
        services.retention.prune(clock.now() - timedelta(days=10), cli).totals["deliveries"] == 0
    )  # just done
    clock.advance(days=11)
    assert services.retention.prune(clock.now() - timedelta(days=10), cli).totals["deliveries"] == 1


def test_idempotency_keys_go_when_their_24_hours_are_over(api, services, clock):
    old = api.post("/api/v1/companies", json={"name": "Old"}, headers={"Idempotency-Key": "old-key"})
    assert old.status_code == 201
    clock.advance(hours=25)
    assert (
        api.post(
            "/api/v1/companies", json={"name": "New"}, headers={"Idempotency-Key": "new-key"}
        ).status_code
        == 201
    )
    pruned = services.retention.prune(clock.now(), cli)
    assert pruned.totals["idempotency_keys"] == 1
    with services.db.transaction(write=False) as tx:
        assert list(tx.conn.execute(select(idempotency_keys.c.key)).scalars()) == ["new-key"]
    replay = api.post("/api/v1/companies", json={"name": "New"}, headers={"Idempotency-Key": "new-key"})
    assert replay.headers["Idempotent-Replayed"] == "true"  # the live key still answers


def test_old_outbox_rows_go_unless_their_task_may_still_run(api, services, clock):
    sequence = factories.active_sequence(api, steps=({"delay_days": 0}, {"delay_days": 30}))
    person = factories.contact(api, first_name="Ada")
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]}
    ).get_json()
    assert _run(_processor(services)) == 1  # step 1 sent (captured); step 2 waits 30 days
    [open_task] = [t for t in _tasks(services, enrollment["data"]["id"]) if t["status"] == "pending"]
    with services.db.transaction() as tx:  # a send recorded by a worker that died before finishing step 2
        tx.conn.execute(
            insert(outbox).values(
                org_id=factories.org_id(api),
                idempotency_key=f"{enrollment['data']['id']}:{open_task['step_id']}",
                task_id=open_task["id"],
                channel="email",
                status="captured",
                headers={},
                created_at=clock.now(),
            )
        )
    clock.advance(days=10)
    pruned = services.retention.prune(clock.now() - timedelta(days=3), cli)
    assert pruned.totals["outbox"] == 1
    [kept] = api.get("/api/v1/outbox").get_json()["data"]
    assert kept["idempotency_key"].endswith(open_task["step_id"])


def test_work_is_done_in_batches_of_the_given_size(api, services, clock, monkeypatch):
    org = factories.org_id(api)
    for n in range(7):
        factories.delivery(services, org, status="rejected", received_at=clock.now() - timedelta(minutes=n))
    sizes: list[int] = []
    real = DeliveryStore.delete_finished

    def spy(self, ids, statuses, untouched_since):
        sizes.append(len(ids))
        return real(self, ids, statuses, untouched_since)

    monkeypatch.setattr(DeliveryStore, "delete_finished", spy)
    clock.advance(hours=1)
    assert services.retention.prune(clock.now(), cli, batch_size=2).totals["deliveries"] == 7
    assert sizes == [2, 2, 2, 1]


def test_each_organization_gets_one_audit_event_and_the_chain_holds(api, other_api, services, clock):
    acme, globex = factories.org_id(api), factories.org_id(other_api)
    for status in ("processed", "rejected"):
        factories.delivery(services, acme, status=status, keys=("k",) if status == "processed" else ())
    clock.advance(days=8)
    pruned = services.retention.prune(clock.now() - timedelta(days=1), cli)
    assert set(pruned.by_org) == {acme}
    [event] = api.get("/api/v1/audit-events?tag=cli:retention:pruned").get_json()["data"]
    assert event["actor"] == {"type": "cli", "id": "cli"}
    assert event["subject"] == {"type": "retention", "id": "2026-01-12T09:00:00Z"}
    assert event["data"] == {
        "older_than": "2026-01-12T09:00:00Z",
        "keyed_older_than": "2026-01-06T09:00:00Z",
        "deliveries": 2,
        "delivery_keys": 1,
        "idempotency_keys": 0,
        "outbox": 0,
        "rest_hook_notifications": 0,
    }
    assert other_api.get("/api/v1/audit-events?tag=cli:retention:pruned").get_json()["data"] == []
    assert globex not in pruned.by_org
    checked, problems = verify_chain(services.db)
    assert problems == [] and checked > 0


def test_the_command_prints_what_it_deleted_and_refuses_what_it_cannot_read(
    api, services, clock, database_url, monkeypatch
):
    org = factories.org_id(api)
    factories.delivery(services, org, status="rejected", received_at=clock.now())
    monkeypatch.setenv("SEQBRIDGE_DATABASE_URL", database_url)
    runner = CliRunner()
    result = runner.invoke(main, ["deliveries", "prune", "--older-than", "2026-01-06"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "older than 2026-01-06T00:00:00+00:00 (deliveries with dedupe keys: older than "
        "2026-01-06T00:00:00+00:00, the 7-day dedupe window)",
        "deleted 1 deliveries, 0 dedupe keys, 0 idempotency keys, 0 outbox rows, 0 REST hook notifications",
    ]
    assert len(api.get("/api/v1/audit-events?tag=cli:retention:pruned").get_json()["data"]) == 1
    for value, message in (
        ("soon", "is neither a duration"),
        ("2999-01-01", "is in the future"),
        ("-3d", "neither"),
    ):
        refused = runner.invoke(main, ["deliveries", "prune", "--older-than", value])
        assert refused.exit_code == 2 and message in refused.output, (value, refused.output)


@pytest.mark.parametrize(("value", "days"), [("30d", 30), ("12h", 0.5), ("90m", 1 / 16), ("2w", 14)])
def test_durations(value, days):
    from seqbridge.cli import OlderThan

    assert OlderThan().convert(value, None, None) == timedelta(days=days)


def test_nothing_to_delete_reports_zeros_and_writes_no_event(api, services):
    assert services.retention.prune(services.clock.now(), cli).totals == dict.fromkeys(
        ("deliveries", "delivery_keys", "idempotency_keys", "outbox", "rest_hook_notifications"), 0
    )
    assert api.get("/api/v1/audit-events?tag=cli:retention:pruned").get_json()["data"] == []
