"""Receipts are audited by the worker, not on the webhook's request path: every accepted (or
rejected) delivery reaches the audit log exactly once, with the time it arrived and the request
id it was answered with, in its organization's chain."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from seqbridge.audit import verify_chain
from seqbridge.services.receipts import record_receipts
from seqbridge.storage.schema import audit_events, deliveries
from tests.test_hooks import (
    FIXTURES,
    SENDERS,
    WHATSAPP_STOP,
    drain,
    meta_body,
    meta_headers,
    post_meta,
    write_mapping,
)


def _receipt_events(services) -> list[dict]:
    with services.db.engine.connect() as conn:
        query = (
            select(audit_events).where(audit_events.c.subject_type == "delivery").order_by(audit_events.c.id)
        )
        return [dict(r) for r in conn.execute(query).mappings()]


def _delivery(services, delivery_id: str) -> dict:
    with services.db.engine.connect() as conn:
        return dict(conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).mappings().one())


def test_the_worker_writes_the_received_event_once_with_the_receipts_time_and_request_id(
    app_config, api, client, services, clock
):
    write_mapping(app_config, WHATSAPP_STOP)
    answer = post_meta(client, meta_body("hello"))
    assert answer.status_code == 202
    delivery_id = answer.json["data"]["delivery_id"]
    request_id = answer.headers["X-Request-Id"]
    # Answered, stored, not audited yet: the request path wrote no audit event.
    assert _receipt_events(services) == []
    assert _delivery(services, delivery_id)["receipt_audited"] is False

    clock.advance(timedelta(seconds=30))  # the worker claims it later
    assert drain(services) == 1
    received = [e for e in _receipt_events(services) if e["tag"] == "hook:delivery:received"]
    assert len(received) == 1
    [event] = received
    stored = _delivery(services, delivery_id)
    assert event["subject_id"] == delivery_id and event["request_id"] == request_id
    assert event["occurred_at"] == stored["received_at"]  # when it arrived, not when it was audited
    assert event["actor_type"] == "hook" and event["actor_id"] == "whatsapp"
    assert event["data"]["dedupe_keys"] == ["wamid.TEST1"] and event["data"]["events"] == 1
    assert stored["receipt_audited"] is True
    tags = [e["tag"] for e in _receipt_events(services)]
    assert tags == ["hook:delivery:received", "hook:delivery:processed"]  # in chain order

    # A second claim of the same delivery (a replay) writes no second receipt.
    assert api.post(f"/api/v1/deliveries/{delivery_id}/replay").status_code == 202
    assert drain(services) == 1
    assert [e["tag"] for e in _receipt_events(services)].count("hook:delivery:received") == 1
    assert verify_chain(services.db)[1] == []


def test_rejected_and_ignored_deliveries_are_swept_into_the_audit_log(app_config, api, client, services):
    write_mapping(app_config, WHATSAPP_STOP)
    body = meta_body("STOP")
    assert post_meta(client, body, secret="not-the-secret").status_code == 401
    status_only = (FIXTURES / "whatsapp_status.json").read_bytes()
    ignored = client.post("/hooks/whatsapp", data=status_only, headers=meta_headers(status_only))
    assert ignored.json["data"]["status"] == "ignored"
    assert _receipt_events(services) == []

    assert drain(services) == 0  # nothing to process, but the receipts are recorded
    events = {e["tag"]: e for e in _receipt_events(services)}
    assert set(events) == {"hook:delivery:rejected", "hook:delivery:received"}
    assert events["hook:delivery:rejected"]["data"]["reason"] == "signature_mismatch"
    assert events["hook:delivery:received"]["data"]["status"] == "ignored"
    assert events["hook:delivery:received"]["subject_id"] == ignored.json["data"]["delivery_id"]
    drain(services)
    assert len(_receipt_events(services)) == 2
    assert verify_chain(services.db)[1] == []


def test_recording_a_receipt_twice_writes_it_once_and_a_rolled_back_claim_leaves_it_unwritten(
    app_config, api, client, services
):
    write_mapping(app_config, WHATSAPP_STOP)
    delivery_id = post_meta(client, meta_body("hello")).json["data"]["delivery_id"]
    try:
        with services.db.transaction() as tx:  # a claim that dies half-way
            assert record_receipts(tx, [delivery_id]) == 1
            raise RuntimeError("the worker died")
    except RuntimeError:
        pass
    assert _receipt_events(services) == [] and _delivery(services, delivery_id)["receipt_audited"] is False
    with services.db.transaction() as tx:
        assert record_receipts(tx, [delivery_id, delivery_id]) == 1
    with services.db.transaction() as tx:
        assert record_receipts(tx, [delivery_id]) == 0
    assert [e["tag"] for e in _receipt_events(services)] == ["hook:delivery:received"]


def test_a_receipt_processed_at_once_is_audited_before_its_outcome(app_config, api, client, services):
    """``respond: after_actions`` processes in the request; the receipt is written in that
    processing transaction, ahead of the outcome."""
    write_mapping(app_config, SENDERS, "senders.yaml")
    answer = client.post(
        "/hooks/zapier",
        json={"action": "fail-me", "email": "zed@example.com"},
        headers={"X-Seqbridge-Token": "zap-token"},
    )
    assert answer.status_code == 200 and answer.json["data"]["status"] == "failed", answer.json
    tags = [e["tag"] for e in _receipt_events(services)]
    assert tags == ["hook:delivery:received", "hook:delivery:failed"]
    drain(services)
    assert [e["tag"] for e in _receipt_events(services)] == tags
