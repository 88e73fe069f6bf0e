"""Set-oriented delivery processing: a batch of deliveries settled together (one transaction, a
handful of statements) has exactly the effects of the same deliveries settled one at a time in
plain transactions: the same rows, the same audit events, the same results. Both engines."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from sqlalchemy import event, select

from seqbridge import create_app
from seqbridge.storage.schema import (
    audit_events,
    contact_attributes,
    contact_tags,
    contacts,
    deliveries,
    enrollments,
    step_tasks,
)
from seqbridge.worker.deliveries import DeliveryProcessor
from tests import factories
from tests.conftest import Api, fresh_database

MAPPING = """
hooks:
  h:
    organization: acme
    source: {connector: generic, public: true}
    on_unmatched: ignore
    rules:
      - name: stop
        when: {field: event.payload.do, equals: stop}
        actions:
          - upsert_contact: {phone: "{{ event.payload.phone }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.payload.phone }}"}, reason: unsubscribed}
      - name: start
        when: {field: event.payload.do, equals: start}
        actions:
          - upsert_contact: {phone: "{{ event.payload.phone }}", set: {status: active}}
      - name: signup
        when: {field: event.payload.do, equals: signup}
        actions:
          - upsert_contact:
              email: "{{ event.payload.email }}"
              set: {first_name: "{{ event.payload.name }}"}
              tags: {path: event.payload.tags}
          - enroll: {sequence: Welcome, contact: {email: "{{ event.payload.email }}"}, data: {via: form}}
      - name: crm
        when: {field: event.payload.do, equals: crm}
        actions:
          - enroll: {sequence: VIP, contact: {attribute: {crm_id: "{{ event.payload.crm }}"}}}
      - name: leave
        when: {field: event.payload.do, equals: leave}
        actions:
          - unenroll: {sequence: Nurture, contact: {email: "{{ event.payload.email }}"}, reason: replied}
      - name: queue
        when: {field: event.payload.do, equals: queue}
        actions:
          - enroll: {queue: Followup, contact: {email: "{{ event.payload.email }}"}}
      - name: bulk
        when: {field: event.payload.do, equals: bulk}
        actions:
          - bulk_enroll: {sequence: Nurture, contacts: {path: event.payload.emails}}
      - name: by id
        when: {field: event.payload.do, equals: out}
        actions:
          - unenroll: {sequence: "*", contact: {id: "{{ event.payload.id }}"}, reason: manual}
      - name: broken
        when: {field: event.payload.do, equals: broken}
        actions:
          - upsert_contact: {phone: "not a phone", set: {status: active}}
          - enroll: {sequence: No such sequence, contact: {email: ada@example.com}}
