"""SSRF: webhook steps, remote targets and REST hook subscribers never reach private, loopback,
link-local or metadata addresses unless the configuration allows it. Every test that needs a
loopback receiver turns the allowance on explicitly; here it stays off."""

from __future__ import annotations

import pytest

from connectors.net import AddressRefused, check_address
from tests import factories
from tests.loopback import LoopbackServer, QuietHandler
from tests.test_hooks import drain, write_mapping

#: Ways to spell an address the guard must refuse (the decimal and short forms resolve to loopback).
PRIVATE = [
    "http://127.0.0.1:9/x",
    "http://localhost:9/x",
    "http://127.1:9/x",
    "http://2130706433:9/x",
    "http://0x7f000001:9/x",
    "http://[::1]:9/x",
    "http://[::ffff:127.0.0.1]:9/x",
    "http://10.0.0.1/x",
    "http://172.16.5.4/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata endpoint
    "http://[fe80::1]/x",
    "http://0.0.0.0:9/x",
    "http://100.64.0.1/x",  # carrier-grade NAT
]


@pytest.mark.parametrize("url", PRIVATE)
def test_the_guard_refuses_every_spelling_of_a_private_address(url):
    with pytest.raises(AddressRefused) as refused:
        check_address(url, allow_private=False)
    assert "private address" in refused.value.message or "not an http" in refused.value.message
    check_address(url, allow_private=True)  # allowed only when configured


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.com/", "http:///x"]
)
def test_only_http_urls_are_accepted_even_when_private_is_allowed(url):
    with pytest.raises(AddressRefused):
        check_address(url, allow_private=True)


@pytest.fixture
def listener():
    """A loopback server that must never be reached."""
    hits: list[str] = []

    class Handler(QuietHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

    with LoopbackServer(Handler) as server:
        yield server.url, hits


def test_a_remote_target_on_loopback_is_refused_and_never_called(app_config, api, client, services, listener):
    base_url, hits = listener
    write_mapping(
        app_config,
        f"""
targets:
  crm: {{type: sequences_api, base_url: "{base_url}", api_key: "k", max_attempts: 1}}
hooks:
  h:
    organization: acme
    source: {{connector: generic, public: true}}
    rules:
      - actions: [{{target: crm, enroll: {{sequence: seq_1, contact: {{email: {{path: event.payload.email}}}}}}}}]
""",
    )
    assert client.post("/hooks/h", json={"email": "a@example.com"}).status_code == 202
    drain(services)
    [delivery] = api.get("/api/v1/deliveries").json["data"]
    detail = api.get(f"/api/v1/deliveries/{delivery['id']}").json["data"]
    assert detail["status"] in ("failed", "dead")
    assert "private address" in str(detail["results"]) + str(detail["errors"])
    assert hits == []


def test_a_webhook_step_and_a_rest_hook_on_loopback_are_refused(api, services, listener):
    base_url, hits = listener
    refused = api.post(
        "/api/v1/hooks/subscriptions", json={"target_url": base_url + "/zap", "event": "delivery.dead"}
    )
    assert refused.status_code == 400 and refused.json["error"]["code"] == "target_refused"
    sequence = factories.active_sequence(
        api, steps=({"delay_days": 0, "channel": "webhook", "webhook_url": base_url + "/step"},)
    )
    enrollment = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": factories.contact(api)["id"]}
    ).json["data"]
    from seqbridge.worker.processor import StepProcessor

    services.settings["WEBHOOK_SECRET"] = "whsec_" + "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
    StepProcessor(services).run_once("test-worker")
    state = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments/{enrollment['id']}").json["data"]
    assert state["status"] == "failed" and "private address" in state["last_error"]
    assert hits == []
