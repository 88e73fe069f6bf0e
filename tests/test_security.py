"""Security: scopes (driven by the spec), authentication failures, isolation between
organizations, and API keys never stored in the clear."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, inspect, select, text

from seqbridge.config import load_settings
from seqbridge.services.keys import ALL_SCOPES, SCOPES, scope_granted
from seqbridge.web.contract import Contract
from tests import factories
from tests.conftest import Api

# The spec, read at collection time so every operation becomes its own test id. Each test then
# takes the Operation from the running app's contract (and a test checks both agree).
_SPEC = Contract.load(load_settings()["OPENAPI_PATH"])
SCOPED_OPERATIONS = sorted(
    (key for key, op in _SPEC.operations.items() if op.scope),
    key=lambda key: _SPEC.operations[key].operation_id,
)
PROTECTED_OPERATIONS = sorted(
    (key for key, op in _SPEC.operations.items() if not op.public),
    key=lambda key: _SPEC.operations[key].operation_id,
)
SCOPED_READS = [key for key in SCOPED_OPERATIONS if key[1] == "GET"]


def _op_id(key: tuple[str, str]) -> str:
    return _SPEC.operations[key].operation_id


_serial = itertools.count(1)
#: The hook the mapping operations act on (written to the mappings directory when they need it).
FIXTURE_HOOK = "hooks:\n  fixture-hook:\n    organization: acme\n    source: {connector: generic, public: true}\n    rules: []\n"


@dataclass(frozen=True)
class Valid:
    """A request that succeeds for a key with enough scope: the documented status, and a body."""

    status: int
    #: (serial number, the fresh objects of this request) -> JSON body
    body: Callable[[int, dict[str, str]], Any] | None = None


_CONTACT_OPS = {
    "list{}s": Valid(200),
    "create{}": Valid(201, lambda n, p: {"email": f"new-{n}@example.com", "first_name": "Ada"}),
    "get{}": Valid(200),
    "update{}": Valid(200, lambda n, p: {"first_name": f"Grace {n}"}),
    "delete{}": Valid(204),
    "add{}Tags": Valid(200, lambda n, p: {"tags": [f"added-{n}"]}),
    "remove{}Tag": Valid(200),
}

#: Valid requests per operationId. Operations missing here still get the 403 check and a
#: "not 401/403" check with an empty request.
VALID_REQUESTS: dict[str, Valid] = {
    **{template.format("Contact"): valid for template, valid in _CONTACT_OPS.items()},
    **{template.format("Customer"): valid for template, valid in _CONTACT_OPS.items()},
    "listCompanies": Valid(200),
    "createCompany": Valid(201, lambda n, p: {"name": f"Company {n}"}),
    "getCompany": Valid(200),
    "updateCompany": Valid(200, lambda n, p: {"industry": f"industry {n}"}),
    "deleteCompany": Valid(204),
    "listAuditEvents": Valid(200),
    "getCurrentKey": Valid(200),
    "listOutbox": Valid(200),
    "getMetrics": Valid(200),
    # Webhook deliveries and mappings.
    "listDeliveries": Valid(200),
    "getDelivery": Valid(200),
    "replayDelivery": Valid(202),
    "startReplayJob": Valid(202, lambda n, p: {"status": ["dead"]}),
    "listReplayJobs": Valid(200),
    "getReplayJob": Valid(200),
    "cancelReplayJob": Valid(200),
    "listMappings": Valid(200),
    # A public address literal: the SSRF guard needs no DNS and nothing is ever sent in these tests.
    "createHookSubscription": Valid(
        201, lambda n, p: {"target_url": f"https://93.184.215.14/hook/{n}", "event": "enrollment.created"}
    ),
    "listHookSubscriptions": Valid(200),
    "getHookSubscription": Valid(200),
    "deleteHookSubscription": Valid(204),
    "listHookSamples": Valid(200),
    "dryRunMapping": Valid(200, lambda n, p: {"hook": "fixture-hook", "body": {"n": n}}),
    "diffMapping": Valid(200, lambda n, p: {"mapping": FIXTURE_HOOK, "hook": "fixture-hook"}),
    # The sequences and bot dialects.
    "listSequences": Valid(200),
    "createSequence": Valid(201, lambda n, p: {"name": f"Sequence {n}"}),
    "getSequence": Valid(200),
    "updateSequence": Valid(200, lambda n, p: {"name": f"Renamed {n}"}),
    "deleteSequence": Valid(204),
    "addSequenceStep": Valid(201, lambda n, p: {"subject": f"S{n}", "body": "b"}),
    "updateSequenceStep": Valid(200, lambda n, p: {"delay_days": 1}),
    "deleteSequenceStep": Valid(204),
    "enrollContact": Valid(201, lambda n, p: {"contact_id": p["spare_contact_id"]}),
    "enrollContactsBulk": Valid(200, lambda n, p: {"customer_ids": [p["spare_contact_id"]]}),
    "listSequenceEnrollments": Valid(200),
    "getSequenceEnrollment": Valid(200),
    "updateSequenceEnrollment": Valid(200, lambda n, p: {"status": "paused"}),
    "exitSequenceEnrollment": Valid(200),
    "unenrollContact": Valid(200, lambda n, p: {"contact_id": p["contact_id"]}),
    "unenrollContactEverywhere": Valid(200, lambda n, p: {"reason": "replied"}),
    # The event-queue dialect.
    "listEventQueues": Valid(200),
    "createEventQueue": Valid(201, lambda n, p: {"name": f"Queue {n}"}),
    "getEventQueue": Valid(200),
    "updateEventQueue": Valid(200, lambda n, p: {"name": f"Renamed {n}"}),
    "deleteEventQueue": Valid(204),
    "addEventQueueStep": Valid(
        201, lambda n, p: {"action_type": "add_tag", "action_config": {"tag": f"t{n}"}}
    ),
    "updateEventQueueStep": Valid(200, lambda n, p: {"delay_days": 2}),
    "deleteEventQueueStep": Valid(204),
    "listEventQueueTasks": Valid(200),
    "bulkEnrollEventQueue": Valid(200, lambda n, p: {"contact_ids": [p["spare_contact_id"]]}),
    "unenrollEventQueue": Valid(200, lambda n, p: {"contact_id": p["contact_id"]}),
}


def _call(client, method: str, path: str, key: str | None = None, body: Any = None, headers=None):
    headers = dict(headers or {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    kwargs = {} if body is None else {"json": body}
    return client.open(path, method=method, headers=headers, **kwargs)


def _fresh_path_params(api: Api, path: str = "") -> dict[str, str]:
    """New acme objects for one request (a request may delete them). Sequence and queue objects
    (with steps, and the contact enrolled) are made only for the routes that need them."""
    n = next(_serial)
    company = api.post("/api/v1/companies", json={"name": f"Fixture Co {n}"})
    assert company.status_code == 201, company.get_json()
    contact = api.post("/api/v1/contacts", json={"email": f"fixture-{n}@example.com", "tags": ["vip"]})
    assert contact.status_code == 201, contact.get_json()
    contact_id = contact.get_json()["data"]["id"]
    params = {
        "contact_id": contact_id,
        "customer_id": contact_id,
        "company_id": company.get_json()["data"]["id"],
        "tag": "vip",
    }
    if "/mappings" in path:
        application = api.client.application
        hook_file = Path(application.config["MAPPINGS_DIR"]) / "fixture.yaml"
        if not hook_file.exists():
            hook_file.write_text(FIXTURE_HOOK)
            application.extensions["seqbridge"].inbox.registry.reload()
    if "/deliveries" in path:
        services = api.client.application.extensions["seqbridge"]
        params["delivery_id"] = factories.delivery(
            services, api.get("/api/v1/me").get_json()["data"]["organization_id"]
        )
    if "/deliveries/replay/" in path:
        started = api.post("/api/v1/deliveries/replay", json={})
        assert started.status_code == 202, started.get_json()
        params["job_id"] = started.get_json()["data"]["id"]
    if "/hooks/subscriptions/" in path:
        subscribed = api.post(
            "/api/v1/hooks/subscriptions",
            json={"target_url": f"https://93.184.215.14/fixture/{n}", "event": "delivery.dead"},
        )
        assert subscribed.status_code == 201, subscribed.get_json()
        params["subscription_id"] = subscribed.get_json()["data"]["id"]
    if "/hooks/samples/" in path:
        params["event"] = "enrollment.exited"
    if "/sequences" in path or "/event-queues" in path:
        spare = api.post("/api/v1/contacts", json={"email": f"spare-{n}@example.com"}).get_json()["data"]
        params["spare_contact_id"] = spare["id"]
    if "/sequences" in path:
        sequence = api.post("/api/v1/sequences", json={"name": f"Fixture sequence {n}"}).get_json()["data"]
        steps = [
            api.post(
                f"/api/v1/sequences/{sequence['id']}/steps", json={"subject": f"s{i}", "body": "b"}
            ).get_json()["data"]
            for i in range(2)
        ]
        assert api.patch(f"/api/v1/sequences/{sequence['id']}", json={"status": "active"}).status_code == 200
        enrolled = api.post(f"/api/v1/sequences/{sequence['id']}/enroll", json={"contact_id": contact_id})
        assert enrolled.status_code == 201, enrolled.get_json()
        params.update(
            sequence_id=sequence["id"],
            step_id=steps[0]["id"],
            enrollment_id=enrolled.get_json()["data"]["id"],
        )
    if "/event-queues" in path:
        queue = api.post("/api/v1/event-queues", json={"name": f"Fixture queue {n}"}).get_json()["data"]
        steps = [
            api.post(
                f"/api/v1/event-queues/{queue['id']}/steps",
                json={"action_type": "add_tag", "action_config": {"tag": f"q{i}"}},
            ).get_json()["data"]
            for i in range(2)
        ]
        enrolled = api.post(
            f"/api/v1/event-queues/{queue['id']}/bulk-enroll", json={"contact_ids": [contact_id]}
        )
        assert enrolled.get_json()["data"]["enrolled"] == 1, enrolled.get_json()
        params.update(queue_id=queue["id"], step_id=steps[0]["id"])
    return params


def _url(path: str, params: dict[str, str]) -> str:
    # An unknown path parameter gets an id that exists nowhere; the request is still checked.
    return re.sub(r"\{([^}]+)\}", lambda m: params.get(m.group(1), str(uuid.uuid4())), path)


def _audit_count(services) -> int:
    with services.db.engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM audit_events")).scalar_one()


def _request(client, api, operation, key):
    """Send the operation's valid request (fresh objects, fresh body) with ``key``."""
    valid = VALID_REQUESTS.get(operation.operation_id)
    params = _fresh_path_params(api, operation.path)
    body = valid.body(next(_serial), params) if valid and valid.body else None
    return _call(client, operation.method, _url(operation.path, params), key, body)


