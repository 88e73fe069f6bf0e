"""Structured logs: one JSON line per request and per processed delivery, with the request id,
organization, hook and delivery id — and never a secret."""

from __future__ import annotations

import io
import json
import logging

from seqbridge.logs import ContextFilter, JsonFormatter, TextFormatter
from tests import factories
from tests.test_hooks import drain, write_mapping


def capture() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger("seqbridge").addHandler(handler)
    return handler, stream


def test_request_and_delivery_lines_carry_their_context_and_no_secret(app_config, api, client, services):
    write_mapping(
        app_config,
        """
        hooks:
          zap:
            organization: acme
            source: {connector: zapier, token: zap-secret-token}
            rules:
              - actions: [{upsert_contact: {email: {path: event.payload.email}}}]
    """,
    )
    handler, stream = capture()
    try:
        hook = client.post(
            "/hooks/zap?token=zap-secret-token",
            json={"email": "log@example.com"},
            headers={"X-Request-Id": "req-hook-1"},
        )
        listed = api.get("/api/v1/contacts", headers={"X-Request-Id": "req-api-1"})
        drain(services)
    finally:
        logging.getLogger("seqbridge").removeHandler(handler)
    assert hook.status_code == 202 and listed.status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_request = {line.get("request_id"): line for line in lines if line["logger"] == "seqbridge.access"}
    hook_line = by_request["req-hook-1"]
    assert hook_line["path"] == "/hooks/zap" and hook_line["status"] == 202 and hook_line["hook"] == "zap"
    assert hook_line["duration_ms"] >= 0 and hook_line["level"] == "info" and hook_line["ts"].endswith("Z")
    api_line = by_request["req-api-1"]
    assert api_line["org"] == factories.org_id(api) and api_line["status"] == 200
    [processed] = [line for line in lines if line["logger"] == "seqbridge.deliveries"]
    assert processed["message"] == "delivery processed"
    assert processed["hook"] == "zap" and processed["delivery_id"] == hook.json["data"]["delivery_id"]
    assert processed["org"] == factories.org_id(api) and processed["request_id"] == "req-hook-1"
    text = stream.getvalue()
    assert "zap-secret-token" not in text and api.key not in text


def test_text_lines_for_a_terminal():
    record = logging.LogRecord("seqbridge.access", logging.INFO, __file__, 1, "GET /healthz 200", None, None)
    record.request_id, record.status = "abc", 200
    line = TextFormatter("%(levelname)s %(name)s [%(request_id_text)s] %(message)s%(context)s").format(record)
    assert line == "INFO seqbridge.access [abc] GET /healthz 200 status=200"
