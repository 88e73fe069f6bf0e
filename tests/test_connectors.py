"""Inbound source connectors: verify and parse realistic payloads. Signatures come from the
senders' own libraries where they exist (Twilio's RequestValidator, the standardwebhooks
package), else from an independent HMAC written here, never from the connector's own code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook
from twilio.request_validator import RequestValidator

from connectors import SOURCES
from connectors.base import InboundRequest, MalformedPayload, VerificationError
from connectors.crm_form import nest

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(
    body: bytes,
    headers: dict[str, str] | None = None,
    url: str = "https://bridge.example.com/hooks/h",
    method: str = "POST",
    content_type: str = "application/json",
) -> InboundRequest:
    query = parse_qs(url.partition("?")[2], keep_blank_values=True)
    return InboundRequest(
        method, url, {k.lower(): v for k, v in (headers or {}).items()}, query, body, content_type
    )


def tampered(body: bytes) -> bytes:
    """The same body with one byte changed."""
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]


def rejected(connector, req, reason: str, now: datetime = NOW) -> None:
    with pytest.raises(VerificationError) as caught:
        connector.verify(req, now)
    assert caught.value.reason == reason


# WhatsApp Cloud (Meta) ----------------------------------------------------------------------------

APP_SECRET = "meta-app-secret"


def meta_signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_whatsapp_cloud_verifies_and_parses_one_event_per_message():
    connector = SOURCES["whatsapp_cloud"]({"app_secret": APP_SECRET, "verify_token": "vt"})
    body = fixture("whatsapp_two_messages.json")
    req = request(body, meta_signed(body))
    connector.verify(req, NOW)
    events = connector.parse(req)
    assert [(e.dedupe_key, e.data["from"], e.data["text"], e.data["profile_name"]) for e in events] == [
        ("wamid.A1", "+16505550001", "hello", "Ann"),
        ("wamid.B2", "+447700900123", "STOP", "Bob"),
    ]
    single = fixture("whatsapp_text.json")
    [event] = connector.parse(request(single, meta_signed(single)))
    assert (
        event.kind == "message"
        and event.data["text"] == " Stop "
        and event.data["phone_number_id"] == "106540352242922"
    )


def test_whatsapp_cloud_status_only_deliveries_give_no_events():
    connector = SOURCES["whatsapp_cloud"]({"app_secret": APP_SECRET, "verify_token": "vt"})
    body = fixture("whatsapp_status.json")
    assert connector.parse(request(body, meta_signed(body))) == []


def test_whatsapp_cloud_tamper_wrong_secret_and_missing_signature():
    connector = SOURCES["whatsapp_cloud"]({"app_secret": APP_SECRET, "verify_token": "vt"})
    body = fixture("whatsapp_text.json")
    rejected(connector, request(tampered(body), meta_signed(body)), "signature_mismatch")
    rejected(connector, request(body, meta_signed(body, "another-secret")), "signature_mismatch")
    rejected(connector, request(body, {}), "missing_signature")
    with pytest.raises(MalformedPayload):
        connector.parse(request(b'{"object": "page"}'))


def test_whatsapp_cloud_handshake():
    connector = SOURCES["whatsapp_cloud"]({"app_secret": APP_SECRET, "verify_token": "my-token"})
    ok = request(
        b"",
        url="https://b.example.com/hooks/h?hub.mode=subscribe&hub.verify_token=my-token&hub.challenge=1158201444",
        method="GET",
    )
    assert connector.handshake(ok) == "1158201444"
    bad = request(
        b"",
        url="https://b.example.com/hooks/h?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
        method="GET",
    )
    with pytest.raises(VerificationError) as caught:
        connector.handshake(bad)
    assert caught.value.reason == "verify_token_mismatch"


# Twilio -------------------------------------------------------------------------------------------

AUTH_TOKEN = "12345678901234567890123456789012"


def test_twilio_form_signed_with_twilios_own_validator():
    connector = SOURCES["twilio"]({"auth_token": AUTH_TOKEN})
    body = fixture("twilio_whatsapp.form")
    url = "https://bridge.example.com/hooks/wa?source=twilio"
    params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    req = request(
        body, {"X-Twilio-Signature": signature}, url=url, content_type="application/x-www-form-urlencoded"
    )
    connector.verify(req, NOW)
    [event] = connector.parse(req)
    assert event.dedupe_key == "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    assert (event.data["channel"], event.data["from"], event.data["text"], event.data["wa_id"]) == (
        "whatsapp",
        "+14155238886",
        "STOP",
        "14155238886",
    )
    # Twilio may sign the URL with the default port: both forms verify.
    with_port = RequestValidator(AUTH_TOKEN).compute_signature(
        "https://bridge.example.com:443/hooks/wa?source=twilio", params
    )
    connector.verify(request(body, {"X-Twilio-Signature": with_port}, url=url), NOW)


def test_twilio_json_body_with_body_sha256():
    connector = SOURCES["twilio"]({"auth_token": AUTH_TOKEN})
    body = json.dumps({"MessageSid": "SMjson1", "From": "+14155550123", "Body": "hello"}).encode()
    url = f"https://bridge.example.com/hooks/sms?bodySHA256={hashlib.sha256(body).hexdigest()}"
    validator = RequestValidator(AUTH_TOKEN)
    signature = validator.compute_signature(url, {})
    assert validator.validate(url, body.decode(), signature)  # the SDK agrees it is well-formed
    req = request(body, {"X-Twilio-Signature": signature}, url=url)
    connector.verify(req, NOW)
    assert connector.parse(req)[0].data["channel"] == "sms"
    rejected(
        connector, request(tampered(body), {"X-Twilio-Signature": signature}, url=url), "body_hash_mismatch"
    )


def test_twilio_tamper_wrong_token_and_wrong_url():
    connector = SOURCES["twilio"]({"auth_token": AUTH_TOKEN})
    body = fixture("twilio_whatsapp.form")
    url = "https://bridge.example.com/hooks/wa"
    params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    good = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    rejected(
        connector,
        request(body.replace(b"Body=STOP", b"Body=STAY"), {"X-Twilio-Signature": good}, url=url),
        "signature_mismatch",
    )
    wrong = RequestValidator("0" * 32).compute_signature(url, params)
    rejected(connector, request(body, {"X-Twilio-Signature": wrong}, url=url), "signature_mismatch")
    # Behind a proxy Flask sees another URL: the configured public URL is what must be checked.
    rejected(
        connector,
        request(body, {"X-Twilio-Signature": good}, url="http://10.0.0.5:8000/hooks/wa"),
        "signature_mismatch",
    )
    rejected(connector, request(body, {}, url=url), "missing_signature")


# Typeform -----------------------------------------------------------------------------------------


def typeform_signed(body: bytes, secret: str = "tf-secret") -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"Typeform-Signature": f"sha256={digest}"}


def test_typeform_answers_are_flattened_by_ref_with_hidden_fields():
    connector = SOURCES["typeform"]({"secret": "tf-secret"})
    body = fixture("typeform_response.json")
    req = request(body, typeform_signed(body))
    connector.verify(req, NOW)
    [event] = connector.parse(req)
    assert event.dedupe_key == "01HX1Q2W3E4R5T6Y7U8I9O0P1A" and event.kind == "form_response"
    assert event.data["answers"] == {
        "email": "laura@example.com",
        "first_name": "Laura",
        "plan": "Pro",
        "interests": ["Email", "SMS"],
        "consent": True,
        "seats": 12,
    }
    assert event.data["hidden"] == {"utm_source": "newsletter"}
    rejected(connector, request(tampered(body), typeform_signed(body)), "signature_mismatch")
    rejected(connector, request(body, typeform_signed(body, "wrong")), "signature_mismatch")
    rejected(connector, request(body, {}), "missing_signature")


# HubSpot v3 ---------------------------------------------------------------------------------------


def hubspot_signed(body: bytes, url: str, at: datetime, secret: str = "hs-secret") -> dict[str, str]:
    stamp = str(int(at.timestamp() * 1000))
    signed = b"POST" + url.encode() + body + stamp.encode()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(
            hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        ).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    }


def test_hubspot_events_each_become_an_event_keyed_by_their_content():
    connector = SOURCES["hubspot"]({"client_secret": "hs-secret"})
    body = fixture("hubspot_events.json")
    url = "https://bridge.example.com/hooks/hubspot"
    req = request(body, hubspot_signed(body, url, NOW), url=url)
    connector.verify(req, NOW)
    events = connector.parse(req)
    assert [e.data["objectId"] for e in events] == [123, 456]
    # HubSpot's eventId repeats (both are 1 here): the keys still differ.
    assert len({e.dedupe_key for e in events}) == 2
    assert events[0].kind == "contact.propertyChange"
    # A retry carries attemptNumber 1, 2, …: it is the same event, so the same key.
    retried = json.loads(body)
    for event in retried:
        event["attemptNumber"] = 3
    raw = json.dumps(retried).encode()
    again = connector.parse(request(raw, hubspot_signed(raw, url, NOW), url=url))
    assert [e.dedupe_key for e in again] == [e.dedupe_key for e in events]


def test_hubspot_stale_timestamp_tamper_and_wrong_secret():
    connector = SOURCES["hubspot"]({"client_secret": "hs-secret"})
    body = fixture("hubspot_events.json")
    url = "https://bridge.example.com/hooks/hubspot"
    stale = hubspot_signed(body, url, NOW - timedelta(minutes=6))
    rejected(connector, request(body, stale, url=url), "timestamp_out_of_window")
    rejected(
        connector, request(tampered(body), hubspot_signed(body, url, NOW), url=url), "signature_mismatch"
    )
    rejected(connector, request(body, hubspot_signed(body, url, NOW, "other"), url=url), "signature_mismatch")
    rejected(connector, request(body, {}, url=url), "missing_signature")


# Standard Webhooks ---------------------------------------------------------------------------------

SECRET_A = "whsec_" + base64.b64encode(b"first-secret-of-32-bytes-length!").decode()
SECRET_B = "whsec_" + base64.b64encode(b"rotated-secret-32-bytes-length!!").decode()


def standard_signed(body: bytes, msg_id: str, at: datetime, secret: str = SECRET_A) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def test_standard_webhooks_verified_by_the_package_with_rotation():
    connector = SOURCES["standard_webhooks"]({"secrets": [SECRET_B, SECRET_A]})
    body = fixture("standard_webhooks_event.json")
    now = datetime.now(UTC)
    req = request(body, standard_signed(body, "msg_2abc", now))
    connector.verify(req, now)
    [event] = connector.parse(req)
    assert event.dedupe_key == "msg_2abc" and event.kind == "contact.created"
    both = standard_signed(body, "msg_2abd", now)
    both["webhook-signature"] = (
        Webhook(SECRET_B).sign("msg_2abd", now, body.decode()) + " " + both["webhook-signature"]
    )
    connector.verify(request(body, both), now)


def test_standard_webhooks_stale_tamper_wrong_secret_missing():
    connector = SOURCES["standard_webhooks"]({"secret": SECRET_A})
    body = fixture("standard_webhooks_event.json")
    now = datetime.now(UTC)
    rejected(
        connector,
        request(body, standard_signed(body, "m1", now - timedelta(minutes=6))),
        "timestamp_out_of_window",
    )
    rejected(connector, request(tampered(body), standard_signed(body, "m1", now)), "signature_mismatch")
    rejected(connector, request(body, standard_signed(body, "m1", now, SECRET_B)), "signature_mismatch")
    rejected(connector, request(body, {"webhook-id": "m1"}), "missing_signature")


def svix_signed(body: bytes, msg_id: str, at: datetime, secret: str = SECRET_A) -> dict[str, str]:
    """What Svix sends by default: its own header names, signed by Svix's own library."""
    signature = SvixWebhook(secret).sign(msg_id, at, body.decode())
    return {"svix-id": msg_id, "svix-timestamp": str(int(at.timestamp())), "svix-signature": signature}