def _assert_allowed(response, operation) -> None:
    valid = VALID_REQUESTS.get(operation.operation_id)
    assert response.status_code not in (401, 403), response.get_json()
    if valid is None:
        return
    assert response.status_code == valid.status, response.get_data(as_text=True)
    if valid.status == 204:
        assert response.get_data() == b""
    elif response.is_json:
        assert "data" in response.get_json()
    else:  # /metrics: Prometheus text
        assert response.get_data(as_text=True).startswith("# HELP")


# The scope matrix, from the spec ----------------------------------------------------------------


def test_matrix_parameters_match_the_running_apps_contract(app):
    operations = app.extensions["seqbridge.contract"].operations
    assert {k for k, op in operations.items() if op.scope} == set(SCOPED_OPERATIONS)
    assert {k for k, op in operations.items() if not op.public} == set(PROTECTED_OPERATIONS)
    assert len(SCOPED_OPERATIONS) >= 20  # contacts, customers, companies and the audit log
    for key in SCOPED_OPERATIONS:
        assert operations[key].scope in SCOPES, key


def test_valid_request_table_covers_exactly_the_real_operations(app):
    """Stale entries fail, and so does a new operation without a valid request: check (b) must
    see the documented success status of every route."""
    operation_ids = {op.operation_id for op in app.extensions["seqbridge.contract"].operations.values()}
    assert set(VALID_REQUESTS) <= operation_ids, set(VALID_REQUESTS) - operation_ids
    missing = sorted(_op_id(k) for k in PROTECTED_OPERATIONS if _op_id(k) not in VALID_REQUESTS)
    assert missing == [], f"add a valid request to VALID_REQUESTS for: {', '.join(missing)}"


