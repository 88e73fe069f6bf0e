"""openapi.yaml is the contract: every route is in it, every operation in it has a route, and
every operation declares who may call it."""

from __future__ import annotations

import yaml
from openapi_spec_validator import validate

from seqbridge import create_app
from seqbridge.services.keys import ALL_SCOPES, SCOPES
from seqbridge.web.contract import METHODS, flask_rule_to_openapi

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _routes(app) -> set[tuple[str, str]]:
    return {
        (flask_rule_to_openapi(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith("console.")  # the console's pages are not API routes
        for method in rule.methods - IGNORED_METHODS
    }


def _spec_operations(spec) -> set[tuple[str, str]]:
    return {
        (path, method.upper()) for path, item in spec["paths"].items() for method in METHODS if method in item
    }


def test_spec_is_valid_openapi_3_1(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    spec = app.extensions["seqbridge.contract"].spec
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_in_the_spec_and_every_spec_path_has_a_route(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    spec = app.extensions["seqbridge.contract"].spec
    routes, operations = _routes(app), _spec_operations(spec)
    assert routes - operations == set(), "Flask routes missing from openapi.yaml"
    assert operations - routes == set(), "openapi.yaml operations without a Flask route"


def test_every_operation_declares_a_known_scope_or_is_public(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    spec = app.extensions["seqbridge.contract"].spec
    operation_ids = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            operation_ids.append(op["operationId"])
            public = op.get("security") == []
            scope = op.get("x-required-scope")
            if path.startswith("/api/"):
                assert not public, f"{method.upper()} {path} is an API route and must not be public"
            if scope is not None:
                assert scope in SCOPES and scope != ALL_SCOPES, (
                    f"{method.upper()} {path}: unknown scope {scope}"
                )
            assert public or scope or path == "/api/v1/me", f"{method.upper()} {path} declares no scope"
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"


def test_spec_served_is_the_file(client):
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    served = yaml.safe_load(response.get_data(as_text=True))
    assert served["info"]["title"] == "Seqbridge API"
    assert "/api/v1/contacts" in served["paths"]
    plain = client.get("/openapi.yaml", headers={"Accept": "text/plain"})
    assert plain.mimetype == "text/plain" and plain.get_data(as_text=True) == response.get_data(as_text=True)
    assert client.get("/openapi.yaml", headers={"Accept": "*/*"}).mimetype == "application/yaml"


def test_head_is_checked_like_get(client, api):
    """HEAD runs the GET view, so it must be authenticated and scoped exactly like GET."""
    anonymous = client.head("/api/v1/contacts")
    assert anonymous.status_code == 401
    assert (
        api.client.head("/api/v1/contacts", headers={"Authorization": f"Bearer {api.key}"}).status_code == 200
    )
    assert client.options("/api/v1/contacts").headers["Allow"]
