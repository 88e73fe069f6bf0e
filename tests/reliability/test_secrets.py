"""A dictionary of secrets, checked after a full run: every API key, webhook secret and SMTP
password used (rightly and wrongly) is looked for in every row of every table (the audit log
included) and in every log line. None may appear."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import socket
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

from seqbridge.logs import JsonFormatter
from seqbridge.storage.schema import metadata
from seqbridge.worker.notifications import HookNotifier
from seqbridge.worker.processor import StepProcessor
from tests import factories
from tests.loopback import LoopbackServer, QuietHandler
from tests.test_hooks import FIXTURES, drain, meta_body, meta_headers, write_mapping

META = "meta-app-secret-4f1c9a"
TWILIO = "twilio-auth-token-8d2e7b"
TYPEFORM = "typeform-secret-63ac1d"
ZAPIER = "zapier-hook-token-a91f0e"
N8N_PASSWORD = "n8n-basic-password-0c7d55"
STANDARD = "whsec_" + base64.b64encode(b"standard-webhooks-secret-2b9f").decode()
MASTER = "whsec_" + base64.b64encode(b"seqbridge-master-secret-77aa").decode()
SMTP_PASSWORD = "smtp-password-5e3b21"

MAPPING = f"""
hooks:
  whatsapp:
    organization: acme
    source: {{connector: whatsapp_cloud, app_secret: {META}, verify_token: v}}
    rules:
      - name: stop
        when: {{field: event.text, keyword: [STOP]}}
        actions:
          - upsert_contact: {{phone: "{{{{ event.from }}}}", set: {{status: unsubscribed}}}}
  twilio:
    organization: acme
    source: {{connector: twilio, auth_token: {TWILIO}}}
    rules: []
  typeform:
    organization: acme
    source: {{connector: typeform, secret: {TYPEFORM}}}
    rules:
      - name: welcome
        when: {{field: event.answers.email, exists: true}}
        actions:
          - enroll: {{sequence: Welcome, contact: {{email: "{{{{ event.answers.email }}}}"}}}}
  zapier:
    organization: acme
    source: {{connector: zapier, token: {ZAPIER}}}
    rules: []
  n8n:
    organization: acme
    source: {{connector: n8n, basic_user: n8n, basic_password: {N8N_PASSWORD}}}
    rules: []
  standard:
    organization: acme
    source: {{connector: standard_webhooks, secret: "{STANDARD}"}}
    rules: []
"""


@pytest.fixture
def app_config(app_config, tmp_path):
    port = _smtp_port()
    return {
        **app_config,
        "WEBHOOK_SECRET": MASTER,
        "ALLOW_PRIVATE_TARGETS": "true",
        "LOG_LEVEL": "DEBUG",
        "SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{port}?starttls=never",
    }


def _smtp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.password.decode() == SMTP_PASSWORD
    return AuthResult(success=ok)


@pytest.fixture
def smtp(app_config):
    mailbox = _Mailbox()
    port = int(app_config["SMTP_URL"].rsplit(":", 1)[1].split("?")[0])
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=_authenticate, auth_require_tls=False
    )
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def captured_logs():
    """Every line the seqbridge loggers write, as the JSON formatter renders it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("seqbridge")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


class _Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = LoopbackServer(Handler)
        self.url = self.server.url + "/in"


