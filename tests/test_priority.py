"""Priority under load: an opt-out marked at receipt (a rule with ``priority: high``) is claimed
before every ordinary delivery, however deep the queue, and per contact the consent keywords
keep their order. Real webhooks through the real inbox, on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from seqbridge.storage.db import Database
from seqbridge.worker.deliveries import DeliveryProcessor
from tests import factories
from tests.test_hooks import drain, meta_body, post_meta, write_mapping
from tests.test_storage import _plan_of

PRIORITY_STOP = """
hooks:
  whatsapp:
    organization: acme
    source:
      connector: whatsapp_cloud
      app_secret: meta-app-secret-for-tests
      verify_token: verify-me
    rules:
      - name: stop
        priority: high
        when: {field: event.text, keyword: [STOP, UNSUBSCRIBE, CANCEL, END, QUIT, STOPALL, REVOKE, OPTOUT]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.from }}"}, reason: unsubscribed}
      - name: start
        priority: high
        when: {field: event.text, keyword: [START, UNSTOP]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: active}}
      - name: chit-chat
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {attributes: {last_message: "{{ event.text }}"}}}
"""

#: The ordinary messages ahead of the STOP: more than two claims' worth.
DEEP = 240
BATCH = 100


@pytest.fixture
def priority_hook(app_config, api):
    write_mapping(app_config, PRIORITY_STOP)
    return api


def _queue_chit_chat(client, count: int = DEEP) -> list[str]:
    ids = []
    for n in range(count):
        answer = post_meta(
            client, meta_body(f"hello {n}", message_id=f"wamid.chat{n}", sender=f"1555000{n:04d}")
        )
        assert answer.status_code == 202, answer.json
        ids.append(answer.json["data"]["delivery_id"])
    return ids


def _post(client, text: str, message_id: str, sender: str = "15551234567") -> str:
    answer = post_meta(client, meta_body(text, message_id=message_id, sender=sender))
    assert answer.status_code == 202, answer.json
    return answer.json["data"]["delivery_id"]


def test_a_stop_received_last_is_in_the_first_batch_claimed(priority_hook, client, services):
    api = priority_hook
    person = factories.contact(api, phone="+15551234567")
    sequence = factories.active_sequence(api, name="Welcome")
    assert (
        api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}).status_code
        == 201
    )
    ordinary = _queue_chit_chat(client)
    stop = _post(client, "  Stop ", "wamid.stop")

    # The receipt marked it: priority 1 for the STOP, 0 for the chit-chat, and the API says so.
    assert api.get(f"/api/v1/deliveries/{stop}").json["data"]["priority"] == 1
    assert api.get(f"/api/v1/deliveries/{ordinary[-1]}").json["data"]["priority"] == 0

    processing = services.deliveries.processing
    first = processing.claim("test-worker", BATCH)
    # Alone: an urgent claim does not wait to fill a batch with chit-chat.
    assert [row["id"] for row in first] == [stop]
    processing.settle("test-worker", [(row, processing.run(row)) for row in first])
    contact = api.get(f"/api/v1/contacts/{person['id']}").json["data"]
    assert contact["status"] == "unsubscribed"
    [enrollment] = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]
    assert (enrollment["status"], enrollment["exit_reason"]) == ("exited", "unsubscribed")

    # Then the ordinary ones, oldest first, in full batches.
    second = processing.claim("test-worker", BATCH)
    assert [row["id"] for row in second] == ordinary[:BATCH]
    processing.release("test-worker", second)
    assert drain(services) == DEEP
    statuses = {d["status"] for d in api.get("/api/v1/deliveries", query_string={"limit": 100}).json["data"]}
    assert statuses == {"processed"}


def test_with_priority_off_claims_are_strictly_in_due_order(priority_hook, client, services):
    services.settings["DELIVERY_PRIORITY"] = False
    try:
        ordinary = _queue_chit_chat(client, BATCH + 5)
        stop = _post(client, "STOP", "wamid.stop")
        processing = services.deliveries.processing
        first = processing.claim("test-worker", BATCH)
        assert [row["id"] for row in first] == ordinary[:BATCH]
        assert stop not in {row["id"] for row in first}
        processing.release("test-worker", first)
    finally:
        services.settings["DELIVERY_PRIORITY"] = True


def test_stop_then_start_from_one_number_keep_their_order_ahead_of_the_queue(priority_hook, client, services):
    """Both consent keywords are prioritised, so they overtake the chit-chat together and in
    arrival order: STOP then START ends active, START then STOP ends unsubscribed."""
    api = priority_hook
    first = factories.contact(api, phone="+15551234567")
    second = factories.contact(api, phone="+15557654321")
    _queue_chit_chat(client, 30)
    stop = _post(client, "STOP", "wamid.a1")
    start = _post(client, "START", "wamid.a2")
    start_b = _post(client, "START", "wamid.b1", sender="15557654321")
    stop_b = _post(client, "STOP", "wamid.b2", sender="15557654321")

    processing = services.deliveries.processing
    claimed = processing.claim("test-worker", BATCH)
    assert [row["id"] for row in claimed] == [stop, start, start_b, stop_b]
    processing.settle("test-worker", [(row, processing.run(row)) for row in claimed])
    assert api.get(f"/api/v1/contacts/{first['id']}").json["data"]["status"] == "active"
    assert api.get(f"/api/v1/contacts/{second['id']}").json["data"]["status"] == "unsubscribed"


def test_an_overtaken_message_cannot_undo_the_opt_out(priority_hook, client, services, app_config):
    """A STOP that overtakes an earlier ordinary message from the same number wins: the earlier
    message, processed after it, finds the contact unsubscribed (here it only notes the text;
    an enrollment would be refused)."""
    api = priority_hook
    person = factories.contact(api, phone="+15551234567")
    sequence = factories.active_sequence(api, name="Welcome")
    write_mapping(
        app_config,
        PRIORITY_STOP.replace(
            "      - name: chit-chat\n        actions:\n",
            "      - name: chit-chat\n        actions:\n"
            f'          - enroll: {{sequence: "{sequence["id"]}", contact: {{phone: "{{{{ event.from }}}}"}}}}\n',
        ),
    )
    hello = _post(client, "hello, sign me up", "wamid.hello")
    stop = _post(client, "STOP", "wamid.stop")
    job = DeliveryProcessor(services)
    assert job.run_once("test-worker") == 1  # the STOP, alone
    assert job.run_once("test-worker") == 1  # then the message it overtook
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    assert api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"] == []
    detail = api.get(f"/api/v1/deliveries/{hello}").json["data"]
    enroll = [a for a in detail["results"][0]["actions"] if a["action"] == "enroll"]
    assert [a["outcome"]["status"] for a in enroll] == ["skipped"]
    assert api.get(f"/api/v1/deliveries/{stop}").json["data"]["status"] == "processed"


def test_only_a_prioritised_rule_that_the_planner_would_reach_marks_a_receipt(app_config, api, client):
    """An earlier rule that stops evaluation wins at receipt as in the worker; a hook without a
    prioritised rule marks nothing."""
    write_mapping(
        app_config,
        PRIORITY_STOP.replace(
            "    rules:\n",
            "    rules:\n      - name: staff\n        when: {field: event.from, equals: '+15550009999'}\n"
            "        actions: []\n",
        ),
    )
    staff = _post(client, "STOP", "wamid.staff", sender="15550009999")
    customer = _post(client, "STOP", "wamid.customer")
    assert api.get(f"/api/v1/deliveries/{staff}").json["data"]["priority"] == 0
    assert api.get(f"/api/v1/deliveries/{customer}").json["data"]["priority"] == 1
    write_mapping(app_config, PRIORITY_STOP.replace("        priority: high\n", ""))
    # Read it now: the watch looks at most once a millisecond, and a webhook answered through
    # the lane can come sooner than that after the last look.
    client.application.extensions["seqbridge"].inbox.registry.reload()
    plain = _post(client, "STOP", "wamid.plain")
    assert api.get(f"/api/v1/deliveries/{plain}").json["data"]["priority"] == 0


def test_a_priority_the_mapping_does_not_know_is_a_problem(app_config):
    from seqbridge.mapping.registry import validate_paths

    path = write_mapping(app_config, PRIORITY_STOP.replace("priority: high", "priority: urgent", 1))
    problems = [str(p) for p in validate_paths([str(path)])]
    assert any("urgent" in p for p in problems), problems


def test_the_claims_probe_their_indexes_however_deep_the_queue(database_url, priority_hook, client, services):
    """With 3,000 deliveries queued (and as many processed), the urgent probe reads the partial
    index of queued urgent deliveries (a few entries, not the queue) and the ordinary claim a
    range of ix_deliveries_due, each in the index's order (no sort)."""
    from seqbridge.services.common import new_id
    from seqbridge.storage.bulk import bulk_insert
    from seqbridge.storage.schema import deliveries

    stop = _post(client, "STOP", "wamid.stop")
    with services.db.transaction(write=False) as tx:
        template = tx.deliveries.delivery_by_id(stop)
    rows = [
        {
            **template,
            "id": new_id(),
            "events": [],
            "priority": 0,
            "status": "queued" if n % 2 else "processed",
        }
        for n in range(6000)
    ]
    with services.db.transaction() as tx:
        bulk_insert(tx.conn, deliveries, rows)
    db = Database(database_url)
    try:
        db.analyze()
        now = services.clock.now() + timedelta(seconds=1)
        urgent = _plan_of(db, lambda tx: tx.deliveries.due_urgent(now, BATCH))
        ordinary = _plan_of(db, lambda tx: tx.deliveries.due_ids(now, BATCH))
    finally:
        db.dispose()
    assert "ix_deliveries_urgent" in urgent, urgent
    assert "ix_deliveries_due" in ordinary, ordinary
    for plan in (urgent, ordinary):
        assert "SCAN deliveries\n" not in plan + "\n" and "Seq Scan" not in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # the index gives the order


def test_a_wave_of_stops_is_claimed_in_growing_batches(priority_hook, client, services):
    """A claim of urgent deliveries alone keeps the batch size (the ordinary backlog behind them
    says nothing), unless it was full: a wave of STOPs is itself a deep backlog, and was drained
    ten at a time before (a quarter of the rate)."""
    from seqbridge.worker.deliveries import FIRST_BATCH, DeliveryJob

    stops = [_post(client, "STOP", f"wamid.wave{n}", sender=f"1555100{n:04d}") for n in range(35)]
    job = DeliveryJob(services, batch=40)
    sizes, next_sizes = [], []
    claimed: list[str] = []
    while batch := job.claim("test-worker"):
        sizes.append(len(batch))
        next_sizes.append(job.size)
        claimed += [row["id"] for row in batch]
        job.settle("test-worker", [(row, job.run("test-worker", row)) for row in batch])
    assert sizes == [FIRST_BATCH, 2 * FIRST_BATCH, 5]
    # Full claims grew it (up to the setting); the last, not full, left it as it was.
    assert next_sizes == [2 * FIRST_BATCH, 40, 40]
    assert claimed == stops
    assert job.size == FIRST_BATCH  # an empty claim: the queue is drained, back to the start
