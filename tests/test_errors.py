"""Every error status, with its exact JSON envelope ``{"error": {"code", "message", "details"}}``
and an ``X-Request-Id`` header (an autouse fixture checks the header on every response here)."""

from __future__ import annotations

import json
import logging
import re
import uuid

import pytest
from flask.testing import FlaskClient

from seqbridge import create_app
from tests.conftest import Api

REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
CONTACTS = "/api/v1/contacts"


@pytest.fixture(autouse=True)
def _every_response_carries_a_request_id(monkeypatch):
    """Wrap the test client so no response in this file can lack X-Request-Id."""
    original = FlaskClient.open
    seen: list[str] = []

    def checked_open(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        request_id = response.headers.get("X-Request-Id", "")
        assert REQUEST_ID.fullmatch(request_id), f"missing or bad X-Request-Id: {request_id!r}"
        assert len(response.headers.getlist("X-Request-Id")) == 1
        seen.append(request_id)
        return response

    monkeypatch.setattr(FlaskClient, "open", checked_open)
    yield
    # Generated ids are never reused between requests.
    generated = [r for r in seen if GENERATED_ID.fullmatch(r)]
    assert len(generated) == len(set(generated))


def envelope(response, status: int) -> dict:
    """The JSON error body, after checking the status and that it is a JSON error envelope."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def validation_failed(errors: list[dict], message: str | None = None) -> dict:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return {
        "error": {
            "code": "validation_failed",
            "message": message or f"{first['path']}: {first['message']}{more}",
            "details": {"errors": errors},
        }
    }


def body_error(path: str, message: str) -> dict:
    return {"path": path, "in": "body", "message": message}


def query_error(name: str, message: str) -> dict:
    return {"path": name, "in": "query", "message": message}


def post_raw(api: Api, path: str, data, content_type: str | None = "application/json", **kw):
    headers = kw.pop("headers", {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    return api.post(path, data=data, headers=headers, **kw)


def contact_total(api: Api) -> int:
    return api.get(CONTACTS).get_json()["meta"]["total"]


@pytest.fixture
def contact(api) -> dict:
    response = api.post(CONTACTS, json={"email": "grace@example.com", "tags": ["vip"]})
    assert response.status_code == 201
    return response.get_json()["data"]


# 400: the body ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,problem,line,column",
    [
        (b'{"email": "a@example.com",\n  oops}', "Expecting property name enclosed in double quotes", 2, 3),
        (b'{"email": ', "Expecting value", 1, 11),
        (b'{"email": "a@example.com",}', "Expecting property name enclosed in double quotes", 1, 27),
        (b"{'email': 'a@example.com'}", "Expecting property name enclosed in double quotes", 1, 2),
        (b'{"email": "a@example.com"} {}', "Extra data", 1, 28),
        (b'\n\n   {"email" "a@example.com"}', "Expecting ':' delimiter", 3, 13),
    ],
    ids=["bare-word", "truncated", "trailing-comma", "single-quotes", "extra-data", "missing-colon"],
)
def test_400_malformed_json_names_line_and_column(raw, problem, line, column, api):
    response = post_raw(api, CONTACTS, raw)
    assert envelope(response, 400) == {
        "error": {
            "code": "malformed_json",
            "message": f"The request body is not valid JSON: {problem} at line {line} column {column}.",
            "details": {"line": line, "column": column},
        }
    }
    assert contact_total(api) == 0


def test_400_invalid_utf8(api):
    response = post_raw(api, CONTACTS, b'{"first_name": "\xff\xfe", "email": "a@example.com"}')
    assert envelope(response, 400) == {
        "error": {"code": "malformed_json", "message": "The request body is not valid UTF-8 (byte 16)."}
    }
    # Latin-1 text sent as if it were UTF-8.
    response = post_raw(api, CONTACTS, '{"email": "a@example.com", "city": "Zürich"}'.encode("latin-1"))
    error = envelope(response, 400)["error"]
    assert error["code"] == "malformed_json"
    assert error["message"].startswith("The request body is not valid UTF-8 (byte ")
    assert contact_total(api) == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_400_non_finite_numbers_are_not_json(constant, api):
    raw = f'{{"email": "a@example.com", "attributes": {{"score": {constant}}}}}'.encode()
    response = post_raw(api, CONTACTS, raw)
    assert envelope(response, 400) == {
        "error": {
            "code": "malformed_json",
            "message": f"The request body is not valid JSON: {constant} is not valid JSON.",
        }
    }
    assert contact_total(api) == 0


def test_400_absurdly_deep_json_is_malformed_not_a_crash(api):
    response = post_raw(api, CONTACTS, b"[" * 100_000 + b"]" * 100_000)
    error = envelope(response, 400)["error"]
    assert error["code"] == "malformed_json"
    assert error["message"].startswith("The request body is not valid JSON: ")


@pytest.mark.parametrize(
    "raw,shown",
    [
        (b'[{"email": "a@example.com"}]', "[{'email': 'a@example.com'}]"),
        (b'"a@example.com"', "'a@example.com'"),
        (b"42", "42"),
        (b"true", "True"),
        (b"null", "None"),
    ],
    ids=["array", "string", "number", "boolean", "null"],
)
def test_400_a_non_object_body_fails_validation_at_the_root(raw, shown, api):
    response = post_raw(api, CONTACTS, raw)
    assert envelope(response, 400) == validation_failed([body_error("$", f"{shown} is not of type 'object'")])
    assert response.get_json()["error"]["details"]["errors"][0]["path"] == "$"


def test_400_array_on_every_json_operation(api, contact):
    company = api.post("/api/v1/companies", json={"name": "Initech"}).get_json()["data"]
    for method, path in [
        ("POST", CONTACTS),
        ("PATCH", f"{CONTACTS}/{contact['id']}"),
        ("POST", f"{CONTACTS}/{contact['id']}/tags"),
        ("POST", "/api/v1/customers"),
        ("POST", "/api/v1/companies"),
        ("PATCH", f"/api/v1/companies/{company['id']}"),
    ]:
        response = api.client.open(
            path, method=method, json=["x"], headers={"Authorization": f"Bearer {api.key}"}
        )
        assert envelope(response, 400) == validation_failed(
            [body_error("$", "['x'] is not of type 'object'")]
        )


def test_400_wrong_type_names_the_field(api):
    response = api.post(CONTACTS, json={"email": 5})
    assert envelope(response, 400) == {
        "error": {
            "code": "validation_failed",
            "message": "$.email: 5 is not of type 'string', 'null'",
            "details": {
                "errors": [{"path": "$.email", "in": "body", "message": "5 is not of type 'string', 'null'"}]
            },
        }
    }
    assert contact_total(api) == 0


@pytest.mark.parametrize(
    "body,errors",
    [
        (
            {"email": 5, "phone": 6},
            [
                body_error("$.email", "5 is not of type 'string', 'null'"),
                body_error("$.phone", "6 is not of type 'string', 'null'"),
            ],
        ),
        (
            {"email": "a@example.com", "tags": "vip"},
            [body_error("$.tags", "'vip' is not of type 'array', 'null'")],
        ),
        (
            {"email": "a@example.com", "status": "gone"},
            [
                body_error(
                    "$.status", "'gone' is not one of ['active', 'unsubscribed', 'bounced', 'do_not_contact']"
                ),
            ],
        ),
        (
            {"email": "a@example.com", "converted": "yes"},
            [body_error("$.converted", "'yes' is not of type 'boolean'")],
        ),
        ({"email": "a@example.com", "tags": [""]}, [body_error("$.tags[0]", "'' should be non-empty")]),
    ],
    ids=["two-fields", "tags-string", "status-enum", "converted-string", "empty-tag"],
)
def test_400_each_offending_field_is_listed(body, errors, api):
    assert envelope(api.post(CONTACTS, json=body), 400) == validation_failed(errors)


def test_400_wrong_type_on_a_company(api):
    response = api.post("/api/v1/companies", json={"name": 5})
    assert envelope(response, 400) == validation_failed([body_error("$.name", "5 is not of type 'string'")])
    created = api.post("/api/v1/companies", json={"name": "Initech"}).get_json()["data"]
    response = api.patch(f"/api/v1/companies/{created['id']}", json={"is_customer": "no"})
    assert envelope(response, 400) == validation_failed(
        [body_error("$.is_customer", "'no' is not of type 'boolean'")]
    )


@pytest.mark.parametrize(
    "path,body,errors",
    [
        (
            CONTACTS,
            {"email": "a@example.com", "frist_name": "Ada"},
            [body_error("$.frist_name", "unknown field 'frist_name' (did you mean 'first_name'?)")],
        ),
        (
            CONTACTS,
            {"email": "a@example.com", "emial": "b@example.com"},
            [body_error("$.emial", "unknown field 'emial' (did you mean 'email'?)")],
        ),
        (CONTACTS, {"email": "a@example.com", "zzz": 1}, [body_error("$.zzz", "unknown field 'zzz'")]),
        (
            "/api/v1/companies",
            {"name": "Initech", "industy": "software"},
            [body_error("$.industy", "unknown field 'industy' (did you mean 'industry'?)")],
        ),
        (
            CONTACTS,
            {"email": 5, "frist_name": "Ada"},
            [
                body_error("$.frist_name", "unknown field 'frist_name' (did you mean 'first_name'?)"),
                body_error("$.email", "5 is not of type 'string', 'null'"),
            ],
        ),
    ],
    ids=["first_name", "email", "no-hint", "company", "with-type-error"],
)
def test_400_unknown_fields_get_a_did_you_mean(path, body, errors, api):
    assert envelope(api.post(path, json=body), 400) == validation_failed(errors)


def test_400_unknown_field_on_tags(api, contact):
    response = api.post(f"{CONTACTS}/{contact['id']}/tags", json={"tags": ["a"], "tag": "b"})
    assert envelope(response, 400) == validation_failed(
        [body_error("$.tag", "unknown field 'tag' (did you mean 'tags'?)")]
    )
    assert api.get(f"{CONTACTS}/{contact['id']}").get_json()["data"]["tags"] == ["vip"]


@pytest.mark.parametrize(
    "path,query,errors",
    [
        (CONTACTS, "limit=0", [query_error("limit", "0 is less than the minimum of 1")]),
        (CONTACTS, "limit=101", [query_error("limit", "101 is greater than the maximum of 100")]),
        (CONTACTS, "limit=abc", [query_error("limit", "'abc' is not of type 'integer'")]),
        (CONTACTS, "limit=1.5", [query_error("limit", "'1.5' is not of type 'integer'")]),
        (CONTACTS, "limit=", [query_error("limit", "'' is not of type 'integer'")]),
        (CONTACTS, "offset=-1", [query_error("offset", "-1 is less than the minimum of 0")]),
        (
            CONTACTS,
            "limit=0&offset=-1",
            [
                query_error("limit", "0 is less than the minimum of 1"),
                query_error("offset", "-1 is less than the minimum of 0"),
            ],
        ),
        (CONTACTS, "converted=maybe", [query_error("converted", "'maybe' is not of type 'boolean'")]),
        (
            CONTACTS,
            "status=gone",
            [
                query_error(
                    "status", "'gone' is not one of ['active', 'unsubscribed', 'bounced', 'do_not_contact']"
                ),
            ],
        ),
        ("/api/v1/customers", "limit=101", [query_error("limit", "101 is greater than the maximum of 100")]),
        ("/api/v1/companies", "offset=-1", [query_error("offset", "-1 is less than the minimum of 0")]),
        ("/api/v1/companies", "is_customer=2", [query_error("is_customer", "'2' is not of type 'boolean'")]),
        (
            "/api/v1/audit-events",
            "limit=201",
            [query_error("limit", "201 is greater than the maximum of 200")],
        ),
        ("/api/v1/audit-events", "order=up", [query_error("order", "'up' is not one of ['asc', 'desc']")]),
        (
            "/api/v1/audit-events",
            "since=yesterday",
            [query_error("since", "'yesterday' is not a 'date-time'")],
        ),
    ],
)
def test_400_query_parameters(path, query, errors, api):
    response = api.get(f"{path}?{query}")
    assert envelope(response, 400) == validation_failed(errors)
    for error in response.get_json()["error"]["details"]["errors"]:
        assert error["in"] == "query"


def test_400_query_boundaries_are_accepted(api):
    for query in ("limit=1", "limit=100", "offset=0", "limit=100&offset=1000"):
        assert api.get(f"{CONTACTS}?{query}").status_code == 200, query


@pytest.mark.parametrize(
    "data,content_type",
    [(None, None), (b"", "application/json"), (b"  \n\t ", "application/json"), (b"", "text/plain")],
    ids=["nothing", "empty-json", "whitespace", "empty-text"],
)
def test_400_missing_body(data, content_type, api):
    response = post_raw(api, CONTACTS, data, content_type)
    assert envelope(response, 400) == {
        "error": {
            "code": "missing_body",
            "message": "A JSON request body is required.",
            "details": {"errors": [{"path": "$", "in": "body", "message": "a JSON body is required"}]},
        }
    }


def test_400_missing_body_on_every_body_operation(api, contact):
    for method, path in [
        ("PATCH", f"{CONTACTS}/{contact['id']}"),
        ("POST", f"{CONTACTS}/{contact['id']}/tags"),
        ("POST", "/api/v1/companies"),
    ]:
        response = api.client.open(path, method=method, headers={"Authorization": f"Bearer {api.key}"})
        assert envelope(response, 400)["error"]["code"] == "missing_body", (method, path)


def test_400_a_contact_needs_an_email_or_a_phone(api):
    assert envelope(api.post(CONTACTS, json={"first_name": "Ada"}), 400) == validation_failed(
        [body_error("$", "give email or phone (or both)")],
        message="A contact needs an email or a phone number.",
    )


def test_400_empty_patch(api, contact):
    response = api.patch(f"{CONTACTS}/{contact['id']}", json={})
    assert envelope(response, 400) == validation_failed([body_error("$", "{} should be non-empty")])


def test_400_forged_cursor(api):
    import base64

    forged = base64.urlsafe_b64encode(b'{"after":"a","order":"asc"}').decode().rstrip("=")
    response = api.get(f"/api/v1/audit-events?cursor={forged}")
    assert envelope(response, 400)["error"]["code"] == "invalid_cursor"
    for raw in (
        b'{"after":1,"order":"sideways"}',
        b'{"after":true,"order":"asc"}',
        b"[1]",
        b'{"order":"asc"}',
    ):
        forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = api.get(f"/api/v1/audit-events?cursor={forged}")
        assert envelope(response, 400)["error"]["code"] == "invalid_cursor", raw


def test_400_garbage_cursor(api):
    response = api.get("/api/v1/audit-events?cursor=zzz")
    assert envelope(response, 400) == {
        "error": {
            "code": "invalid_cursor",
            "message": "cursor is not valid; pass the next_cursor of a previous page",
        }
    }


@pytest.mark.parametrize(
    "where",
    ["path-id", "query-filter", "body-field"],
)
def test_nul_bytes_are_a_client_error_never_a_500(where, api, backend):
    """No column can hold U+0000 on PostgreSQL; it is refused up front, the same on both engines."""
    if where == "path-id":
        response = api.get(f"{CONTACTS}/a%00b")
        assert envelope(response, 404)["error"]["code"] == "not_found"
    elif where == "query-filter":
        response = api.get(f"{CONTACTS}?email=a%00b@example.com")
        error = envelope(response, 400)["error"]
        assert error["details"]["errors"] == [
            {"path": "email", "in": "query", "message": "must not contain the NUL character (U+0000)"}
        ]
    else:
        response = api.post(CONTACTS, json={"email": "nul@example.com", "first_name": "a\u0000b"})
        error = envelope(response, 400)["error"]
        assert error["details"]["errors"][0]["path"] == "$.first_name"
        assert api.get(f"{CONTACTS}?email=nul@example.com").json["meta"]["total"] == 0


# 401 / 403 (in depth in test_security.py) --------------------------------------------------------


def test_401_and_403_envelopes(client, api, make_key):
    response = client.get(CONTACTS)
    assert envelope(response, 401) == {
        "error": {
            "code": "unauthorized",
            "message": "A valid API key is required: send Authorization: Bearer <key>.",
        }
    }
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="seqbridge"'

    response = client.get(CONTACTS, headers={"Authorization": "Bearer rk_live_nope"})
    assert envelope(response, 401) == {
        "error": {"code": "invalid_api_key", "message": "The API key is not valid or has been revoked."}
    }

    reader = api.with_key(make_key("acme", ["contacts:read"], "reader"))
    response = reader.post(CONTACTS, json={"email": "a@example.com"})
    assert envelope(response, 403) == {
        "error": {
            "code": "contacts_write_denied",
            "message": "This API key lacks the contacts:write scope.",
            "details": {"required_scope": "contacts:write"},
        }
    }
    response = reader.get("/api/v1/audit-events")
    assert envelope(response, 403)["error"] == {
        "code": "audit_read_denied",
        "message": "This API key lacks the audit:read scope.",
        "details": {"required_scope": "audit:read"},
    }
    assert contact_total(api) == 0


# 404 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/api/v1/nope"), ("POST", "/api/v2/contacts"), ("GET", "/nope"), ("GET", f"{CONTACTS}/")],
)
def test_404_unknown_route(method, path, client, api):
    for response in (
        client.open(path, method=method),
        api.client.open(path, method=method, headers={"Authorization": f"Bearer {api.key}"}),
    ):
        assert envelope(response, 404) == {
            "error": {"code": "not_found", "message": f"No route {method} {path}."}
        }
        assert "WWW-Authenticate" not in response.headers


def test_404_unknown_objects(api, contact):
    missing = str(uuid.uuid4())
    for path, noun in [
        (f"{CONTACTS}/{missing}", "contact"),
        (f"/api/v1/customers/{missing}", "contact"),
        (f"/api/v1/companies/{missing}", "company"),
    ]:
        for response in (api.get(path), api.patch(path, json={"city": "Paris"}), api.delete(path)):
            assert envelope(response, 404) == {
                "error": {"code": "not_found", "message": f"no {noun} with id {missing}"}
            }
    response = api.post(f"{CONTACTS}/{missing}/tags", json={"tags": ["x"]})
    assert envelope(response, 404) == {
        "error": {"code": "not_found", "message": f"no contact with id {missing}"}
    }
    response = api.get(f"{CONTACTS}/not-even-a-uuid")
    assert envelope(response, 404) == {
        "error": {"code": "not_found", "message": "no contact with id not-even-a-uuid"}
    }


def test_404_missing_tag(api, contact):
    response = api.delete(f"{CONTACTS}/{contact['id']}/tags/nope")
    assert envelope(response, 404) == {
        "error": {"code": "tag_not_found", "message": f"contact {contact['id']} has no tag 'nope'"}
    }
    assert api.get(f"{CONTACTS}/{contact['id']}").get_json()["data"]["tags"] == ["vip"]


def test_404_after_delete(api, contact):
    assert api.delete(f"{CONTACTS}/{contact['id']}").status_code == 204
    response = api.delete(f"{CONTACTS}/{contact['id']}")
    assert envelope(response, 404)["error"] == {
        "code": "not_found",
        "message": f"no contact with id {contact['id']}",
    }


# 405 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PUT", CONTACTS, ["GET", "POST"]),
        ("DELETE", CONTACTS, ["GET", "POST"]),
        ("PUT", f"{CONTACTS}/{{id}}", ["DELETE", "GET", "PATCH"]),
        ("POST", f"{CONTACTS}/{{id}}", ["DELETE", "GET", "PATCH"]),
        ("GET", f"{CONTACTS}/{{id}}/tags", ["POST"]),
        ("GET", f"{CONTACTS}/{{id}}/tags/vip", ["DELETE"]),
        ("PATCH", "/api/v1/companies", ["GET", "POST"]),
        ("POST", "/api/v1/audit-events", ["GET"]),
        ("DELETE", "/api/v1/me", ["GET"]),
        ("POST", "/healthz", ["GET"]),
    ],
)
def test_405_wrong_method(method, path, allowed, client, api):
    path = path.format(id=uuid.uuid4())
    for headers in ({}, {"Authorization": f"Bearer {api.key}"}):
        response = client.open(path, method=method, headers=headers)
        assert envelope(response, 405) == {
            "error": {
                "code": "method_not_allowed",
                "message": f"{method} is not allowed on {path}; use {', '.join(allowed)}.",
                "details": {"allowed": allowed},
            }
        }
        assert response.headers["Allow"] == ", ".join(allowed)


# 409 -------------------------------------------------------------------------------------------


def test_409_duplicate_email_is_case_insensitive(api):
    first = api.post(CONTACTS, json={"email": "Ada@Example.com"})
    assert first.status_code == 201
    first = first.get_json()["data"]
    expected = {
        "error": {
            "code": "email_taken",
            "message": "A contact with this email already exists.",
            "details": {"existing_id": first["id"]},
        }
    }
    for email in ("ada@example.com", "ADA@EXAMPLE.COM", "  ada@example.com  "):
        assert envelope(api.post(CONTACTS, json={"email": email}), 409) == expected, email
        assert envelope(api.post("/api/v1/customers", json={"email": email}), 409) == expected, email

    # Changing another contact's email onto it conflicts too, and changes nothing.
    other = api.post(CONTACTS, json={"email": "grace@example.com"}).get_json()["data"]
    assert (
        envelope(api.patch(f"{CONTACTS}/{other['id']}", json={"email": "ADA@example.com"}), 409) == expected
    )
    assert api.get(f"{CONTACTS}/{other['id']}").get_json()["data"] == other
    assert api.get(f"{CONTACTS}/{first['id']}").get_json()["data"] == first
    assert contact_total(api) == 2
    # Re-saving a contact's own email in another case is not a conflict.
    assert api.patch(f"{CONTACTS}/{first['id']}", json={"email": "ADA@example.com"}).status_code == 200


# 413 -------------------------------------------------------------------------------------------


@pytest.fixture
def small_api(app_config, api):
    """An app (same database) that accepts bodies of at most 1000 bytes."""
    small = create_app({**app_config, "MAX_BODY_BYTES": 1000})
    yield Api(small.test_client(), api.key)
    small.extensions["seqbridge"].db.dispose()


def _json_of_size(size: int, email: str) -> bytes:
    base = {"email": email, "first_name": ""}
    padding = size - len(json.dumps(base).encode())
    raw = json.dumps({**base, "first_name": "x" * padding}).encode()
    assert len(raw) == size
    return raw


def test_413_payload_too_large(small_api, api):
    response = post_raw(small_api, CONTACTS, _json_of_size(2000, "big@example.com"))
    assert envelope(response, 413) == {
        "error": {
            "code": "payload_too_large",
            "message": "The request body is larger than 1000 bytes.",
            "details": {"limit_bytes": 1000},
        }
    }
    assert contact_total(api) == 0
    # The limit itself is allowed; one byte more is not.
    assert envelope(post_raw(small_api, CONTACTS, _json_of_size(1001, "edge@example.com")), 413)
    ok = post_raw(small_api, CONTACTS, _json_of_size(200, "fits@example.com"))
    assert ok.status_code == 201, ok.get_data(as_text=True)
    assert contact_total(api) == 1


def test_413_limit_is_the_configured_one(app, api):
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    raw = _json_of_size(1024 * 1024 + 1, "huge@example.com")
    response = post_raw(api, CONTACTS, raw)
    assert envelope(response, 413)["error"]["details"] == {"limit_bytes": 1024 * 1024}


# 415 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type,received",
    [
        ("text/plain", "text/plain"),
        ("text/plain; charset=utf-8", "text/plain"),
        ("application/xml", "application/xml"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        (None, None),
    ],
)
def test_415_unsupported_media_type(content_type, received, api):
    response = post_raw(api, CONTACTS, b'{"email": "a@example.com"}', content_type)
    assert envelope(response, 415) == {
        "error": {
            "code": "unsupported_media_type",
            "message": f"Send the body as application/json (got {received or 'no Content-Type'}).",
            "details": {"expected": "application/json", "received": received},
        }
    }
    assert contact_total(api) == 0


def test_415_does_not_apply_to_json_types(api):
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        response = post_raw(
            api, CONTACTS, json.dumps({"email": f"{uuid.uuid4().hex}@example.com"}), content_type
        )
        assert response.status_code == 201, content_type


# 500 -------------------------------------------------------------------------------------------


@pytest.fixture
def seqbridge_log(caplog):
    """The ``seqbridge`` logger does not propagate; attach caplog's handler to it directly."""
    logger = logging.getLogger("seqbridge")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def _boom(*args, **kwargs):
    raise RuntimeError("secret internal detail")


def test_500_hides_the_details_and_quotes_the_request_id(api, contact, services, monkeypatch, seqbridge_log):
    monkeypatch.setattr(services.contacts, "get_contact", _boom)
    for incoming in ("my-req-500", None):
        headers = {"X-Request-Id": incoming} if incoming else {}
        response = api.get(f"{CONTACTS}/{contact['id']}", headers=headers)
        request_id = response.headers["X-Request-Id"]
        if incoming:
            assert request_id == incoming
        else:
            assert GENERATED_ID.fullmatch(request_id)
        assert envelope(response, 500) == {
            "error": {
                "code": "internal_error",
                "message": f"An unexpected error occurred. Quote request id {request_id} when reporting it.",
                "details": {"request_id": request_id},
            }
        }
        text = response.get_data(as_text=True)
        for secret in ("Traceback", "secret internal detail", "RuntimeError", "_boom", ".py"):
            assert secret not in text
        # Operators still get the whole story, tied to the same request id.
        assert request_id in seqbridge_log.text
    assert "secret internal detail" in seqbridge_log.text
    assert "Traceback" in seqbridge_log.text
    # Other routes are unaffected.
    assert api.get(CONTACTS).status_code == 200


def test_500_inside_a_write_changes_nothing(api, services, monkeypatch):
    monkeypatch.setattr(services.contacts, "create_contact", _boom)
    response = api.post(CONTACTS, json={"email": "a@example.com"})
    assert envelope(response, 500)["error"]["code"] == "internal_error"
    assert contact_total(api) == 0


# X-Request-Id -----------------------------------------------------------------------------------


def test_request_id_is_echoed(api, contact):
    for path in (CONTACTS, "/api/v1/nope", f"{CONTACTS}/{uuid.uuid4()}", "/healthz"):
        response = api.get(path, headers={"X-Request-Id": "my-req-123"})
        assert response.headers["X-Request-Id"] == "my-req-123", path
    assert (
        api.client.get(CONTACTS, headers={"X-Request-Id": "my-req-123"}).headers["X-Request-Id"]
        == "my-req-123"
    )
    assert (
        api.client.put(CONTACTS, headers={"X-Request-Id": "my-req-123"}).headers["X-Request-Id"]
        == "my-req-123"
    )
    longest = "a" * 100
    assert api.get(CONTACTS, headers={"X-Request-Id": longest}).headers["X-Request-Id"] == longest
    odd = "Trace.1:2_3-4"
    assert api.get(CONTACTS, headers={"X-Request-Id": odd}).headers["X-Request-Id"] == odd


def test_request_id_reaches_the_audit_log(api):
    api.post(CONTACTS, json={"email": "a@example.com"}, headers={"X-Request-Id": "my-req-123"})
    events = api.get("/api/v1/audit-events?tag=api:contact:created").get_json()["data"]
    assert [e["request_id"] for e in events] == ["my-req-123"]


@pytest.mark.parametrize(
    "incoming",
    ["has spaces", "x" * 200, "x" * 101, "", "a/b", "<script>", "id;drop", "tab\there"],
    ids=["spaces", "200-chars", "101-chars", "empty", "slash", "markup", "semicolon", "tab"],
)
def test_invalid_request_id_is_replaced(incoming, api, client):
    for response in (
        api.get(CONTACTS, headers={"X-Request-Id": incoming}),
        client.get(CONTACTS, headers={"X-Request-Id": incoming}),  # 401
        api.get("/api/v1/nope", headers={"X-Request-Id": incoming}),  # 404
    ):
        request_id = response.headers["X-Request-Id"]
        assert request_id != incoming
        assert GENERATED_ID.fullmatch(request_id)
        assert incoming not in response.get_data(as_text=True) or incoming == ""


def test_every_request_gets_its_own_id(api):
    ids = {api.get(CONTACTS).headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5
