"""``/hooks/<name>``: detect → verify → parse → dedupe → store → answer, then the worker maps and
acts. Signatures come from an independent HMAC here (or the sender's own library), never from the
connector under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook
from twilio.request_validator import RequestValidator

from seqbridge.worker.deliveries import DeliveryProcessor
from tests import factories

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
APP_SECRET = "meta-app-secret-for-tests"

WHATSAPP_STOP = """
hooks:
  whatsapp:
    organization: acme
    source:
      connector: whatsapp_cloud
      app_secret: ${TEST_WA_SECRET:-meta-app-secret-for-tests}
      verify_token: verify-me
    rules:
      - name: stop
        when: {field: event.text, keyword: [STOP, UNSUBSCRIBE, CANCEL, END, QUIT, STOPALL, REVOKE, OPTOUT]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.from }}"}, reason: unsubscribed}
      - name: start
        when: {field: event.text, keyword: [START, UNSTOP]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: active}}
"""


#: A hook whose rule does not compile: it answers 503 hook_misconfigured.
BROKEN = """
hooks:
  broken:
    organization: acme
    source: {connector: whatsapp_cloud, app_secret: x, verify_token: y}
    rules:
      - when: {field: "event.[", equals: 1}
        actions: []
"""


def write_mapping(app_config, text: str, name: str = "hooks.yaml") -> Path:
    path = Path(app_config["MAPPINGS_DIR"]) / name
    path.write_text(textwrap.dedent(text))
    return path


def meta_body(text: str, *, message_id: str = "wamid.TEST1", sender: str = "15551234567") -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "15550000000", "phone_number_id": "PN1"},
                                "contacts": [{"profile": {"name": "Kim"}, "wa_id": sender}],
                                "messages": [
                                    {
                                        "from": sender,
                                        "id": message_id,
                                        "timestamp": "1767607200",
                                        "type": "text",
                                        "text": {"body": text},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def meta_headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"}


def post_meta(client, body: bytes, hook: str = "whatsapp", secret: str = APP_SECRET):
    return client.post(f"/hooks/{hook}", data=body, headers=meta_headers(body, secret))


def drain(services) -> int:
    job = DeliveryProcessor(services)
    handled = 0
    while (n := job.run_once("test-worker")) > 0:
        handled += n
    return handled


@pytest.fixture
def stop_hook(app_config, api):
    write_mapping(app_config, WHATSAPP_STOP)
    return api


def test_stop_on_whatsapp_unsubscribes_and_unenrolls_everywhere(stop_hook, client, services):
    api = stop_hook
    person = factories.contact(api, phone="+15551234567", first_name="Kim")
    sequences = [factories.active_sequence(api, name=f"Seq {n}") for n in range(2)]
    for sequence in sequences:
        assert (
            api.post(
                f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}
            ).status_code
            == 201
        )

    answer = post_meta(client, meta_body("  stop \n"))
    assert answer.status_code == 202, answer.json
    delivery_id = answer.json["data"]["delivery_id"]
    assert answer.json["data"]["status"] == "queued"

    assert drain(services) == 1
    contact = api.get(f"/api/v1/contacts/{person['id']}").json["data"]
    assert contact["status"] == "unsubscribed"
    for sequence in sequences:
        enrollments = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]
        assert [(e["status"], e["exit_reason"]) for e in enrollments] == [("exited", "unsubscribed")]

    detail = api.get(f"/api/v1/deliveries/{delivery_id}").json["data"]
    assert detail["status"] == "processed"
    [event] = detail["results"]
    assert event["rules"] == ["stop"]
    assert [(a["action"], a["outcome"]["status"]) for a in event["actions"]] == [
        ("upsert_contact", "done"),
        ("unenroll", "done"),
    ]
    assert detail["request"]["headers"]["x-hub-signature-256"] == "[REDACTED]"

    # The audit log says who (the hook), what, when and why (delivery, rule).
    events = api.get("/api/v1/audit-events", query_string={"subject_type": "contact"}).json["data"]
    unsubscribed = [e for e in events if e["tag"] == "hook:contact:unsubscribed"]
    assert len(unsubscribed) == 1
    assert unsubscribed[0]["actor"] == {"type": "hook", "id": "whatsapp"}
    assert unsubscribed[0]["data"]["via"] == {
        "hook": "whatsapp",
        "delivery_id": delivery_id,
        "rule": "stop",
        "event": "wamid.TEST1",
    }
    tags = [
        e["tag"]
        for e in api.get("/api/v1/audit-events", query_string={"subject_type": "delivery"}).json["data"]
    ]
    assert sorted(tags) == ["hook:delivery:processed", "hook:delivery:received"]


def test_a_repeat_is_a_duplicate_and_acts_on_nothing(stop_hook, client, services):
    api = stop_hook
    factories.contact(api, phone="+15551234567")
    body = meta_body("STOP")
    first = post_meta(client, body)
    again = post_meta(client, body)
    assert first.status_code == 202
    assert again.status_code == 200
    original = first.json["data"]["delivery_id"]
    # The answer names the original, says what became of it and where to look at it.
    assert again.json["data"] == {
        "delivery_id": original,
        "status": "duplicate",
        "original": {
            "status": "queued",
            "received_at": "2026-01-05T09:00:00Z",
            "path": f"/api/v1/deliveries/{original}",
        },
    }
    assert drain(services) == 1
    listed = api.get("/api/v1/deliveries").json["data"]
    assert [d["id"] for d in listed] == [original]
    # Once it is processed, a repeat says so, and where to replay it (a provider's id never expires).
    later = post_meta(client, body).json["data"]
    assert later["original"]["status"] == "processed"
    assert later["original"]["replay_path"] == f"/api/v1/deliveries/{original}/replay"
    assert "dedupe_until" not in later["original"]
    assert api.post(later["original"]["replay_path"]).status_code == 202


def test_bad_signature_is_401_with_a_reason_and_recorded_without_the_body(stop_hook, client, services):
    api = stop_hook
    body = meta_body("STOP")
    wrong = post_meta(client, body, secret="not-the-secret")
    assert wrong.status_code == 401
    assert wrong.json["error"]["code"] == "signature_mismatch"
    missing = client.post("/hooks/whatsapp", data=body, headers={"Content-Type": "application/json"})
    assert missing.json["error"]["code"] == "missing_signature"
    rejected = api.get("/api/v1/deliveries", query_string={"status": "rejected"}).json["data"]
    assert sorted(d["reject_reason"] for d in rejected) == ["missing_signature", "signature_mismatch"]
    detail = api.get(f"/api/v1/deliveries/{rejected[0]['id']}").json["data"]
    assert detail["request"]["body"] is None and detail["events"] == []
    assert drain(services) == 0


def test_unknown_hook_is_404_and_a_broken_one_is_503(app_config, client, api):
    write_mapping(app_config, BROKEN, "broken.yaml")
    missing = client.post("/hooks/nope", json={})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "hook_not_found"
    broken = client.post("/hooks/broken", json={})
    assert broken.status_code == 503 and broken.json["error"]["code"] == "hook_misconfigured"
    [status] = api.get("/api/v1/mappings").json["data"]
    assert status["name"] == "broken" and status["status"] == "invalid"
    assert status["problems"][0]["line"] == 7
    assert "JMESPath" in status["problems"][0]["message"]


def test_meta_handshake(stop_hook, client):
    ok = client.get("/hooks/whatsapp?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=12345")
    assert ok.status_code == 200 and ok.data == b"12345"
    bad = client.get("/hooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=12345")
    assert bad.status_code == 403 and bad.json["error"]["code"] == "verify_token_mismatch"


# More senders ---------------------------------------------------------------------------------

SENDERS = """
hooks:
  typeform:
    organization: acme
    source: {connector: typeform, secret: tf-secret}
    rules:
      - name: welcome
        when: {field: event.answers.email, exists: true}
        actions:
          - upsert_contact:
              email: "{{ event.answers.email }}"
              set: {first_name: "{{ event.answers.first_name }}"}
              tags: {path: event.answers.interests}
          - enroll: {sequence: Welcome, contact: {email: "{{ event.answers.email }}"}}
  twilio:
    organization: acme
    source: {connector: twilio, auth_token: twilio-token}
    rules:
      - name: stop
        when: {field: event.text, keyword: [STOP]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
  zapier:
    organization: acme
    respond: after_actions
    source: {connector: zapier, token: zap-token}
    rules:
      - name: enroll
        when: {field: event.payload.action, equals: enroll}
        actions:
          - enroll: {sequence: "{{ event.payload.sequence }}", contact: {email: {path: event.payload.email}}}
      - name: strict
        when: {field: event.payload.action, equals: fail-me}
        actions:
          - enroll: {sequence: "no such sequence", contact: {email: {path: event.payload.email}}}
  signup-form:
    organization: acme
    on_unmatched: fail
    source:
      connector: form
      public: true
      honeypot: website
      redirect_to: https://example.com/thanks
      allowed_origins: [https://example.com]
    rules:
      - name: lead
        when: {field: event.email, matches: "^[^@]+@example\\\\.com$", ignore_case: true}
        actions:
          - upsert_contact: {email: "{{ event.email }}", set: {first_name: "{{ event.name }}"}}
    max_body_bytes: 2000
    rate_limit: {per_second: 0.001, burst: 3}
"""


@pytest.fixture
def app_config(app_config):
    app_config["PUBLIC_BASE_URL"] = "https://bridge.example.com/"
    return app_config


@pytest.fixture
def senders(app_config, api):
    write_mapping(app_config, SENDERS, "senders.yaml")
    return api


def test_typeform_upserts_the_lead_then_enrolls_it_in_one_rule(senders, client, services):
    api = senders
    welcome = factories.active_sequence(api, name="Welcome")
    body = (FIXTURES / "typeform_response.json").read_bytes()
    signature = base64.b64encode(hmac.new(b"tf-secret", body, hashlib.sha256).digest()).decode()
    answer = client.post(
        "/hooks/typeform",
        data=body,
        headers={"Typeform-Signature": f"sha256={signature}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.json
    drain(services)
    [contact] = api.get("/api/v1/contacts", query_string={"email": "laura@example.com"}).json["data"]
    assert contact["first_name"] == "Laura" and contact["tags"] == ["Email", "SMS"]
    enrollments = api.get(f"/api/v1/sequences/{welcome['id']}/enrollments").json["data"]
    assert [e["contact_id"] for e in enrollments] == [contact["id"]]


def test_twilio_is_checked_against_the_public_url_with_twilios_own_validator(senders, client, api, services):
    person = factories.contact(api, phone="+14155238886")
    body = (FIXTURES / "twilio_whatsapp.form").read_text().strip()
    params = {k: v[0] for k, v in parse_qs(body).items()}
    # Twilio signs the URL it called: the public one, not the loopback address Flask sees.
    signature = RequestValidator("twilio-token").compute_signature(
        "https://bridge.example.com/hooks/twilio", params
    )
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    answer = client.post("/hooks/twilio", data=body, headers=headers)
    assert answer.status_code == 202, answer.json
    drain(services)
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    local = RequestValidator("twilio-token").compute_signature("http://localhost/hooks/twilio", params)
    wrong = client.post("/hooks/twilio", data=body + "&x=1", headers={**headers, "X-Twilio-Signature": local})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "signature_mismatch"


def test_respond_after_actions_answers_with_the_outcomes(senders, client, api):
    factories.active_sequence(api, name="Nurture")
    factories.contact(api, email="zed@example.com")
    headers = {"X-Seqbridge-Token": "zap-token", "Idempotency-Key": "zap-1"}
    answer = client.post(
        "/hooks/zapier",
        json={"action": "enroll", "sequence": "Nurture", "email": "zed@example.com"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert data["status"] == "processed"
    [event] = data["results"]
    assert event["rules"] == ["enroll"]
    assert event["actions"][0]["outcome"]["status"] == "done"
    # The same Idempotency-Key again: the original delivery, nothing acts.
    again = client.post(
        "/hooks/zapier",
        json={"action": "enroll", "sequence": "Nurture", "email": "zed@example.com"},
        headers=headers,
    )
    assert (
        again.json["data"]["delivery_id"] == data["delivery_id"]
        and again.json["data"]["status"] == "duplicate"
    )
    assert again.json["data"]["original"]["status"] == "processed"
    # A permanent failure (unknown sequence) is reported, not retried.
    failed = client.post(
        "/hooks/zapier",
        json={"action": "fail-me", "email": "zed@example.com"},
        headers={"X-Seqbridge-Token": "zap-token"},
    )
    assert failed.json["data"]["status"] == "failed"
    outcome = failed.json["data"]["results"][0]["actions"][0]["outcome"]
    assert outcome["status"] == "failed" and outcome["code"] == "not_found"
    wrong = client.post("/hooks/zapier", json={"action": "enroll"}, headers={"X-Seqbridge-Token": "nope"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "token_mismatch"


def test_html_form_with_honeypot_origin_redirect_limits(senders, client, services, api):
    origin = {"Origin": "https://example.com"}
    posted = client.post(
        "/hooks/signup-form", data={"email": "Lee@Example.com", "name": "Lee"}, headers=origin
    )
    assert posted.status_code == 303 and posted.headers["Location"] == "https://example.com/thanks"
    bot = client.post(
        "/hooks/signup-form", data={"email": "bot@example.com", "website": "spam.biz"}, headers=origin
    )
    assert bot.status_code == 303  # the bot learns nothing
    elsewhere = client.post(
        "/hooks/signup-form", data={"email": "x@example.com"}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 401 and elsewhere.json["error"]["code"] == "origin_not_allowed"
    # burst of 3 used up: the rate limit answers 429 with Retry-After
    limited = client.post("/hooks/signup-form", data={"email": "y@example.com"}, headers=origin)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json["error"]["code"] == "rate_limited"
    drain(services)
    statuses = sorted(d["status"] for d in api.get("/api/v1/deliveries").json["data"])
    assert statuses == ["ignored", "processed", "rejected"]
    [lee] = api.get("/api/v1/contacts", query_string={"email": "lee@example.com"}).json["data"]
    assert lee["first_name"] == "Lee"
    assert api.get("/api/v1/contacts", query_string={"email": "bot@example.com"}).json["data"] == []


def test_size_and_content_type_limits(senders, client):
    origin = {"Origin": "https://example.com"}
    big = client.post(
        "/hooks/signup-form", data={"email": "a@example.com", "note": "x" * 5000}, headers=origin
    )
    assert big.status_code == 413 and big.json["error"]["code"] == "payload_too_large"
    wrong_type = client.post("/hooks/typeform", data="a=b", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json["error"]["details"]["accepted"] == [
        "application/json"
    ]


def test_multipart_form_is_read(senders, client, services, api):
    posted = client.post(
        "/hooks/signup-form",
        headers={"Origin": "https://example.com"},
        data={"email": "mp@example.com", "name": "Multi", "cv": (io.BytesIO(b"pdf"), "cv.pdf")},
        content_type="multipart/form-data",
    )
    assert posted.status_code == 303
    drain(services)
    [contact] = api.get("/api/v1/contacts", query_string={"email": "mp@example.com"}).json["data"]
    assert contact["first_name"] == "Multi"


def test_a_multipart_part_without_a_readable_name_is_left_out(senders, client, services, api):
    """Found by schemathesis: werkzeug names such a part None, and nesting the fields crashed (500)."""
    nameless = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nno name\r\n"
        b'--b\r\nContent-Disposition: form-data; name="bad\\"\r\n\r\nbroken quote\r\n'
        b'--b\r\nContent-Disposition: form-data; filename="x.txt"\r\n\r\nfile\r\n'
    )
    email = b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nparts@example.com\r\n'
    headers = {"Origin": "https://example.com"}
    form = "multipart/form-data; boundary=b"

    posted = client.post(
        "/hooks/signup-form", data=nameless + email + b"--b--\r\n", content_type=form, headers=headers
    )
    assert posted.status_code == 303, posted.get_data()
    [delivery] = api.get("/api/v1/deliveries").json["data"]
    [event] = api.get(f"/api/v1/deliveries/{delivery['id']}").json["data"]["events"]
    assert event["data"] == {"email": "parts@example.com"}

    only_nameless = client.post(
        "/hooks/signup-form", data=nameless + b"--b--\r\n", content_type=form, headers=headers
    )
    assert only_nameless.status_code == 400
    assert only_nameless.json["error"]["code"] == "malformed_payload"


def test_unmatched_event_fails_when_the_hook_says_so(senders, client, services, api):
    answer = client.post(
        "/hooks/signup-form",
        data={"email": "someone@elsewhere.org"},
        headers={"Origin": "https://example.com"},
    )
    assert answer.status_code == 303
    drain(services)
    [delivery] = api.get("/api/v1/deliveries").json["data"]
    assert delivery["status"] == "failed"
    detail = api.get(f"/api/v1/deliveries/{delivery['id']}").json["data"]
    assert detail["results"][0]["unmatched"] is True and detail["results"][0]["rules"] == []


# Fan-out and partial duplicates -----------------------------------------------------------------


def test_two_messages_are_two_events_and_a_seen_one_is_dropped(stop_hook, client, services, api):
    first = post_meta(client, meta_body("hello", message_id="wamid.A"))
    assert first.status_code == 202
    body = json.loads(meta_body("hi", message_id="wamid.A"))
    body["entry"][0]["changes"][0]["value"]["messages"].append(
        {
            "from": "15551234567",
            "id": "wamid.B",
            "timestamp": "1767607201",
            "type": "text",
            "text": {"body": "STOP"},
        }
    )
    raw = json.dumps(body).encode()
    second = post_meta(client, raw)
    assert (
        second.status_code == 202 and second.json["data"]["delivery_id"] != first.json["data"]["delivery_id"]
    )
    detail = api.get(f"/api/v1/deliveries/{second.json['data']['delivery_id']}").json["data"]
    assert [e["dedupe_key"] for e in detail["events"]] == ["wamid.B"]


def test_status_only_delivery_is_acknowledged_and_ignored(stop_hook, client, services, api):
    body = (FIXTURES / "whatsapp_status.json").read_bytes()
    answer = client.post("/hooks/whatsapp", data=body, headers=meta_headers(body))
    assert answer.status_code == 200 and answer.json["data"]["status"] == "ignored"
    assert drain(services) == 0
    assert [d["status"] for d in api.get("/api/v1/deliveries").json["data"]] == ["ignored"]


# Retries, dead, replay, leases ------------------------------------------------------------------


def test_transient_failures_back_off_then_die_then_replay_after_the_fix(
    stop_hook, client, services, api, clock, app_config
):
    person = factories.contact(api, phone="+15551234567")
    answer = post_meta(client, meta_body("STOP"))
    delivery_id = answer.json["data"]["delivery_id"]
    mapping = Path(app_config["MAPPINGS_DIR"]) / "hooks.yaml"
    saved = mapping.read_text()
    mapping.unlink()  # the hook disappears between receive and process: a transient problem
    services.inbox.registry.reload()
    attempts = services.settings["DELIVERY_MAX_ATTEMPTS"]
    waits = []
    for _ in range(attempts):
        assert drain(services) == 1
        detail = api.get(f"/api/v1/deliveries/{delivery_id}").json["data"]
        if detail["status"] == "queued":
            due = datetime.fromisoformat(detail["next_attempt_at"].replace("Z", "+00:00"))
            waits.append((due - clock.now()).total_seconds())
            assert drain(services) == 0  # not due yet
            clock.advance(timedelta(seconds=waits[-1] + 1))
    assert detail["status"] == "dead" and detail["attempts"] == attempts
    assert len(detail["errors"]) == attempts and "no longer configured" in detail["errors"][0]["error"]
    base, cap = (
        services.settings["DELIVERY_RETRY_BASE_SECONDS"],
        services.settings["DELIVERY_RETRY_MAX_SECONDS"],
    )
    for attempt, wait in enumerate(waits, start=1):  # exponential backoff, with 0.5x-1.5x jitter
        planned = min(cap, base * 2 ** (attempt - 1))
        assert 0.5 * planned <= wait <= 1.5 * planned, (attempt, wait)
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "active"

    mapping.write_text(saved)
    services.inbox.registry.reload()
    replayed = api.post(f"/api/v1/deliveries/{delivery_id}/replay")
    assert replayed.status_code == 202 and replayed.json["data"]["status"] == "queued"
    assert replayed.json["data"]["replays"] == 1
    assert drain(services) == 1
    assert api.get(f"/api/v1/deliveries/{delivery_id}").json["data"]["status"] == "processed"
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    again = api.post(f"/api/v1/deliveries/{delivery_id}/replay")
    assert again.status_code == 202  # processed deliveries can be replayed too
    drain(services)
    queued = api.post(f"/api/v1/deliveries/{delivery_id}/replay")
    assert queued.status_code == 202
    conflict = api.post(f"/api/v1/deliveries/{delivery_id}/replay")
    assert conflict.status_code == 409 and conflict.json["error"]["code"] == "not_replayable"
    tags = [
        e["tag"]
        for e in api.get("/api/v1/audit-events", query_string={"subject_id": delivery_id}).json["data"]
    ]
    assert "hook:delivery:dead" in tags and tags.count("api:delivery:replayed") == 3


def test_a_worker_that_died_holding_a_delivery_loses_it_to_the_next_after_the_lease(
    stop_hook, client, services, api, clock
):
    person = factories.contact(api, phone="+15551234567")
    delivery_id = post_meta(client, meta_body("STOP")).json["data"]["delivery_id"]
    assert services.deliveries.claim("crashed-worker", 10) == [delivery_id]  # ...and then it died
    assert drain(services) == 0
    clock.advance(timedelta(seconds=services.settings["PROCESSOR_LEASE_SECONDS"] + 1))
    assert drain(services) == 1
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    # The dead worker's late finish changes nothing: its lease is gone.
    assert services.deliveries.process(delivery_id, "crashed-worker") is None
    assert (
        len(
            [
                e
                for e in api.get("/api/v1/audit-events").json["data"]
                if e["tag"] == "hook:contact:unsubscribed"
            ]
        )
        == 1
    )


def test_deliveries_are_private_to_their_organization(stop_hook, client, other_api, api):
    delivery_id = post_meta(client, meta_body("hello")).json["data"]["delivery_id"]
    assert other_api.get("/api/v1/deliveries").json["data"] == []
    hidden = other_api.get(f"/api/v1/deliveries/{delivery_id}")
    assert hidden.status_code == 404 and hidden.json["error"]["code"] == "not_found"
    assert other_api.post(f"/api/v1/deliveries/{delivery_id}/replay").status_code == 404


def test_list_filters_and_cursor(stop_hook, client, api, clock):
    ids = []
    for n in range(5):
        ids.append(post_meta(client, meta_body("hi", message_id=f"wamid.{n}")).json["data"]["delivery_id"])
        clock.advance(timedelta(seconds=1))
    first = api.get(
        "/api/v1/deliveries", query_string={"limit": 2, "hook": "whatsapp", "status": "queued"}
    ).json
    assert [d["id"] for d in first["data"]] == ids[::-1][:2] and first["meta"]["has_more"] is True
    rest = api.get(
        "/api/v1/deliveries", query_string={"limit": 10, "cursor": first["meta"]["next_cursor"]}
    ).json
    assert [d["id"] for d in rest["data"]] == ids[::-1][2:]
    since = api.get("/api/v1/deliveries", query_string={"since": "2026-01-05T09:00:03Z"}).json["data"]
    assert [d["id"] for d in since] == ids[::-1][:2]
    assert api.get("/api/v1/deliveries", query_string={"hook": "other"}).json["data"] == []
    bad = api.get("/api/v1/deliveries", query_string={"status": "nope"})
    assert bad.status_code == 400


def test_standard_webhooks_replay_outside_the_window_and_another_hooks_secret_are_refused(
    app_config, client, api, services
):
    secret_a = "whsec_" + base64.b64encode(b"a" * 24).decode()
    secret_b = "whsec_" + base64.b64encode(b"b" * 24).decode()
    write_mapping(
        app_config,
        f"""
        hooks:
          crm-a:
            organization: acme
            source: {{connector: standard_webhooks, secret: "{secret_a}"}}
            rules: []
          crm-b:
            organization: acme
            source: {{connector: standard_webhooks, secret: "{secret_b}"}}
            rules: []
    """,
    )
    body = json.dumps({"type": "contact.updated", "data": {"email": "a@example.com"}})

    def signed(secret: str, msg_id: str, at: datetime) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, at, body),
            "Content-Type": "application/json",
        }

    now = datetime.now(UTC)
    fresh = client.post("/hooks/crm-a", data=body, headers=signed(secret_a, "msg_1", now))
    assert fresh.status_code == 202, fresh.json
    captured = signed(secret_a, "msg_2", now - timedelta(minutes=10))
    replayed = client.post("/hooks/crm-a", data=body, headers=captured)
    assert replayed.status_code == 401 and replayed.json["error"]["code"] == "timestamp_out_of_window"
    crossed = client.post("/hooks/crm-b", data=body, headers=signed(secret_a, "msg_3", now))
    assert crossed.status_code == 401 and crossed.json["error"]["code"] == "signature_mismatch"
    drain(services)  # the worker writes the receipts' audit events
    audit = api.get("/api/v1/audit-events", query_string={"tag": "hook:delivery:rejected"}).json["data"]
    assert sorted(e["data"]["reason"] for e in audit) == ["signature_mismatch", "timestamp_out_of_window"]
    assert all(secret_a not in json.dumps(e) and secret_b not in json.dumps(e) for e in audit)


def test_svix_sends_its_own_header_names_and_they_are_accepted_and_deduped(app_config, client, api, services):
    secret = "whsec_" + base64.b64encode(b"s" * 24).decode()
    write_mapping(
        app_config,
        f"""
        hooks:
          svix:
            organization: acme
            source: {{connector: standard_webhooks, secret: "{secret}"}}
            rules:
              - actions:
                  - upsert_contact: {{email: "{{{{ event.payload.data.email }}}}", tags: [svix]}}
    """,
    )
    body = json.dumps({"type": "contact.updated", "data": {"email": "sv@example.com"}})
    now = datetime.now(UTC)
    signature = SvixWebhook(secret).sign("msg_2svix", now, body)
    headers = {
        "svix-id": "msg_2svix",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    }
    headers["Content-Type"] = "application/json"
    first = client.post("/hooks/svix", data=body, headers=headers)
    assert first.status_code == 202, first.json
    again = client.post("/hooks/svix", data=body, headers=headers)
    assert again.json["data"]["delivery_id"] == first.json["data"]["delivery_id"]
    assert again.json["data"]["status"] == "duplicate"
    drain(services)
    [person] = api.get("/api/v1/contacts", query_string={"email": "sv@example.com"}).json["data"]
    assert person["tags"] == ["svix"]
    stored = api.get(f"/api/v1/deliveries/{first.json['data']['delivery_id']}").json["data"]
    assert secret not in json.dumps(stored) and headers["svix-signature"] not in json.dumps(stored)


def test_the_cli_replays_dead_deliveries_in_bulk(app_config, api, services):
    import os
    import subprocess
    import sys

    org = factories.org_id(api)
    dead = [factories.delivery(services, org, status="dead") for _ in range(2)]
    processed = factories.delivery(services, org, status="processed")
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": app_config["DATABASE_URL"],
        "SEQBRIDGE_MAPPINGS_DIR": app_config["MAPPINGS_DIR"],
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "deliveries",
            "replay",
            "--status",
            "dead",
            "--since",
            "2026-01-01",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "queued 2 deliveries again" in result.stdout
    statuses = {d["id"]: d["status"] for d in api.get("/api/v1/deliveries").json["data"]}
    assert statuses == {dead[0]: "queued", dead[1]: "queued", processed: "processed"}
    tags = [
        e["tag"]
        for e in api.get("/api/v1/audit-events", query_string={"subject_type": "delivery"}).json["data"]
    ]
    assert tags.count("cli:delivery:replayed") == 2
