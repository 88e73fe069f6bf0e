"""REST hooks: subscribe a URL to an event, receive it signed (verified here with the
standardwebhooks package on a real loopback server), 410 unsubscribes, persistent failure disables."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from seqbridge.storage.schema import hook_subscriptions
from seqbridge.worker.notifications import HookNotifier
from seqbridge.worker.processor import StepProcessor
from tests import factories
from tests.loopback import LoopbackServer, QuietHandler
from tests.test_hooks import WHATSAPP_STOP, drain, meta_body, post_meta, write_mapping


@pytest.fixture
def app_config(app_config):
    # The receiver listens on loopback: the SSRF guard has to be told to allow it.
    return {**app_config, "ALLOW_PRIVATE_TARGETS": "true", "WEBHOOK_SECRET": MASTER}


MASTER = "whsec_bWFzdGVyLXNlY3JldC1mb3ItdGhlLXJlc3QtaG9va3MtdGVzdHM="


class Receiver:
    """A loopback HTTP server that checks every request's signature with the standardwebhooks
    package against the secret of the subscription it was sent for."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.secrets: dict[str, str] = {}  # path → secret
        self.verified: list[dict] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append((headers, body))
                receiver.verified.append(Webhook(receiver.secrets[self.path]).verify(body, headers))
                status, extra = receiver.answers.pop(0) if receiver.answers else (200, {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = LoopbackServer(Handler)
        self.base = self.server.url

    def subscribe(self, api, event: str, path: str = "/zap") -> dict:
        answer = api.post(
            "/api/v1/hooks/subscriptions", json={"target_url": self.base + path, "event": event}
        )
        assert answer.status_code == 201, answer.json
        self.secrets[path] = answer.json["data"]["secret"]
        return answer.json["data"]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.close()


def notify(services) -> int:
    """Run the REST hooks job until it has nothing left to do."""
    job = HookNotifier(services)
    handled = 0
    while (n := job.run_once("test-worker")) > 0:
        handled += n
    return handled


def audit_tags(api, subject_type: str) -> list[str]:
    events = api.get("/api/v1/audit-events", query_string={"subject_type": subject_type}).json["data"]
    return [e["tag"] for e in events]


def test_stop_reaches_the_subscriber_signed_and_410_unsubscribes(app_config, api, client, services, receiver):
    """The round trip: subscribe, trigger (a WhatsApp STOP), receive and verify, answer 410, gone."""
    write_mapping(app_config, WHATSAPP_STOP)
    person = factories.contact(api, phone="+15551234567", email="kim@example.com", first_name="Kim")
    sequence = factories.active_sequence(api, name="Nurture")
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": person["id"]})
    unsubscribed = receiver.subscribe(api, "contact.unsubscribed", "/unsubscribed")
    exited = receiver.subscribe(api, "enrollment.exited", "/exited")
    assert "secret" not in api.get(f"/api/v1/hooks/subscriptions/{unsubscribed['id']}").json["data"]

    delivery_id = post_meta(client, meta_body("STOP")).json["data"]["delivery_id"]
    assert drain(services) == 1
    assert notify(services) == 2 + 2  # relayed two, sent two

    by_type = {
        event["type"]: (event, headers)
        for event, (headers, _) in zip(receiver.verified, receiver.received, strict=True)
    }
    event, headers = by_type["contact.unsubscribed"]
    assert event["data"]["id"] == person["id"] and event["data"]["email"] == "kim@example.com"
    assert event["data"]["status"] == "unsubscribed" and event["data"]["previous_status"] == "active"
    assert event["data"]["actor"] == {"type": "hook", "id": "whatsapp"}
    assert event["data"]["via"]["delivery_id"] == delivery_id and event["data"]["via"]["rule"] == "stop"
    assert headers["user-agent"].startswith("Seqbridge") and headers["webhook-id"]
    event, _ = by_type["enrollment.exited"]
    assert event["data"]["reason"] == "unsubscribed" and event["data"]["status"] == "exited"
    assert event["data"]["sequence"] == {"id": sequence["id"], "name": "Nurture"}
    assert event["data"]["contact"]["email"] == "kim@example.com"
    # Each subscription's requests verify only with its own secret.
    exited_headers, exited_body = receiver.received[
        [e["type"] for e in receiver.verified].index("enrollment.exited")
    ]
    with pytest.raises(Exception):  # noqa: B017 - any verification error
        Webhook(unsubscribed["secret"]).verify(exited_body, exited_headers)

    # The subscriber is done with it: 410 Gone removes the subscription, as REST hooks say.
    receiver.answers = [(410, {})]
    api.patch(f"/api/v1/contacts/{person['id']}", json={"status": "active"})
    api.patch(f"/api/v1/contacts/{person['id']}", json={"status": "unsubscribed"})
    notify(services)
    assert api.get(f"/api/v1/hooks/subscriptions/{unsubscribed['id']}").status_code == 404
    listed = api.get("/api/v1/hooks/subscriptions").json["data"]
    assert [s["id"] for s in listed] == [exited["id"]]
    events = api.get("/api/v1/audit-events", query_string={"subject_type": "hook_subscription"}).json["data"]
    [gone] = [e for e in events if e["tag"] == "worker:hook_subscription:deleted"]
    assert gone["subject"]["id"] == unsubscribed["id"] and "410" in gone["data"]["reason"]
    # The audit log never holds the secret or the full target URL (a Zapier hook URL is a credential).
    assert unsubscribed["secret"] not in json.dumps(events) and "/unsubscribed" not in json.dumps(events)
    # Later events go nowhere: nothing more is sent.
    sent = len(receiver.received)
    api.patch(f"/api/v1/contacts/{person['id']}", json={"status": "active"})
    api.patch(f"/api/v1/contacts/{person['id']}", json={"status": "unsubscribed"})
    notify(services)
    assert len(receiver.received) == sent


def _sends(event: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("seqbridge_rest_hook_sends_total", {"event": event, "outcome": outcome})
        or 0
    )


def test_enrollment_created_and_completed_carry_the_sequence_and_contact(api, client, services, receiver):
    sent_before = _sends("enrollment.created", "sent")
    receiver.subscribe(api, "enrollment.created", "/created")
    receiver.subscribe(api, "enrollment.completed", "/completed")
    sequence = factories.active_sequence(api, name="Welcome", steps=({"delay_days": 0},))
    person = factories.contact(api, email="ada@example.com", first_name="Ada")
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"contact_id": person["id"], "enrollment_source": "zap"},
    ).json["data"]
    StepProcessor(services).run_once("test-worker")  # the one step is sent: the enrollment completes
    notify(services)
    created, completed = sorted(receiver.verified, key=lambda e: e["type"] != "enrollment.created")
    assert created["type"] == "enrollment.created" and completed["type"] == "enrollment.completed"
    for event in (created, completed):
        assert event["data"]["id"] == enrollment["id"]
        assert event["data"]["sequence"] == {"id": sequence["id"], "name": "Welcome"}
        assert event["data"]["contact"]["id"] == person["id"]
        assert event["data"]["contact"]["email"] == "ada@example.com"
        assert event["data"]["enrollment_source"] == "zap"
    assert created["data"]["actor"]["type"] == "api_key"
    assert completed["data"]["reason"] == "all steps sent" and completed["data"]["actor"]["type"] == "worker"
    # Two events, two ids; the webhook-ids differ from each other too.
    assert created["id"] != completed["id"]
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 2
    # /metrics counts the sends, and shows the queue by status.
    assert _sends("enrollment.created", "sent") == sent_before + 1
    scraped = api.get("/metrics").get_data(as_text=True)
    assert 'seqbridge_rest_hook_notifications{status="sent"} 2.0' in scraped


