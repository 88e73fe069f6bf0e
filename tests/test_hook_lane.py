"""The webhook lane in front of Flask (``seqbridge.web.hook_lane``) answers every webhook exactly as
Flask's view does: the same requests go to an app with the lane and to one without it
(``HOOKS_LANE=false``), on the same database, and their answers, headers, stored deliveries,
metrics and log lines are compared. A signal counts the requests Flask dispatched, so a lane
that quietly handed everything to Flask would fail here."""

from __future__ import annotations

import io
import json
import logging
import re
from urllib.parse import parse_qs

import pytest
from flask import request_started
from prometheus_client import REGISTRY
from twilio.request_validator import RequestValidator

from seqbridge import create_app
from tests import factories
from tests.test_hooks import (
    BROKEN,
    FIXTURES,
    SENDERS,
    WHATSAPP_STOP,
    drain,
    meta_body,
    meta_headers,
    write_mapping,
)

#: Values that differ between two deliveries of the same request (ids, times, paths naming ids).
_VARYING = {"delivery_id", "path", "replay_path", "received_at", "dedupe_until"}


@pytest.fixture
def pair(app, app_config, api):
    """``{"lane": client, "flask": client}``: two apps on one database and one mappings directory,
    and how many requests each let Flask dispatch."""
    write_mapping(app_config, WHATSAPP_STOP)
    # burst 4: too large, two redirects and a refused origin, then 429
    write_mapping(app_config, SENDERS.replace("burst: 3", "burst: 4"), "senders.yaml")
    write_mapping(app_config, BROKEN, "broken.yaml")
    flask_only = create_app({**app_config, "HOOKS_LANE": False})
    dispatched = {app: 0, flask_only: 0}

    def count(sender, **_):
        dispatched[sender] = dispatched.get(sender, 0) + 1

    request_started.connect(count)
    try:
        yield {
            "lane": app.test_client(),
            "flask": flask_only.test_client(),
            "dispatched": lambda: (dispatched[app], dispatched[flask_only]),
            "api": api,
        }
    finally:
        request_started.disconnect(count)
        flask_only.extensions["seqbridge"].db.dispose()