def test_standard_webhooks_accepts_svix_headers_signed_by_the_svix_package():
    connector = SOURCES["standard_webhooks"]({"secrets": [SECRET_B, SECRET_A]})
    body = fixture("standard_webhooks_event.json")
    now = datetime.now(UTC)
    req = request(body, svix_signed(body, "msg_svix1", now))
    connector.verify(req, now)
    [event] = connector.parse(req)
    assert event.dedupe_key == "msg_svix1" and event.data["webhook_id"] == "msg_svix1"
    # Svix's library checks what it signs the same way: the connector agrees with it.
    SvixWebhook(SECRET_A).verify(body, svix_signed(body, "msg_svix1", now))
    rejected(connector, request(tampered(body), svix_signed(body, "m2", now)), "signature_mismatch")
    stale = svix_signed(body, "m3", now - timedelta(minutes=6))
    rejected(connector, request(body, stale), "timestamp_out_of_window")
    rejected(connector, request(body, {"svix-id": "m4", "svix-timestamp": "1"}), "missing_signature")
    # Both spellings at once, as Svix's library reads them: the svix- ones win.
    mixed = {**standard_signed(body, "other", now, SECRET_B), **svix_signed(body, "msg_svix5", now)}
    assert connector.parse(request(body, mixed))[0].dedupe_key == "msg_svix5"
    connector.verify(request(body, mixed), now)