"""


def _world(url: str, mappings: Path, clock) -> tuple:
    """An organization with sequences, a queue, contacts and enrollments, and a list of webhook
    deliveries queued (the same, in the same order, every time it is built)."""
    mappings.mkdir(exist_ok=True)
    (mappings / "hooks.yaml").write_text(textwrap.dedent(MAPPING))
    app = create_app(
        {
            "DATABASE_URL": url,
            "MAPPINGS_DIR": str(mappings),
            "MAPPINGS_WATCH_SECONDS": 0,
            "CLOCK": clock,
            "TESTING": True,
        }
    )
    services = app.extensions["seqbridge"]
    client = app.test_client()
    api = Api(client, services.keys.create_key("acme", ["*"]).raw_key)
    factories.active_sequence(api, name="Welcome")
    nurture = factories.active_sequence(api, name="Nurture")
    factories.active_sequence(api, name="VIP")
    factories.active_sequence(api, name="Onboarding", trigger_type="contact_created")
    factories.active_sequence(api, name="Tagged", trigger_type="tag_added", trigger_config={"tag": "vip"})
    queue = api.post("/api/v1/event-queues", json={"name": "Followup"}).json["data"]
    for days in (1, 3):
        api.post(
            f"/api/v1/event-queues/{queue['id']}/steps",
            json={
                "action_type": "send_email",
                "delay_days": days,
                "action_config": {"subject": "s", "body": "b"},
            },
        )
    people = {
        "p1": factories.contact(api, phone="+15550000001", email="p1@example.com"),
        "p2": factories.contact(api, phone="+15550000002", email="p2@example.com"),
        "p3": factories.contact(api, phone="+15550000003", email="p3@example.com"),
        "bob": factories.contact(api, email="bob@example.com"),
        "carol": factories.contact(api, email="carol@example.com"),
        "dave": factories.contact(api, email="dave@example.com"),
        "crm7": factories.contact(api, email="crm7@example.com", attributes={"crm_id": "crm-7"}),
        "crm42": factories.contact(api, email="crm42@example.com", attributes={"crm_id": 42}),
    }
    for name in ("p1", "p2", "p3", "bob"):
        assert (
            api.post(
                f"/api/v1/sequences/{nurture['id']}/enroll", json={"customer_id": people[name]["id"]}
            ).status_code
            == 201
        )
    payloads = [
        {"do": "signup", "email": "ada@example.com", "name": "Ada", "tags": ["lead"]},
        {"do": "signup", "email": "ADA@example.com", "name": "Ada L.", "tags": ["lead", "vip"]},
        {"do": "stop", "phone": "+1 555 000 0001"},
        {"do": "start", "phone": "15550000001"},
        {"do": "stop", "phone": "15550000002"},
        {"do": "stop", "phone": "15550009999"},
        {"do": "crm", "crm": "crm-7"},
        {"do": "crm", "crm": "42"},
        {"do": "crm", "crm": "nobody"},
        {"do": "leave", "email": "bob@example.com"},
        {"do": "queue", "email": "carol@example.com"},
        {"do": "broken"},
        {"do": "signup", "email": "dave@example.com", "name": "Dave", "tags": ["vip"]},
        {"do": "signup", "email": "eve@example.com", "name": "Eve", "tags": []},
        {"do": "signup", "email": "eve@example.com", "name": "Eve", "tags": []},
        {"do": "bulk", "emails": ["carol@example.com", "dave@example.com", "nobody@example.com"]},
        {"do": "stop", "phone": "+15550000003"},
        {"do": "start", "phone": "+15550000003"},
        {"do": "stop", "phone": "+15550000003"},
        {"do": "out", "id": people["carol"]["id"]},
        {"do": "chit-chat"},
        {"do": "queue", "email": "carol@example.com"},
    ]
    for n, payload in enumerate(payloads):
        answer = client.post("/hooks/h", json=payload, headers={"Idempotency-Key": f"d{n}"})
        assert answer.status_code == 202, answer.json
    return app, services


#: Ids: UUIDs, and request ids (32 hex digits).
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b")


class _Labels:
    """Ids become labels in the order they first appear, so two runs that made their rows in the
    same order compare equal although every id is new."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def __call__(self, value):
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, bytes):
            return self(value.decode())
        if isinstance(value, str):
            return _UUID.sub(lambda m: self.labels.setdefault(m.group(0), f"<{len(self.labels)}>"), value)
        return value


def _snapshot(services, after_event: int) -> dict:
    """Everything processing could have changed (and the audit events after ``after_event``),
    with ids as labels."""
    label = _Labels()
    with services.db.engine.connect() as conn:

        def rows(table, order, skip=()):
            query = select(table).order_by(*order)
            return [
                label({k: v for k, v in dict(r).items() if k not in skip})
                for r in conn.execute(query).mappings()
            ]

        events = conn.execute(
            select(audit_events).where(audit_events.c.id > after_event).order_by(audit_events.c.id)
        )
        skip = ("hash", "prev_hash", "id")
        events = [{k: v for k, v in dict(e).items() if k not in skip} for e in events.mappings()]
        # A receipt's event is written by the claim that first picks its delivery up (or sweeps
        # it), so where it falls in the chain depends on the batch: those compare as a set, and
        # are labelled after the others.
        receipts = ("hook:delivery:received", "hook:delivery:rejected")
        audit = [label(e) for e in events if e["tag"] not in receipts]
        received = sorted(
            json.dumps(label(e), sort_keys=True, default=str) for e in events if e["tag"] in receipts
        )
        return {
            "audit": audit,
            "receipts": received,
            "deliveries": rows(
                deliveries,
                [deliveries.c.received_at, deliveries.c.id],
                skip=("lease_owner", "lease_expires_at"),
            ),
            "contacts": rows(contacts, [contacts.c.created_at, contacts.c.id]),
            "tags": sorted(
                json.dumps(r, sort_keys=True) for r in rows(contact_tags, [contact_tags.c.contact_id])
            ),
            "attributes": sorted(
                json.dumps(r, sort_keys=True)
                for r in rows(contact_attributes, [contact_attributes.c.contact_id])
            ),
            "enrollments": rows(enrollments, [enrollments.c.enrolled_at, enrollments.c.id]),
            "tasks": rows(step_tasks, [step_tasks.c.id]),
        }


def _process(services, *, together: bool, batch: int) -> None:
    services.deliveries.processing.together = together
    job = DeliveryProcessor(services, batch=batch)
    while job.run_once("test-worker"):
        pass