def _normalised(value):
    if isinstance(value, dict):
        return {k: "<varies>" if k in _VARYING else _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _same(lane, flask) -> None:
    assert lane.status_code == flask.status_code, (lane.get_data(), flask.get_data())
    for header in ("Content-Type", "WWW-Authenticate", "Retry-After", "Location"):
        assert lane.headers.get(header) == flask.headers.get(header), header
    assert int(lane.headers["Content-Length"]) == len(lane.get_data())
    assert re.fullmatch(r"[0-9a-f]{32}", lane.headers["X-Request-Id"])
    if flask.is_json:
        assert _normalised(lane.get_json()) == _normalised(flask.get_json())
    else:
        assert lane.get_data() == flask.get_data()


def _counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _twilio(side: str) -> dict:
    """Twilio's own signature over the URL it called (no public base URL here: the request's)."""
    body = (FIXTURES / "twilio_whatsapp.form").read_text().strip().replace("SM1f0e8ae6", f"SM{side[:4]}")
    params = {k: v[0] for k, v in parse_qs(body).items()}
    signature = RequestValidator("twilio-token").compute_signature("http://localhost/hooks/twilio", params)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    return {"data": body, "headers": headers}


def _signed(text: str, message_id: str) -> dict:
    body = meta_body(text, message_id=message_id)
    return {"data": body, "headers": meta_headers(body)}


def test_every_kind_of_answer_is_the_same_with_and_without_the_lane(pair):
    origin = {"Origin": "https://example.com"}
    cases = {
        # side -> the request's keyword arguments (each side gets its own message ids)
        "queued": lambda side: ("/hooks/whatsapp", _signed("STOP", f"wamid.{side}.1")),
        "duplicate": lambda side: ("/hooks/whatsapp", _signed("STOP", f"wamid.{side}.1")),
        "bad signature": lambda side: (
            "/hooks/whatsapp",
            {"data": meta_body("hi"), "headers": meta_headers(meta_body("hi"), "wrong")},
        ),
        "malformed": lambda side: (
            "/hooks/whatsapp",
            {"data": b"{not json", "headers": meta_headers(b"{not json")},
        ),
        "twilio": lambda side: ("/hooks/twilio", _twilio(side)),
        "unknown hook": lambda side: ("/hooks/nope", {"json": {}}),
        "broken hook": lambda side: ("/hooks/broken", {"json": {}}),
        "wrong content type": lambda side: (
            "/hooks/typeform",
            {"data": "a=b", "headers": {"Content-Type": "text/plain"}},
        ),
        "too large": lambda side: (
            "/hooks/signup-form",
            {"data": {"email": "a@example.com", "note": "x" * 5000}, "headers": origin},
        ),
        "form redirect": lambda side: (
            "/hooks/signup-form",
            {"data": {"email": f"{side}@example.com", "name": "Lee"}, "headers": origin},
        ),
        "multipart redirect": lambda side: (
            "/hooks/signup-form",
            {
                "data": {"email": f"mp-{side}@example.com", "cv": (io.BytesIO(b"pdf"), "cv.pdf")},
                "headers": origin,
                "content_type": "multipart/form-data",
            },
        ),
        "origin refused": lambda side: (
            "/hooks/signup-form",
            {"data": {"email": "x@example.com"}, "headers": {"Origin": "https://evil.example"}},
        ),
        "rate limited": lambda side: (
            "/hooks/signup-form",
            {"data": {"email": "y@example.com"}, "headers": origin},
        ),
    }
    answers = {}
    for name, make in cases.items():
        sides = {}
        for side in ("lane", "flask"):
            path, kwargs = make(side)
            sides[side] = pair[side].post(path, **kwargs)
        _same(sides["lane"], sides["flask"])
        answers[name] = sides["lane"]
    # What they answered, so that "the same" is not "the same and wrong".
    expected = {
        "queued": (202, "queued"),
        "duplicate": (200, "duplicate"),
        "bad signature": (401, "signature_mismatch"),
        "malformed": (400, "malformed_payload"),
        "twilio": (202, "queued"),
        "unknown hook": (404, "hook_not_found"),
        "broken hook": (503, "hook_misconfigured"),
        "wrong content type": (415, "unsupported_media_type"),
        "too large": (413, "payload_too_large"),
        "form redirect": (303, None),
        "multipart redirect": (303, None),
        "origin refused": (401, "origin_not_allowed"),
        "rate limited": (429, "rate_limited"),
    }
    for name, (status, code) in expected.items():
        answer = answers[name]
        assert answer.status_code == status, name
        if code in ("queued", "duplicate"):
            assert answer.json["data"]["status"] == code
        elif code is not None:
            assert answer.json["error"]["code"] == code and answer.json["error"]["message"], name
    assert (
        answers["bad signature"].headers["WWW-Authenticate"]
        == 'Bearer realm="seqbridge", error="invalid_token"'
    )
    assert answers["duplicate"].json["data"]["delivery_id"] == answers["queued"].json["data"]["delivery_id"]
    assert answers["form redirect"].headers["Location"] == "https://example.com/thanks"
    assert int(answers["rate limited"].headers["Retry-After"]) >= 1
    # Every one of the lane's POSTs was answered before Flask; every one of the other app's by Flask.
    assert pair["dispatched"]() == (0, len(cases))


def test_what_the_lane_stores_is_what_flask_stores(pair, services):
    api = pair["api"]
    people = {
        side: factories.contact(api, phone=phone)
        for side, phone in (("lane", "+15551230001"), ("flask", "+15551230002"))
    }
    for side, person in people.items():
        body = meta_body("STOP", message_id=f"wamid.store.{side}", sender=person["phone"].lstrip("+"))
        headers = {**meta_headers(body), "X-Request-Id": f"req-{side}"}
        assert pair[side].post("/hooks/whatsapp", data=body, headers=headers).status_code == 202
        assert (
            pair[side]
            .post("/hooks/whatsapp", data=meta_body("x"), headers=meta_headers(meta_body("x"), "bad"))
            .status_code
            == 401
        )
    drain(services)
    deliveries = {
        d["request_id"]: d
        for d in api.get("/api/v1/deliveries", query_string={"limit": 100}).json["data"]
        if d.get("request_id")
    }
    lane = api.get(f"/api/v1/deliveries/{deliveries['req-lane']['id']}").json["data"]
    flask = api.get(f"/api/v1/deliveries/{deliveries['req-flask']['id']}").json["data"]
    assert lane["status"] == flask["status"] == "processed"
    assert (lane["hook"], lane["attempts"]) == (flask["hook"], flask["attempts"]) == ("whatsapp", 1)
    for field in ("method", "content_type", "query"):
        assert lane["request"][field] == flask["request"][field], field
    assert (
        json.loads(lane["request"]["body"])["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        == "wamid.store.lane"
    )

    def headers(detail):
        return {
            k: v
            for k, v in detail["request"]["headers"].items()
            if k not in ("x-request-id", "content-length")
        }

    assert headers(lane) == headers(flask)
    assert lane["request"]["headers"]["x-request-id"] == "req-lane"
    assert lane["request"]["headers"]["content-length"] == str(lane["request"]["body_size"])
    assert lane["request"]["headers"]["x-hub-signature-256"] == "[REDACTED]"  # a secret never stored
    for person in people.values():
        assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    rejected = api.get("/api/v1/deliveries", query_string={"status": "rejected"}).json["data"]
    assert len(rejected) == 2


def test_the_lane_counts_and_logs_its_requests(pair, caplog):
    before = {
        "accepted": _counter(
            "seqbridge_http_requests_total", route="/hooks/<hook_name>", method="POST", status="202"
        ),
        "rejected": _counter(
            "seqbridge_webhook_rejections_total", hook="whatsapp", reason="signature_mismatch"
        ),
        "unknown": _counter("seqbridge_webhook_rejections_total", hook="unknown", reason="hook_not_found"),
    }
    with caplog.at_level(logging.INFO, logger="seqbridge.access"):
        ok = pair["lane"].post(
            "/hooks/whatsapp",
            **{
                **_signed("STOP", "wamid.log.1"),
                "headers": {**_signed("STOP", "wamid.log.1")["headers"], "X-Request-Id": "req-lane-log"},
            },
        )
        bad = pair["lane"].post(
            "/hooks/whatsapp", data=meta_body("x"), headers=meta_headers(meta_body("x"), "bad")
        )
        missing = pair["lane"].post("/hooks/nope", json={})
    assert (ok.status_code, bad.status_code, missing.status_code) == (202, 401, 404)
    assert ok.headers["X-Request-Id"] == "req-lane-log"
    assert (
        _counter("seqbridge_http_requests_total", route="/hooks/<hook_name>", method="POST", status="202")
        == before["accepted"] + 1
    )
    assert (
        _counter("seqbridge_webhook_rejections_total", hook="whatsapp", reason="signature_mismatch")
        == before["rejected"] + 1
    )
    assert (
        _counter("seqbridge_webhook_rejections_total", hook="unknown", reason="hook_not_found")
        == before["unknown"] + 1
    )
    lines = [r for r in caplog.records if r.name == "seqbridge.access"]
    [line] = [r for r in lines if getattr(r, "request_id", None) == "req-lane-log"]
    assert (line.method, line.path, line.status, line.hook) == ("POST", "/hooks/whatsapp", 202, "whatsapp")
    assert line.duration_ms >= 0
    assert sorted(r.status for r in lines) == [202, 401, 404]


def test_a_bug_behind_the_lane_is_a_json_500_with_the_request_id(pair, app, monkeypatch, caplog):
    inbox = app.extensions["seqbridge"].inbox

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(inbox, "receive", broken)
    with caplog.at_level(logging.ERROR, logger="seqbridge.web"):
        answer = pair["lane"].post(
            "/hooks/whatsapp",
            **{
                **_signed("STOP", "wamid.bug"),
                "headers": {**_signed("STOP", "wamid.bug")["headers"], "X-Request-Id": "req-bug"},
            },
        )
    assert answer.status_code == 500
    error = answer.json["error"]
    assert error["code"] == "internal_error" and error["details"] == {"request_id": "req-bug"}
    assert "secret detail" not in answer.get_data(as_text=True)
    [logged] = [r for r in caplog.records if r.name == "seqbridge.web"]
    assert logged.exc_info is not None and logged.request_id == "req-bug"


def test_requests_the_lane_leaves_to_flask(pair):
    """GET handshakes, a query string, a chunked body: Flask answers them, as before."""
    lane = pair["lane"]
    handshake = lane.get(
        "/hooks/whatsapp",
        query_string={"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "42"},
    )
    assert handshake.status_code == 200 and handshake.get_data() == b"42"
    body = meta_body("STOP", message_id="wamid.chunked")
    chunked = lane.post(
        "/hooks/whatsapp",
        input_stream=io.BytesIO(body),
        headers={**meta_headers(body), "Transfer-Encoding": "chunked"},
        # what gunicorn hands over for a chunked body: no length, the stream ends where the body does
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert chunked.status_code == 202, chunked.get_data()
    query = lane.post("/hooks/whatsapp?x=1", **_signed("STOP", "wamid.query"))
    assert query.status_code == 202
    put = lane.put("/hooks/whatsapp", **_signed("STOP", "wamid.put"))
    assert put.status_code == 202 and json.loads(put.get_data())["data"]["status"] == "queued"
    assert pair["dispatched"]() == (4, 0)