def test_only_new_events_of_the_own_organization_are_sent(api, other_api, services, receiver):
    sequence = factories.active_sequence(api)
    before = factories.contact(api, email="before@example.com")
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": before["id"]})
    receiver.subscribe(api, "enrollment.created")
    theirs = factories.active_sequence(other_api)
    other_api.post(
        f"/api/v1/sequences/{theirs['id']}/enroll", json={"contact_id": factories.contact(other_api)["id"]}
    )
    after = factories.contact(api, email="after@example.com")
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": after["id"]})
    notify(services)
    assert [e["data"]["contact"]["email"] for e in receiver.verified] == ["after@example.com"]
    assert services.subscriptions.relay() == 0  # relayed once only
    # Another organization neither sees nor deletes the subscription.
    [mine] = api.get("/api/v1/hooks/subscriptions").json["data"]
    assert other_api.get("/api/v1/hooks/subscriptions").json["data"] == []
    missing = other_api.delete(f"/api/v1/hooks/subscriptions/{mine['id']}")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "subscription_not_found"
    assert api.get(f"/api/v1/hooks/subscriptions/{mine['id']}").json["data"]["status"] == "active"


def test_failures_retry_with_backoff_then_the_subscription_is_disabled(api, services, clock, receiver):
    services.subscriptions.disable_after = timedelta(hours=1)
    services.settings["RETRY_BASE_SECONDS"] = 120  # the second waits 96-144 s; the first's Retry-After 60
    receiver.answers = [(503, {"Retry-After": "60"})] + [(500, {})] * 20
    subscription = receiver.subscribe(api, "enrollment.created")
    sequence = factories.active_sequence(api)
    for n in range(2):
        api.post(
            f"/api/v1/sequences/{sequence['id']}/enroll",
            json={"contact_id": factories.contact(api, email=f"p{n}@example.com")["id"]},
        )
    notify(services)
    state = api.get(f"/api/v1/hooks/subscriptions/{subscription['id']}").json["data"]
    assert state["status"] == "active" and state["failing_since"] and state["last_error"] == "HTTP 500"
    assert len(receiver.received) == 2
    assert notify(services) == 0  # nothing is due before the backoff (Retry-After: 60 for the first)
    clock.advance(timedelta(seconds=61))
    notify(services)
    assert len(receiver.received) == 3  # only the first was due after 60 s
    # Failing for longer than the limit: disabled, the rest dropped, and the audit log says why.
    while api.get(f"/api/v1/hooks/subscriptions/{subscription['id']}").json["data"]["status"] == "active":
        clock.advance(timedelta(minutes=30))
        notify(services)
    state = api.get(f"/api/v1/hooks/subscriptions/{subscription['id']}").json["data"]
    assert state["status"] == "disabled" and "HTTP 500" in state["disabled_reason"]
    events = api.get("/api/v1/audit-events", query_string={"subject_type": "hook_subscription"}).json["data"]
    [disabled] = [e for e in events if e["tag"] == "worker:hook_subscription:disabled"]
    assert disabled["subject"]["id"] == subscription["id"] and "failed since" in disabled["data"]["reason"]
    with services.db.transaction(write=False) as tx:
        statuses = {n["status"] for n in tx.subscriptions.notifications(subscription["id"])}
    assert statuses <= {"dropped", "failed"} and "dropped" in statuses
    sent = len(receiver.received)
    clock.advance(timedelta(days=1))
    api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll",
        json={"contact_id": factories.contact(api, email="late@example.com")["id"]},
    )
    notify(services)
    assert len(receiver.received) == sent  # a disabled subscription gets nothing