@pytest.mark.parametrize("spec_key", SCOPED_OPERATIONS, ids=_op_id)
def test_scope_matrix(spec_key, app, client, api, make_key, services):
    operation = app.extensions["seqbridge.contract"].operations[spec_key]
    scope = operation.scope
    area, _, level = scope.partition(":")

    # (a) Every other scope (without the write sibling of a read scope) is refused, exactly.
    others = [s for s in SCOPES if s not in (scope, f"{area}:write")]
    assert others, "a key needs at least one scope"
    denied = make_key("acme", others, "everything-else")
    params = _fresh_path_params(api, operation.path)
    url = _url(operation.path, params)
    valid = VALID_REQUESTS.get(operation.operation_id)
    body = valid.body(next(_serial), params) if valid and valid.body else None
    before = _audit_count(services)
    response = _call(client, operation.method, url, denied, body)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json() == {
        "error": {
            "code": f"{area}_{level}_denied",
            "message": f"This API key lacks the {scope} scope.",
            "details": {"required_scope": scope},
        }
    }
    assert response.headers.get("X-Request-Id")
    assert _audit_count(services) == before, "a refused request must change nothing"

    # (b) Exactly the required scope is enough, and the real view answers.
    _assert_allowed(_request(client, api, operation, make_key("acme", [scope], "exact")), operation)

    # (c) X:write implies X:read.
    if level == "read" and f"{area}:write" in SCOPES:
        write_key = make_key("acme", [f"{area}:write"], "write-sibling")
        _assert_allowed(_request(client, api, operation, write_key), operation)

    # (d) * grants everything.
    _assert_allowed(_request(client, api, operation, make_key("acme", [ALL_SCOPES], "star")), operation)