# Shared-secret senders: Zapier, n8n, ActiveCampaign ------------------------------------------------


def test_zapier_token_in_header_query_or_bearer_and_idempotency_key():
    connector = SOURCES["zapier"]({"token": "zap-token"})
    body = b'{"action": "enroll", "email": "ada@example.com"}'
    for headers, url in (
        ({"X-Seqbridge-Token": "zap-token"}, "https://b.example.com/hooks/z"),
        ({}, "https://b.example.com/hooks/z?token=zap-token"),
        ({"Authorization": "Bearer zap-token"}, "https://b.example.com/hooks/z"),
    ):
        connector.verify(request(body, headers, url=url), NOW)
    rejected(connector, request(body, {"X-Seqbridge-Token": "nope"}), "token_mismatch")
    rejected(connector, request(body, {}), "missing_token")
    keyed = connector.parse(request(body, {"Idempotency-Key": "zap-run-77"}))[0]
    assert keyed.dedupe_key == "zap-run-77" and keyed.data["payload"]["action"] == "enroll"
    assert connector.parse(request(body))[0].dedupe_key == hashlib.sha256(body).hexdigest()
    form = connector.parse(
        request(urlencode({"email": "b@x.com"}).encode(), content_type="application/x-www-form-urlencoded")
    )
    assert form[0].data["payload"] == {"email": "b@x.com"}