def test_no_secret_is_ever_stored_or_logged(
    app_config, api, other_api, client, services, smtp, captured_logs, make_key
):
    write_mapping(app_config, MAPPING)
    receiver = _Receiver()
    api_keys = [api.key, other_api.key, make_key("acme", ["contacts:read"], "weak")]

    # The API, with keys right and wrong (a key sent where it does not belong, too).
    subscription = api.post(
        "/api/v1/hooks/subscriptions", json={"target_url": receiver.url, "event": "enrollment.created"}
    ).json["data"]
    welcome = factories.active_sequence(api, name="Welcome", steps=({"delay_days": 0},))
    hooked = factories.active_sequence(
        api, name="Hooked", steps=({"delay_days": 0, "channel": "webhook", "webhook_url": receiver.url},)
    )
    person = factories.contact(
        api,
        email="ada@example.com",
        phone="+15550001111",
        first_name="Ada",
        attributes={"note": "no secrets here"},
    )
    api.post(f"/api/v1/sequences/{welcome['id']}/enroll", json={"contact_id": person["id"]})
    api.post(f"/api/v1/sequences/{hooked['id']}/enroll", json={"contact_id": person["id"]})
    client.get("/api/v1/contacts", headers={"Authorization": f"Bearer {api_keys[2]}x"})  # a wrong key
    client.get(f"/api/v1/contacts?api_key={api.key}")  # a key in the query string, where it does not belong
    api.with_key(api_keys[2]).post("/api/v1/contacts", json={"email": "denied@example.com"})  # 403

    # Webhooks, signed right and wrong, with tokens in headers, the query string and basic auth.
    post_ok = client.post(
        "/hooks/whatsapp", data=meta_body("STOP"), headers=meta_headers(meta_body("STOP"), META)
    )
    assert post_ok.status_code == 202
    client.post(
        "/hooks/whatsapp",
        data=meta_body("STOP", message_id="wamid.X"),
        headers=meta_headers(meta_body("STOP"), META),
    )  # a signature for another body
    form = (FIXTURES / "twilio_whatsapp.form").read_text().strip()
    params = {k: v[0] for k, v in parse_qs(form).items()}
    signature = RequestValidator(TWILIO).compute_signature("http://localhost/hooks/twilio", params)
    client.post(
        "/hooks/twilio",
        data=form,
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    )
    typeform = (FIXTURES / "typeform_response.json").read_bytes()
    digest = base64.b64encode(hmac.new(TYPEFORM.encode(), typeform, hashlib.sha256).digest()).decode()
    assert (
        client.post(
            "/hooks/typeform",
            data=typeform,
            headers={"Typeform-Signature": f"sha256={digest}", "Content-Type": "application/json"},
        ).status_code
        == 202
    )
    client.post("/hooks/zapier", json={"a": 1}, headers={"X-Seqbridge-Token": ZAPIER})
    client.post(f"/hooks/zapier?token={ZAPIER}", json={"a": 2})
    client.post("/hooks/zapier", json={"a": 3}, headers={"Authorization": f"Bearer {ZAPIER}"})
    client.post("/hooks/zapier", json={"a": 4}, headers={"X-Seqbridge-Token": ZAPIER + "-wrong"})
    basic = base64.b64encode(f"n8n:{N8N_PASSWORD}".encode()).decode()
    client.post("/hooks/n8n", json={"b": 1}, headers={"Authorization": f"Basic {basic}"})
    payload = json.dumps({"type": "x", "data": {}})
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    client.post(
        "/hooks/standard",
        data=payload,
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "Content-Type": "application/json",
            "webhook-signature": Webhook(STANDARD).sign("msg_1", now, payload),
        },
    )
    client.get("/hooks/whatsapp?hub.mode=subscribe&hub.verify_token=v&hub.challenge=1")

    # The worker: deliveries, steps (an email through SMTP with its password, a signed webhook),
    # REST hook notifications.
    drain(services)
    StepProcessor(services).run_once("test-worker")
    HookNotifier(services).run_once("test-worker")
    assert len(smtp.messages) >= 1 and len(receiver.bodies) >= 2
    api.get("/metrics")
    receiver.server.close()

    secrets = {
        "api key": api_keys,
        "meta": [META],
        "twilio": [TWILIO],
        "typeform": [TYPEFORM],
        "zapier": [ZAPIER],
        "n8n": [N8N_PASSWORD, basic],
        "standard webhooks": [STANDARD],
        "master": [MASTER],
        "rest hook": [subscription["secret"]],
        "smtp": [SMTP_PASSWORD],
    }
    # Every row of every table, as text (bytes decoded), the audit log among them.
    dump = []
    with services.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                dump.append(
                    f"{table.name}: "
                    + " | ".join(
                        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row
                    )
                )
    database = "\n".join(dump)
    logs = captured_logs.getvalue()
    assert "hook:delivery:received" in database and "POST /hooks/zapier" in logs  # the run really ran
    leaks = [
        (kind, where)
        for kind, values in secrets.items()
        for value in values
        for where, text in (("database", database), ("logs", logs))
        if value in text
    ]
    assert leaks == [], leaks
    # And the redacted copies say so: the delivery's stored headers show the redaction mark.
    assert "[REDACTED]" in database