#: Operations that name one of the organization's objects in their path. (The samples route's
#: path names an event type, not an object: its isolation is tested with REST hooks.)
OBJECT_OPERATIONS = [
    key
    for key in SCOPED_OPERATIONS
    if "{" in _SPEC.operations[key].path and "{event}" not in _SPEC.operations[key].path
]


@pytest.mark.parametrize("spec_key", OBJECT_OPERATIONS, ids=_op_id)
def test_another_organization_with_the_right_scope_gets_404_for_every_object_route(
    spec_key, app, client, api, make_key, services
):
    """Every route x the other organization, holding exactly the scope the route needs (and,
    separately, every scope): acme's objects do not exist for it, and nothing changes."""
    operation = app.extensions["seqbridge.contract"].operations[spec_key]
    params = _fresh_path_params(api, operation.path)
    url = _url(operation.path, params)
    valid = VALID_REQUESTS.get(operation.operation_id)
    body = valid.body(next(_serial), params) if valid and valid.body else None
    keys = (make_key("globex", [operation.scope], "exact"), make_key("globex", [ALL_SCOPES], "star"))
    before = _audit_count(services)
    for key in keys:
        response = _call(client, operation.method, url, key, body)
        assert response.status_code == 404, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert error["code"].endswith("not_found") and error["message"]
    assert _audit_count(services) == before, "another organization's request must change nothing"
    # The owner still gets the documented answer on the same objects.
    _assert_allowed(_request(client, api, operation, api.key), operation)


@pytest.mark.parametrize("spec_key", SCOPED_OPERATIONS, ids=_op_id)
def test_a_write_scope_of_another_area_never_satisfies(spec_key, app, client, api, make_key):
    operation = app.extensions["seqbridge.contract"].operations[spec_key]
    area = operation.scope.partition(":")[0]
    foreign = [s for s in SCOPES if not s.startswith(f"{area}:")]
    response = _request(client, api, operation, make_key("acme", foreign, "foreign"))
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"required_scope": operation.scope}


