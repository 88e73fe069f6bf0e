"""Contract fuzzing: schemathesis runs every operation in openapi.yaml against the app served on
loopback by a real HTTP server, with a key that has every scope, and every answer must be one the
contract describes: no server error, a documented status code and content type, and a body that
matches its schema.

Random ids would only ever find 404s, so about half of the cases (chosen by a hash of the case,
so a failing case replays the same way) aim at real objects instead: each operation gets its own
small world (a company, a tagged contact, an active sequence with a step and an enrollment, an
event queue with a step and a task, a stored delivery, a REST hook subscription) and there are six
hooks. Path parameters and id fields in bodies are swapped for the world's ids by name; a parameter
this file does not know (a new operation's) keeps its generated value, and the operation is still
fuzzed.
"""

from __future__ import annotations

import json
import textwrap
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from werkzeug.serving import WSGIRequestHandler, make_server

from seqbridge import create_app
from seqbridge.config import load_settings
from tests import factories
from tests.conftest import BACKENDS, Api, fresh_database

pytestmark = pytest.mark.slow

OPENAPI = load_settings()["OPENAPI_PATH"]
#: Generated cases per operation in the fuzzing phase (the examples and coverage phases add the
#: spec's examples and the boundary values of each schema).
MAX_EXAMPLES = 10
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
]

# Every operation in the file, found when this module is collected: a new one is fuzzed too.
schema = schemathesis.openapi.from_path(OPENAPI, config=schemathesis.Config(seed=20260101))
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)

HOOKS = """
hooks:
  open:                       # anyone may post: 202 queued
    organization: acme
    source: {connector: generic, public: true}
    rules: [{name: nothing, actions: []}]
  zapier:                     # the spec's example hook; processes at once: 200 with the results
    organization: acme
    source: {connector: generic, public: true}
    respond: after_actions
    rules: [{name: nothing, actions: []}]
  guarded:                    # a token hook: 401 without it
    organization: acme
    source: {connector: generic, token: secret-token}
    rules: []
  signup:                     # a browser form: 303 to the thank-you page
    organization: acme
    source: {connector: form, public: true, redirect_to: "https://example.com/thanks"}
    rules: []
  whatsapp:                   # Meta's GET handshake: 403 without the verify token
    organization: acme
    source: {connector: whatsapp_cloud, app_secret: app-secret, verify_token: verify-me}
    rules: []
  throttled:                  # 429 after the first request
    organization: acme
    source: {connector: generic, public: true}
    rate_limit: {per_second: 0.001, burst: 1}
    rules: []
"""
HOOK_NAMES = ["open", "zapier", "guarded", "signup", "whatsapp", "throttled"]
#: The path parameters and body fields that can name a real object.
REAL_NAMES = {
    "company_id",
    "contact_id",
    "customer_id",
    "contactId",
    "tag",
    "sequence_id",
    "step_id",
    "enrollment_id",
    "queue_id",
    "delivery_id",
    "subscription_id",
    "hook_name",
    "hook",
    "filename",
}


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:
        """The app logs each request itself; werkzeug's own line would repeat it."""


@dataclass
class Live:
    """The app on a real HTTP server, an API key with every scope, and a world per operation."""

    url: str
    headers: dict[str, str]
    api: Api
    services: object
    session: requests.Session = field(default_factory=requests.Session)
    worlds: dict[str, dict[str, str]] = field(default_factory=dict)

    def world(self, operation: str) -> dict[str, str]:
        if operation not in self.worlds:
            self.worlds[operation] = build_world(self.api, self.services, len(self.worlds))
        return self.worlds[operation]