def test_a_batch_has_exactly_the_effects_of_one_delivery_at_a_time(request, backend, tmp_path, clock):
    snapshots, statements = {}, {}
    for run, (together, batch) in {
        "one at a time": (False, 1),
        "batched": (True, 200),
        "small batches": (True, 3),
    }.items():
        directory = tmp_path / run.replace(" ", "_")
        directory.mkdir()
        databases = fresh_database(request, backend, directory)
        url = next(databases)
        _app, services = _world(url, directory / "mappings", type(clock)())
        with services.db.engine.connect() as conn:
            before = conn.execute(
                select(audit_events.c.id).order_by(audit_events.c.id.desc()).limit(1)
            ).scalar()
        statements[run] = 0

        def count(*_args, run=run):
            statements[run] += 1

        event.listen(services.db.engine, "before_cursor_execute", count)
        _process(services, together=together, batch=batch)
        snapshots[run] = _snapshot(services, before)
        services.db.dispose()
        databases.close()
    reference = snapshots["one at a time"]
    assert [d["status"] for d in reference["deliveries"]].count("processed") >= 15
    for run in ("batched", "small batches"):
        for part, rows in reference.items():
            got = snapshots[run][part]
            first = next((n for n, (a, b) in enumerate(zip(got, rows, strict=False)) if a != b), None)
            assert got == rows, (
                f"{run}: {part} differ at {first}: {got[first] if first is not None else len(got)} != "
                + (f"{rows[first]}" if first is not None else f"{len(rows)}")
            )
    # Set-oriented: the whole batch costs fewer statements than a few deliveries one at a time.
    assert statements["batched"] * 4 < statements["one at a time"], statements


def test_stop_then_start_in_one_batch_ends_active_and_two_signups_make_one_contact(
    app_config, api, client, services
):
    """Order is kept per contact inside a batch."""
    (Path(app_config["MAPPINGS_DIR"]) / "hooks.yaml").write_text(textwrap.dedent(MAPPING))
    factories.active_sequence(api, name="Welcome")
    person = factories.contact(api, phone="+15550000001")
    for n, payload in enumerate(
        [
            {"do": "stop", "phone": "+15550000001"},
            {"do": "start", "phone": "+15550000001"},
            {"do": "signup", "email": "new@example.com", "name": "N", "tags": []},
            {"do": "signup", "email": "New@Example.com", "name": "N", "tags": []},
        ]
    ):
        assert client.post("/hooks/h", json=payload, headers={"Idempotency-Key": f"k{n}"}).status_code == 202
    assert DeliveryProcessor(services, batch=200).run_once("w") == 4
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "active"
    tags = [
        e["tag"]
        for e in api.get("/api/v1/audit-events", query_string={"subject_id": person["id"]}).json["data"]
    ]
    assert tags.count("hook:contact:unsubscribed") == 1 and tags.count("hook:contact:resubscribed") == 1
    found = api.get("/api/v1/contacts", query_string={"email": "new@example.com"}).json["data"]
    assert len(found) == 1


def test_a_delivery_whose_actions_raise_is_retried_alone_and_the_rest_of_its_batch_is_processed(
    app_config, api, client, services, monkeypatch
):
    (Path(app_config["MAPPINGS_DIR"]) / "hooks.yaml").write_text(textwrap.dedent(MAPPING))
    people = [factories.contact(api, phone=f"+1555000000{n}") for n in range(3)]
    for n in range(3):
        client.post(
            "/hooks/h", json={"do": "stop", "phone": f"+1555000000{n}"}, headers={"Idempotency-Key": f"s{n}"}
        )
    local = services.deliveries.processing.local
    real = local.run

    def flaky(caller, action):
        if action["action"] == "unenroll" and action["contact"]["phone"].endswith("1"):
            raise RuntimeError("boom")
        return real(caller, action)

    monkeypatch.setattr(local, "run", flaky)
    assert DeliveryProcessor(services, batch=200).run_once("w") == 3
    statuses = {d["status"] for d in api.get("/api/v1/deliveries").json["data"]}
    assert statuses == {"processed", "queued"}
    contacts_now = [api.get(f"/api/v1/contacts/{p['id']}").json["data"]["status"] for p in people]
    assert contacts_now == ["unsubscribed", "active", "unsubscribed"]  # the failed one left nothing behind
    [retrying] = [d for d in api.get("/api/v1/deliveries").json["data"] if d["status"] == "queued"]
    assert retrying["attempts"] == 1 and "boom" in retrying["last_error"]["error"]


def test_a_claim_leases_at_most_its_batch_however_many_are_due(app_config, api, client, services):
    """(PostgreSQL re-ran a LIMIT … SKIP LOCKED subquery per row and leased everything.)"""
    (Path(app_config["MAPPINGS_DIR"]) / "hooks.yaml").write_text(textwrap.dedent(MAPPING))
    for n in range(30):
        client.post("/hooks/h", json={"do": "chit-chat"}, headers={"Idempotency-Key": f"c{n}"})
    first = services.deliveries.claim("w1", 10)
    second = services.deliveries.claim("w2", 10)
    assert len(first) == len(second) == 10 and not set(first) & set(second)