def test_a_sender_that_died_mid_send_is_replaced_with_the_same_webhook_id(api, services, clock, receiver):
    receiver.subscribe(api, "enrollment.created")
    sequence = factories.active_sequence(api)
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": factories.contact(api)["id"]})
    services.subscriptions.relay()
    [claimed] = services.subscriptions.claim("dead-worker", 10, timedelta(seconds=60))
    assert notify(services) == 0  # leased by a worker that died before sending
    clock.advance(timedelta(seconds=61))
    assert notify(services) == 1
    [(headers, _)] = receiver.received
    assert headers["webhook-id"] == claimed["id"]
    # The dead worker's late outcome changes nothing: its lease is gone.
    with services.db.transaction() as tx:
        assert not tx.subscriptions.finish(claimed["id"], "dead-worker", {"status": "failed"})
        [row] = tx.subscriptions.notifications(claimed["subscription_id"])
    assert row["status"] == "sent" and row["attempts"] == 2


def test_delivery_dead_is_announced(app_config, api, client, services, receiver):
    write_mapping(app_config, WHATSAPP_STOP)
    receiver.subscribe(api, "delivery.dead")
    services.settings["DELIVERY_MAX_ATTEMPTS"] = 1
    delivery_id = post_meta(client, meta_body("STOP")).json["data"]["delivery_id"]
    (Path(app_config["MAPPINGS_DIR"]) / "hooks.yaml").unlink()  # gone before processing: it fails
    services.inbox.registry.reload()
    drain(services)
    notify(services)
    [event] = receiver.verified
    assert event["type"] == "delivery.dead" and event["data"]["id"] == delivery_id
    assert event["data"]["hook"] == "whatsapp" and event["data"]["status"] == "dead"
    assert "no longer configured" in event["data"]["error"]