def build_world(api: Api, services, n: int) -> dict[str, str]:
    """Real objects for one operation's cases, each field filled in so the bodies are complete."""
    initech = {"name": f"Initech {n}", "account_type": "partner", "industry": "software", "is_customer": True}
    company = api.post("/api/v1/companies", json=initech).json["data"]
    person = factories.contact(
        api,
        email=f"ada{n}@example.com",
        phone=f"+1650555{n:04d}",
        first_name="Ada",
        last_name="Lovelace",
        tags=["vip"],
        company_id=company["id"],
        city="London",
        timezone="Europe/London",
        attributes={"plan": "pro"},
    )
    window = {"days": ["mon", "tue"], "start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}
    sequence = factories.active_sequence(
        api, name=f"Welcome {n}", from_email="hi@example.com", send_window=window
    )
    step = api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["steps"][0]
    enroll = {"contact_id": person["id"], "enrollment_data": {"n": n}}
    enrollment = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json=enroll).json["data"]
    queue = api.post("/api/v1/event-queues", json={"name": f"Follow-ups {n}"}).json["data"]
    tag_step = {"action_type": "add_tag", "action_config": {"tag": "followed"}}
    queue_step = api.post(f"/api/v1/event-queues/{queue['id']}/steps", json=tag_step).json["data"]
    bulk = {"contact_ids": [person["id"]]}
    enrolled = api.post(f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json=bulk).json["data"]
    assert (enrollment["status"], enrolled["enrolled"]) == ("active", 1), (enrollment, enrolled)
    delivery = factories.delivery(services, factories.org_id(api), status="failed", hook="open")
    hook = {"target_url": "http://127.0.0.1:9/zap", "event": "enrollment.created"}
    subscription = api.post("/api/v1/hooks/subscriptions", json=hook).json["data"]
    return {
        "company_id": company["id"],
        "contact_id": person["id"],
        "customer_id": person["id"],
        "contactId": person["id"],
        "tag": "vip",
        "sequence_id": sequence["id"],
        "step_id": step["id"],
        "enrollment_id": enrollment["id"],
        "queue_id": queue["id"],
        "queue_step_id": queue_step["id"],
        "delivery_id": delivery,
        "subscription_id": subscription["id"],
        "filename": "swagger-ui.css",
    }


@pytest.fixture(scope="module", params=BACKENDS)
def live(request, tmp_path_factory) -> Iterator[Live]:
    """The app on a threaded HTTP server on loopback, over a fresh database, with the hooks above."""
    tmp = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    database = fresh_database(request, request.param, tmp)
    mappings = tmp / "mappings"
    mappings.mkdir()
    (mappings / "hooks.yaml").write_text(textwrap.dedent(HOOKS))
    # Thousands of requests: log only what goes wrong, and let SQLite sync less (no power cuts here).
    # Private targets allowed: a fuzzed REST hook target_url is then not looked up in the DNS.
    app = create_app(
        {
            "DATABASE_URL": next(database),
            "MAPPINGS_DIR": str(mappings),
            "TESTING": True,
            "LOG_LEVEL": "WARNING",
            "SQLITE_SYNCHRONOUS": "NORMAL",
            "ALLOW_PRIVATE_TARGETS": True,
        }
    )
    services = app.extensions["seqbridge"]
    key = services.keys.create_key("acme", ["*"], "schemathesis").raw_key
    api = Api(app.test_client(), key)
    assert {h["name"]: h["status"] for h in api.get("/api/v1/mappings").json["data"]} == dict.fromkeys(
        HOOK_NAMES, "ok"
    )
    http = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield Live(f"http://127.0.0.1:{http.server_port}", {"Authorization": f"Bearer {key}"}, api, services)
    http.shutdown()
    services.db.dispose()
    database.close()


def aim_at_real_objects(case, live: Live) -> None:
    """For about half of the cases, swap ids for the ones of real objects (see the docstring)."""
    case_json = json.dumps([case.path_parameters, case.body], sort_keys=True, default=str)
    fingerprint = zlib.crc32(case_json.encode())
    if fingerprint % 2:
        return
    path = case.path_parameters or {}
    body = case.body if isinstance(case.body, dict) else {}
    fields = [name for name, value in body.items() if isinstance(value, str)]
    if not any(name in REAL_NAMES for name in [*path, *fields]):
        return
    hook = HOOK_NAMES[fingerprint // 2 % len(HOOK_NAMES)]
    world = {**live.world(case.operation.label), "hook_name": hook, "hook": hook}
    for name in path:
        real = f"queue_{name}" if name == "step_id" and "/event-queues/" in case.path else name
        if real in world:
            path[name] = world[real]
    for name in fields:
        if name in world:
            body[name] = world[name]


@schema.parametrize()
def test_every_operation_answers_as_the_contract_says(case, live):
    aim_at_real_objects(case, live)
    # A 303 is checked as answered (its Location is a page elsewhere, not followed).
    case.call_and_validate(
        base_url=live.url, headers=live.headers, session=live.session, checks=CHECKS, allow_redirects=False
    )