@pytest.mark.parametrize("spec_key", PROTECTED_OPERATIONS, ids=_op_id)
def test_every_protected_operation_needs_a_key(spec_key, app, client, api):
    operation = app.extensions["seqbridge.contract"].operations[spec_key]
    url = _url(operation.path, _fresh_path_params(api, operation.path))
    response = _call(client, operation.method, url, None, {"email": "x@example.com"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="seqbridge"'
    assert response.get_json() == {
        "error": {
            "code": "unauthorized",
            "message": "A valid API key is required: send Authorization: Bearer <key>.",
        }
    }


@pytest.mark.parametrize("scope", SCOPES)
def test_me_answers_any_valid_key_with_its_own_scopes(scope, client, make_key, services):
    key = make_key("acme", [scope], f"only-{scope}")
    response = _call(client, "GET", "/api/v1/me", key)
    assert response.status_code == 200
    data = response.get_json()["data"]
    assert data["scopes"] == [scope]
    acme = [k for k in services.keys.list_keys("acme") if k["name"] == f"only-{scope}"]
    assert data == {
        "key_id": acme[0]["id"],
        "key_name": f"only-{scope}",
        "organization_id": acme[0]["org_id"],
        "organization_name": "acme",
        "scopes": [scope],
    }


@pytest.mark.parametrize("spec_key", SCOPED_READS, ids=_op_id)
def test_head_is_authenticated_and_scoped_like_get(spec_key, app, client, api, make_key):
    operation = app.extensions["seqbridge.contract"].operations[spec_key]
    url = _url(operation.path, _fresh_path_params(api, operation.path))
    unauthenticated = client.head(url)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"] == 'Bearer realm="seqbridge"'
    assert unauthenticated.get_data() == b""
    others = [s for s in SCOPES if s.partition(":")[0] != operation.scope.partition(":")[0]]
    assert _call(client, "HEAD", url, make_key("acme", others, "others")).status_code == 403
    allowed = _call(client, "HEAD", url, make_key("acme", [operation.scope], "exact"))
    assert allowed.status_code not in (401, 403)
    if operation.operation_id in VALID_REQUESTS:
        assert allowed.status_code == 200
    assert allowed.get_data() == b""


def test_public_operations_need_no_key(app, client):
    operations = app.extensions["seqbridge.contract"].operations
    public = [op for op in operations.values() if op.public]
    assert {op.operation_id for op in public} >= {"getHealth", "getOpenApiSpec", "getDocsPage"}
    for op in public:
        response = _call(client, op.method, _url(op.path, {"filename": "swagger-ui.css"}))
        assert response.status_code not in (401, 403), op.operation_id
        assert "WWW-Authenticate" not in response.headers


# scope_granted, unit level ----------------------------------------------------------------------


def _expected_grant(granted: frozenset[str], required: str) -> bool:
    """The documented rule, written out independently."""
    if ALL_SCOPES in granted or required in granted:
        return True
    area, level = required.split(":")
    return level == "read" and f"{area}:write" in granted


def test_the_scope_list_is_the_documented_one():
    areas = ("sequences", "automations", "contacts", "hooks")
    assert set(SCOPES) == {f"{a}:{lvl}" for a in areas for lvl in ("read", "write")} | {"audit:read"}
    assert len(SCOPES) == len(set(SCOPES)) == 9
    assert "audit:write" not in SCOPES
    assert ALL_SCOPES not in SCOPES


_GRANTED_SETS = [frozenset(), frozenset({ALL_SCOPES}), *(frozenset({s}) for s in SCOPES)]


@pytest.mark.parametrize("required", SCOPES)
@pytest.mark.parametrize("granted", _GRANTED_SETS, ids=lambda g: "+".join(sorted(g)) or "none")
def test_scope_granted_single(granted, required):
    area, level = required.split(":")
    expected = (
        ALL_SCOPES in granted or required in granted or (level == "read" and granted == {f"{area}:write"})
    )
    assert scope_granted(granted, required) is expected
    assert scope_granted(set(granted), required) is expected
    # Spelled out: a single real scope grants only itself and, if it is a write, its own read.
    if len(granted) == 1 and ALL_SCOPES not in granted:
        (g,) = granted
        if g.split(":")[0] != area:
            assert expected is False, "never across areas"
        if g.endswith(":read") and level == "write":
            assert expected is False, "read never implies write"


def test_scope_granted_every_subset_of_scopes():
    checked = 0
    for size in range(len(SCOPES) + 1):
        for combo in itertools.combinations(SCOPES, size):
            granted = frozenset(combo)
            for required in SCOPES:
                assert scope_granted(granted, required) is _expected_grant(granted, required), (
                    granted,
                    required,
                )
                assert scope_granted(granted | {ALL_SCOPES}, required) is True
                checked += 1
    assert checked == 2 ** len(SCOPES) * len(SCOPES)


def test_scope_granted_edge_cases():
    assert scope_granted(frozenset({"contacts:write"}), "contacts:read")
    assert not scope_granted(frozenset({"contacts:read"}), "contacts:write")
    assert not scope_granted(frozenset({"contacts:write"}), "sequences:read")
    assert not scope_granted(frozenset({"hooks:write"}), "audit:read")
    assert not scope_granted(frozenset({"audit:read"}), "contacts:read")
    assert not scope_granted(frozenset(), "audit:read")
    # Look-alikes are not scopes.
    assert not scope_granted(frozenset({"contacts"}), "contacts:read")
    assert not scope_granted(frozenset({"contacts:*"}), "contacts:read")
    assert not scope_granted(frozenset({"CONTACTS:READ"}), "contacts:read")


@pytest.mark.parametrize("bad", [["audit:write"], ["contacts"], ["contacts:admin"], []])
def test_keys_with_unknown_or_no_scopes_cannot_be_created(bad, services):
    from seqbridge.errors import BadRequest

    with pytest.raises(BadRequest) as raised:
        services.keys.create_key("acme", bad)
    assert raised.value.code == ("missing_scope" if not bad else "unknown_scope")


# 401: exact bodies ------------------------------------------------------------------------------

_MISSING_KEY = {
    "error": {
        "code": "unauthorized",
        "message": "A valid API key is required: send Authorization: Bearer <key>.",
    }
}
_NOT_A_KEY = {"error": {"code": "invalid_api_key", "message": "The API key is not valid."}}
_UNKNOWN_KEY = {
    "error": {"code": "invalid_api_key", "message": "The API key is not valid or has been revoked."}
}


def _revoked_key(make_key, services) -> str:
    raw = make_key("acme", ["*"], "to-revoke")
    (key,) = [k for k in services.keys.list_keys("acme") if k["name"] == "to-revoke"]
    assert raw.startswith(key["prefix"])
    services.keys.revoke_key(key["id"])
    return raw


_AUTH_CASES: dict[str, tuple[Callable[..., dict[str, str]], dict]] = {
    "basic-scheme": (lambda mk, sv: {"Authorization": "Basic YWRtaW46YWRtaW4="}, _MISSING_KEY),
    "bearer-without-token": (lambda mk, sv: {"Authorization": "Bearer "}, _MISSING_KEY),
    "empty-header": (lambda mk, sv: {"Authorization": ""}, _MISSING_KEY),
    "raw-key-without-scheme": (lambda mk, sv: {"Authorization": mk("acme", ["*"], "raw")}, _MISSING_KEY),
    "garbage-key": (lambda mk, sv: {"Authorization": "Bearer not-a-key"}, _NOT_A_KEY),
    "overlong-key": (lambda mk, sv: {"Authorization": "Bearer rk_live_" + "a" * 300}, _NOT_A_KEY),
    "unknown-key": (
        lambda mk, sv: {"Authorization": "Bearer rk_live_" + secrets.token_urlsafe(32)},
        _UNKNOWN_KEY,
    ),
    "revoked-key": (lambda mk, sv: {"Authorization": f"Bearer {_revoked_key(mk, sv)}"}, _UNKNOWN_KEY),
}


def test_401_without_authorization_header(client):
    response = client.get("/api/v1/contacts")
    assert response.status_code == 401
    assert response.get_json() == _MISSING_KEY
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="seqbridge"'
    assert response.mimetype == "application/json"
    assert response.headers.get("X-Request-Id")


@pytest.mark.parametrize("case", list(_AUTH_CASES))
def test_401_bodies(case, client, make_key, services):
    make_headers, expected = _AUTH_CASES[case]
    headers = make_headers(make_key, services)
    for path in ("/api/v1/contacts", "/api/v1/me"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (case, path)
        assert response.get_json() == expected, (case, path)
        assert response.mimetype == "application/json"
        assert response.headers.get("X-Request-Id")


@pytest.mark.parametrize("case", list(_AUTH_CASES))
def test_every_401_carries_a_bearer_challenge(case, client, make_key, services):
    make_headers, _ = _AUTH_CASES[case]
    response = client.get("/api/v1/contacts", headers=make_headers(make_key, services))
    assert response.status_code == 401
    challenge = response.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="seqbridge"')
    if response.get_json()["error"]["code"] == "invalid_api_key":
        assert 'error="invalid_token"' in challenge


def test_revocation_takes_effect_immediately(client, make_key, services):
    raw = make_key("acme", ["*"], "short-lived")
    assert _call(client, "GET", "/api/v1/me", raw).status_code == 200
    (key,) = [k for k in services.keys.list_keys("acme") if k["name"] == "short-lived"]
    services.keys.revoke_key(key["id"])
    response = _call(client, "GET", "/api/v1/me", raw)
    assert response.status_code == 401
    assert response.get_json() == _UNKNOWN_KEY
    # Other keys of the organization are untouched.
    assert _call(client, "GET", "/api/v1/me", make_key("acme", ["*"], "other")).status_code == 200


def test_bearer_scheme_is_case_insensitive_and_whitespace_tolerant(client, make_key):
    raw = make_key("acme", ["contacts:read"])
    for header in (f"bearer {raw}", f"BEARER {raw}", f"Bearer   {raw}  "):
        response = client.get("/api/v1/contacts", headers={"Authorization": header})
        assert response.status_code == 200, header


# Isolation between organizations -----------------------------------------------------------------


@pytest.fixture
def acme(api) -> dict[str, Any]:
    """Acme's company, and a contact in it with tags; plus acme's audit log as it stands."""
    company = api.post("/api/v1/companies", json={"name": "Acme Corp", "industry": "anvils"})
    assert company.status_code == 201
    company = company.get_json()["data"]
    contact = api.post(
        "/api/v1/contacts",
        json={
            "email": "Ada@Acme.example",
            "first_name": "Ada",
            "tags": ["vip", "acme-secret-tag"],
            "company_id": company["id"],
            "attributes": {"plan": "gold"},
        },
    )
    assert contact.status_code == 201
    contact = contact.get_json()["data"]
    return {"company": company, "contact": contact}


def _acme_state(api: Api, acme: dict[str, Any]) -> dict[str, Any]:
    return {
        "contact": api.get(f"/api/v1/contacts/{acme['contact']['id']}").get_json(),
        "company": api.get(f"/api/v1/companies/{acme['company']['id']}").get_json(),
        "audit": api.get("/api/v1/audit-events?limit=200").get_json(),
    }


_FOREIGN_ATTEMPTS = [
    ("GET", "/api/v1/contacts/{contact}", None),
    ("PATCH", "/api/v1/contacts/{contact}", {"first_name": "Mallory"}),
    ("POST", "/api/v1/contacts/{contact}/tags", {"tags": ["pwned"]}),
    ("DELETE", "/api/v1/contacts/{contact}/tags/vip", None),
    ("DELETE", "/api/v1/contacts/{contact}", None),
    ("GET", "/api/v1/customers/{contact}", None),
    ("PATCH", "/api/v1/customers/{contact}", {"email": "mallory@globex.example"}),
    ("POST", "/api/v1/customers/{contact}/tags", {"tags": ["pwned"]}),
    ("DELETE", "/api/v1/customers/{contact}/tags/vip", None),
    ("DELETE", "/api/v1/customers/{contact}", None),
    ("GET", "/api/v1/companies/{company}", None),
    ("PATCH", "/api/v1/companies/{company}", {"name": "Mallory Inc"}),
    ("DELETE", "/api/v1/companies/{company}", None),
]


def _comparable(response, object_id: str) -> tuple:
    headers = sorted((k, v) for k, v in response.headers.items() if k != "X-Request-Id")
    return response.status_code, headers, response.get_data(as_text=True).replace(object_id, "<ID>")


@pytest.mark.parametrize(
    "method,template,body", _FOREIGN_ATTEMPTS, ids=[f"{m} {t}" for m, t, _ in _FOREIGN_ATTEMPTS]
)
def test_another_organizations_object_is_indistinguishable_from_a_missing_one(
    method, template, body, api, other_api, acme
):
    before = _acme_state(api, acme)
    real_id = acme["contact"]["id"] if "{contact}" in template else acme["company"]["id"]
    missing_id = str(uuid.uuid4())
    send = getattr(other_api, method.lower())
    kwargs = {} if body is None else {"json": body}

    foreign = send(template.format(contact=real_id, company=real_id), **kwargs)
    missing = send(template.format(contact=missing_id, company=missing_id), **kwargs)

    assert foreign.status_code == 404, foreign.get_data(as_text=True)
    assert foreign.get_json()["error"]["code"] == "not_found"
    assert real_id in foreign.get_json()["error"]["message"]
    assert _comparable(foreign, real_id) == _comparable(missing, missing_id)
    assert set(foreign.get_json()["error"]) == {"code", "message"}
    # Acme sees exactly what it saw before, down to updated_at and its audit log.
    assert _acme_state(api, acme) == before


def test_lists_never_show_another_organizations_objects(api, other_api, acme):
    own_contact = other_api.post("/api/v1/contacts", json={"email": "gail@globex.example", "tags": ["vip"]})
    own_company = other_api.post("/api/v1/companies", json={"name": "Globex"})
    assert own_contact.status_code == own_company.status_code == 201
    own_ids = {own_contact.get_json()["data"]["id"], own_company.get_json()["data"]["id"]}
    acme_org = api.get("/api/v1/me").get_json()["data"]["organization_id"]
    acme_ids = {acme["contact"]["id"], acme["company"]["id"], acme_org}
    acme_markers = [*acme_ids, "Ada@Acme.example".lower(), "Acme Corp", "acme-secret-tag", "anvils"]

    for path in ("/api/v1/contacts", "/api/v1/customers", "/api/v1/companies"):
        response = other_api.get(f"{path}?limit=100")
        assert response.status_code == 200
        body = response.get_json()
        ids = {item["id"] for item in body["data"]}
        assert ids & acme_ids == set(), path
        assert ids & own_ids, f"{path} should list globex's own objects"
        assert body["meta"]["total"] == len(body["data"]) == 1
        dumped = json.dumps(body).lower()
        assert not [m for m in acme_markers if m.lower() in dumped], path

    events = other_api.get("/api/v1/audit-events?limit=200")
    assert events.status_code == 200
    data = events.get_json()["data"]
    assert data, "globex has its own audit events"
    assert {e["subject"]["id"] for e in data} & acme_ids == set()
    dumped = json.dumps(data).lower()
    assert not [m for m in acme_markers if m.lower() in dumped]
    globex_org = other_api.get("/api/v1/me").get_json()["data"]["organization_id"]
    assert globex_org != acme_org
    # Acme's own log does show its objects (the check above is not vacuous).
    acme_events = api.get("/api/v1/audit-events?limit=200").get_json()["data"]
    assert acme["contact"]["id"] in {e["subject"]["id"] for e in acme_events}


@pytest.mark.parametrize(
    "query",
    [
        "email=ada@acme.example",
        "email=Ada@Acme.example",
        "tag=acme-secret-tag",
        "tag=vip",
        "company_id={company}",
        "first_name=Ada",
    ],
)
def test_filters_never_reach_another_organization(query, api, other_api, acme):
    query = query.format(company=acme["company"]["id"])
    for path in ("/api/v1/contacts", "/api/v1/customers"):
        response = other_api.get(f"{path}?{query}")
        assert response.status_code == 200
        assert response.get_json() == {
            "data": [],
            "meta": {"total": 0, "limit": 50, "offset": 0, "next_offset": None},
        }
        # The same filter finds acme's contact for acme.
        assert api.get(f"{path}?{query}").get_json()["meta"]["total"] == 1
    companies = other_api.get("/api/v1/companies?name=Acme%20Corp").get_json()
    assert companies["data"] == [] and companies["meta"]["total"] == 0


def test_audit_filters_never_reach_another_organization(api, other_api, acme):
    for query in (f"subject_id={acme['contact']['id']}", "tag=api:contact:created", "subject_type=company"):
        response = other_api.get(f"/api/v1/audit-events?{query}")
        assert response.status_code == 200
        assert response.get_json()["data"] == [], query
        assert api.get(f"/api/v1/audit-events?{query}").get_json()["data"], query


def test_uniqueness_and_references_do_not_leak_across_organizations(api, other_api, acme):
    # The same email in another organization is not a conflict (a 409 would reveal acme's contact).
    created = other_api.post("/api/v1/contacts", json={"email": "ada@acme.example"})
    assert created.status_code == 201
    assert created.get_json()["data"]["id"] != acme["contact"]["id"]

    # Linking to acme's company reads exactly like linking to a company that does not exist.
    missing_id = str(uuid.uuid4())
    for send in (
        lambda cid: other_api.post("/api/v1/contacts", json={"email": "x@globex.example", "company_id": cid}),
        lambda cid: other_api.patch(
            f"/api/v1/contacts/{created.get_json()['data']['id']}", json={"company_id": cid}
        ),
    ):
        foreign, missing = send(acme["company"]["id"]), send(missing_id)
        assert foreign.status_code == 400
        assert foreign.get_json()["error"]["code"] == "company_not_found"
        assert _comparable(foreign, acme["company"]["id"]) == _comparable(missing, missing_id)

    # Acme's contact still has its company; nothing of globex's points at it.
    assert (
        api.get(f"/api/v1/contacts/{acme['contact']['id']}").get_json()["data"]["company_id"]
        == acme["company"]["id"]
    )
    globex_contacts = other_api.get("/api/v1/contacts").get_json()["data"]
    assert all(c["company_id"] is None for c in globex_contacts)


def test_a_key_only_ever_acts_for_its_own_organization(api, other_api, make_key):
    acme_me = api.get("/api/v1/me").get_json()["data"]
    globex_me = other_api.get("/api/v1/me").get_json()["data"]
    assert acme_me["organization_id"] != globex_me["organization_id"]
    created = other_api.post("/api/v1/contacts", json={"email": "z@globex.example"}).get_json()["data"]
    assert api.get(f"/api/v1/contacts/{created['id']}").status_code == 404
    # A second acme key sees acme's objects, not globex's.
    reader = api.with_key(make_key("acme", ["contacts:read"], "reader"))
    assert reader.get("/api/v1/contacts").get_json()["meta"]["total"] == 0


# Keys at rest ------------------------------------------------------------------------------------


def _dump_database(services) -> tuple[list[str], str]:
    engine = services.db.engine
    tables = inspect(engine).get_table_names()
    chunks = []
    with engine.connect() as conn:
        for name in tables:
            reflected = Table(name, MetaData(), autoload_with=conn)
            for row in conn.execute(select(reflected)):
                chunks.append(f"{name}: " + " | ".join(repr(v) + " " + str(v) for v in row))
    return tables, "\n".join(chunks)


def test_api_keys_are_stored_only_as_sha256(api, other_api, client, make_key, services):
    raw_keys = [api.key, other_api.key]
    raw_keys.append(make_key("acme", ["contacts:read"], "reader"))
    raw_keys.append(make_key("globex", ["audit:read", "hooks:write"], "auditor"))
    revoked = make_key("acme", ["*"], "revoked")
    raw_keys.append(revoked)

    # Use every key, including in ways that write (contacts, audit events with request ids).
    for n, raw in enumerate(raw_keys):
        keyed = api.with_key(raw)
        assert keyed.get("/api/v1/me").status_code == 200
        keyed.post("/api/v1/contacts", json={"email": f"user{n}@example.com"})
        keyed.get("/api/v1/audit-events")
        keyed.get(f"/api/v1/contacts?email={raw}")  # the key even appears as a filter value
    (revoked_row,) = [k for k in services.keys.list_keys("acme") if k["name"] == "revoked"]
    services.keys.revoke_key(revoked_row["id"])
    assert api.with_key(revoked).get("/api/v1/me").status_code == 401
    unknown = "rk_live_" + secrets.token_urlsafe(32)
    assert api.with_key(unknown).get("/api/v1/me").status_code == 401

    tables, dump = _dump_database(services)
    assert {"api_keys", "audit_events", "contacts", "organizations"} <= set(tables)
    assert "rk_live_" in dump  # the display prefixes are stored, so the dump is real
    for raw in [*raw_keys, unknown]:
        secret_part = raw.removeprefix("rk_live_")
        assert raw not in dump
        assert secret_part not in dump
        assert secret_part[4:] not in dump  # beyond the 4 characters the display prefix keeps
        assert secret_part[-16:] not in dump

    with services.db.engine.connect() as conn:
        stored = {r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))}
    for raw in raw_keys:
        assert hashlib.sha256(raw.encode()).hexdigest() in stored
    assert hashlib.sha256(unknown.encode()).hexdigest() not in stored
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in stored)
    assert len(stored) == len(raw_keys)