def test_samples_show_real_events_shaped_like_notifications(api, services, receiver):
    example = api.get("/api/v1/hooks/samples/enrollment.created").json["data"]
    assert [e["id"] for e in example] == ["example"] and example[0]["data"]["sequence"]["name"]
    receiver.subscribe(api, "enrollment.created")
    sequence = factories.active_sequence(api, name="Real")
    api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": factories.contact(api)["id"]})
    notify(services)
    [sample] = api.get("/api/v1/hooks/samples/enrollment.created").json["data"]
    assert sample == receiver.verified[0]
    unknown = api.get("/api/v1/hooks/samples/contact.created")
    assert unknown.status_code == 400 and unknown.json["error"]["code"] in (
        "unknown_event",
        "validation_failed",
    )


def test_subscribe_refuses_bad_events_urls_and_secrets(api, services, make_key):
    def subscribe(**body):
        return api.post(
            "/api/v1/hooks/subscriptions",
            json={"target_url": "http://127.0.0.1:9/x", "event": "delivery.dead", **body},
        )

    unknown = subscribe(event="contact.created")
    assert unknown.status_code == 400 and "contact.created" in unknown.json["error"]["message"]
    assert subscribe(target_url="ftp://example.com/x").status_code == 400
    unknown_field = subscribe(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # secrets are never chosen
    assert unknown_field.status_code == 400 and unknown_field.json["error"]["code"] == "validation_failed"
    one, two = subscribe().json["data"], subscribe().json["data"]
    assert one["secret"].startswith("whsec_") and one["secret"] != two["secret"]
    # Derived from the master secret, never stored: no column of any row holds it.
    with services.db.engine.connect() as conn:
        rows = [str(tuple(r)) for r in conn.execute(select(hook_subscriptions))]
    assert len(rows) == 2 and not any(one["secret"] in r or two["secret"] in r for r in rows)
    assert services.subscriptions.secret_of(one["id"]) == one["secret"]
    services.subscriptions.allow_private = False
    refused = subscribe()
    assert refused.status_code == 400 and refused.json["error"]["code"] == "target_refused"
    assert "private" in refused.json["error"]["message"]
    reader = api.with_key(make_key("acme", ["hooks:read"]))
    denied = reader.post(
        "/api/v1/hooks/subscriptions", json={"target_url": "http://x.example/", "event": "delivery.dead"}
    )
    assert denied.status_code == 403 and denied.json["error"]["code"] == "hooks_write_denied"
    assert [s["event"] for s in reader.get("/api/v1/hooks/subscriptions").json["data"]] == [
        "delivery.dead"
    ] * 2


def test_prune_removes_old_finished_notifications_and_keeps_pending_ones(api, services, clock, receiver):
    receiver.answers = [(200, {}), (503, {})]
    subscription = receiver.subscribe(api, "enrollment.created")
    sequence = factories.active_sequence(api)
    for n in range(2):
        api.post(
            f"/api/v1/sequences/{sequence['id']}/enroll",
            json={"contact_id": factories.contact(api, email=f"r{n}@example.com")["id"]},
        )
    notify(services)  # one sent, one waiting to retry
    clock.advance(timedelta(days=2))
    pruned = services.retention.prune(clock.now() - timedelta(days=1), lambda org: _cli(org))
    assert pruned.totals["rest_hook_notifications"] == 1
    with services.db.transaction(write=False) as tx:
        assert [n["status"] for n in tx.subscriptions.notifications(subscription["id"])] == ["pending"]


def _cli(org_id: str):
    from seqbridge.context import Caller
    from seqbridge.services.keys import CLI_ACTOR

    return Caller(org_id, CLI_ACTOR)


def test_subscriptions_page_with_a_cursor_and_filter_by_event(api, receiver, clock):
    made = []
    for n, event in enumerate(["delivery.dead", "enrollment.created", "delivery.dead"]):
        made.append(receiver.subscribe(api, event, f"/p{n}")["id"])
        clock.advance(timedelta(seconds=1))  # listed oldest first
    first = api.get("/api/v1/hooks/subscriptions?limit=2").json
    assert [s["id"] for s in first["data"]] == made[:2] and first["meta"]["next_cursor"]
    second = api.get(f"/api/v1/hooks/subscriptions?limit=2&cursor={first['meta']['next_cursor']}").json
    assert [s["id"] for s in second["data"]] == made[2:] and second["meta"]["next_cursor"] is None
    dead = api.get("/api/v1/hooks/subscriptions?event=delivery.dead").json["data"]
    assert [s["id"] for s in dead] == [made[0], made[2]]
    bad = api.get("/api/v1/hooks/subscriptions?cursor=nonsense")
    assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_cursor"