def test_n8n_basic_auth():
    connector = SOURCES["n8n"]({"basic_user": "n8n", "basic_password": "pw"})
    good = "Basic " + base64.b64encode(b"n8n:pw").decode()
    connector.verify(request(b"{}", {"Authorization": good}), NOW)
    rejected(
        connector,
        request(b"{}", {"Authorization": "Basic " + base64.b64encode(b"n8n:no").decode()}),
        "token_mismatch",
    )
    rejected(connector, request(b"{}", {}), "missing_token")
    with pytest.raises(ValueError, match="token"):
        SOURCES["n8n"]({})


def test_activecampaign_bracketed_keys_become_nested():
    connector = SOURCES["activecampaign"]({"token": "ac-token"})
    body = fixture("activecampaign_tag_added.form")
    req = request(
        body,
        url="https://b.example.com/hooks/ac?token=ac-token",
        content_type="application/x-www-form-urlencoded",
    )
    connector.verify(req, NOW)
    [event] = connector.parse(req)
    assert event.kind == "contact_tag_added" and event.data["tag"] == "vip"
    assert event.data["contact"] == {
        "id": "42",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "tags": "vip, beta",
        "fields": {"plan": "pro"},
    }
    rejected(connector, request(body, url="https://b.example.com/hooks/ac?token=guess"), "token_mismatch")


def test_nesting_keeps_repeated_keys_as_lists():
    assert nest({"a[]": ["1", "2"], "b[c][d]": ["x"], "e": ["1", "2"]}) == {
        "a": {"_list": ["1", "2"]},
        "b": {"c": {"d": "x"}},
        "e": ["1", "2"],
    }


def test_connectors_refuse_incomplete_configuration():
    for name, config in (
        ("whatsapp_cloud", {"app_secret": "x"}),
        ("twilio", {}),
        ("typeform", {}),
        ("hubspot", {}),
        ("standard_webhooks", {}),
    ):
        with pytest.raises(ValueError, match="missing setting"):
            SOURCES[name](config)
