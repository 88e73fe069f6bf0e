"""Bad input, property-based: every webhook connector and every JSON body of the API.

The property, whatever arrives — random bytes, 10,000 nested arrays, a body one byte over the
limit, wrong types in every field, lone surrogates (``"\\ud800"``), NUL, RTL marks, invalid UTF-8,
duplicate names, repeated form keys, the wrong content type:

- never a 5xx;
- every non-2xx answer is the JSON error envelope, with a machine ``code`` and a human ``message``;
- a 2xx from a hook names a delivery that is stored, and the worker then takes it to an end
  without an internal error (no retry caused by the input).

Signed connectors get bodies signed the way their sender signs them (Twilio's RequestValidator,
the ``standardwebhooks`` package, an independent HMAC for Meta, Typeform and HubSpot), so the fuzz
reaches the parsers and not only the signature checks.

**Duplicate names in JSON are refused**, in webhook bodies and API bodies alike, by the one strict
reader both use (:mod:`seqbridge.strictjson`): 400 ``malformed_payload`` on a hook (the body is
kept on the rejected delivery, so nothing is lost silently) and 400 ``malformed_json`` on the API.
A silent last-wins would let ``{"status": "active", "status": "unsubscribed"}`` mean one thing to
Seqbridge and another to whatever else reads the same bytes, and a sender would never learn that
half its payload was dropped. I-JSON (RFC 7493) forbids duplicate names for the same reason.
Repeated *form* keys are normal (checkboxes): every form connector keeps all their values, as a list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from seqbridge.config import load_settings
from seqbridge.web.contract import Contract
from tests.reliability.fuzzing import assert_envelope, fuzz
from tests.test_hooks import drain, write_mapping
from tests.test_security import VALID_REQUESTS, _fresh_path_params, _url

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
LIMIT = 32_768  # SEQBRIDGE_MAX_BODY_BYTES for these tests: huge bodies stay cheap to build
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-fuzz-secret").decode()

HOOKS = f"""
hooks:
  whatsapp:
    organization: acme
    source: {{connector: whatsapp_cloud, app_secret: wa-secret, verify_token: wa-verify}}
    rules: &rules
      - name: look
        when:
          any:
            - {{field: body.email, exists: true}}
            - {{field: event.text, matches: "(?i)^\\\\s*stop"}}
            - {{field: "event.payload.email || event.answers.email", exists: true}}
        actions:
          - upsert_contact:
              email: "{{{{ body.email }}}}"
              set: {{first_name: "{{{{ event.text }}}}", attributes: {{raw: {{path: event}}}}}}
      - name: rest
        actions: []
  twilio:
    organization: acme
    source: {{connector: twilio, auth_token: twilio-token}}
    rules: *rules
  typeform:
    organization: acme
    source: {{connector: typeform, secret: tf-secret}}
    rules: *rules
  hubspot:
    organization: acme
    source: {{connector: hubspot, client_secret: hs-secret}}
    rules: *rules
  standard:
    organization: acme
    source: {{connector: standard_webhooks, secret: "{SW_SECRET}"}}
    rules: *rules
  crm:
    organization: acme
    source: {{connector: crm_form, token: hook-token}}
    rules: *rules
  activecampaign:
    organization: acme
    source: {{connector: activecampaign, token: hook-token}}
    rules: *rules
  generic:
    organization: acme
    source: {{connector: generic, token: hook-token}}
    rules: *rules
  zapier:
    organization: acme
    respond: after_actions
    source: {{connector: zapier, token: hook-token}}
    rules: *rules
  n8n:
    organization: acme
    source: {{connector: n8n, basic_user: n8n, basic_password: n8n-password}}
    rules: *rules
  form:
    organization: acme
    source: {{connector: form, public: true, honeypot: website}}
    rules: *rules
"""

JSON_HOOKS = ("whatsapp", "typeform", "hubspot", "standard", "generic", "zapier", "n8n", "twilio")
FORM_HOOKS = ("twilio", "crm", "activecampaign", "generic", "zapier", "n8n", "form")
ALL_HOOKS = tuple(dict.fromkeys(JSON_HOOKS + FORM_HOOKS))


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


#: A realistic body per hook, which the mutations below start from.
SAMPLES: dict[str, tuple[str, bytes]] = {
    "whatsapp": ("json", _fixture("whatsapp_text.json")),
    "typeform": ("json", _fixture("typeform_response.json")),
    "hubspot": ("json", _fixture("hubspot_events.json")),
    "standard": ("json", _fixture("standard_webhooks_event.json")),
    "generic": ("json", b'{"action": "enroll", "sequence": "Welcome", "email": "a@example.com"}'),
    "zapier": ("json", b'{"action": "enroll", "email": "a@example.com", "tags": ["vip", "vip"]}'),
    "n8n": ("form", b"action=enroll&email=a%40example.com"),
    "twilio": ("form", _fixture("twilio_whatsapp.form").strip()),
    "crm": ("form", _fixture("activecampaign_tag_added.form").strip()),
    "activecampaign": ("form", _fixture("activecampaign_tag_added.form").strip()),
    "form": ("form", b"email=a%40example.com&name=Kim&interest=a&interest=b"),
}

# Strategies --------------------------------------------------------------------------------------

EDGE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\udc00\ud800",
    "\ud83d\ude00",
    "😀",
    "\u202e",
    "\u200f",
    "\u200e",
    "\u202egnp.exe",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "e\u0301",
    "\uff33\uff34\uff2f\uff30",
    "STOP",
    " stop \n",
    "\u0085",
    "\u2028",
    "١٢٣",
    "²",
    "%00",
    "{{ 7*7 }}",
    "${HOME}",
    "'; DROP TABLE contacts;--",
    "<script>",
    "x" * 201,
    "y" * 256,
    "z" * 5000,
    "a@example.com",
    "whatsapp:+15551234567",
    "+" + "9" * 30,
]
texts = st.text(max_size=20) | st.sampled_from(EDGE_STRINGS)
numbers = (
    st.integers()
    | st.sampled_from([0, -1, 2**31, -(2**31) - 1, 2**63, 10**30, 10**300])
    | st.floats(allow_nan=False, allow_infinity=False)
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def _json_text(value: Any, ascii_only: bool) -> bytes:
    # Unescaped, a lone surrogate becomes bytes that are not UTF-8: that is a case too.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, value: Any) -> Any:
    """``value`` with one part replaced, dropped or added: wrong types deep inside a real shape."""
    if not isinstance(value, dict | list) or not value or draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    if isinstance(value, dict):
        key = draw(st.sampled_from(sorted(value)))
        action = draw(st.sampled_from(["descend", "descend", "drop", "add"]))
        if action == "drop":
            return {k: v for k, v in value.items() if k != key}
        if action == "add":
            return {**value, draw(texts): draw(json_values)}
        return {**value, key: draw(mutated(value[key]))}
    index = draw(st.integers(0, len(value) - 1))
    return [*value[:index], draw(mutated(value[index])), *value[index + 1 :]]


form_keys = (
    st.sampled_from(
        [
            "email",
            "contact[email]",
            "contact[id]",
            "x[]",
            "a[b][c]",
            "a",
            "a[b]",
            "website",
            "MessageSid",
            "From",
            "Body",
            "type",
            "tag",
            "[x]",
            "a[",
            "]",
        ]
    )
    | texts
)


@st.composite
def form_body(draw, sample: bytes) -> bytes:
    pairs = parse_qsl(sample.decode(), keep_blank_values=True) if draw(st.integers(0, 3)) else []
    pairs += draw(st.lists(st.tuples(form_keys, texts), max_size=6))
    if pairs and draw(st.booleans()):  # a key repeated, with another value
        key, _ = draw(st.sampled_from(pairs))
        pairs.append((key, draw(texts)))
    pairs = draw(st.permutations(pairs))
    return urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    ).encode()


@st.composite
def multipart_body(draw) -> tuple[bytes, str]:
    fields = MultiDict()
    for key, value in draw(st.lists(st.tuples(form_keys, texts), max_size=5)):
        fields.add(key.encode("utf-8", "replace").decode(), value.encode("utf-8", "replace").decode())
    if draw(st.booleans()):
        name = draw(texts).encode("utf-8", "replace").decode()
        fields.add("upload", FileStorage(io.BytesIO(draw(st.binary(max_size=64))), filename=name or "f"))
    boundary, data = encode_multipart(fields, boundary=f"seqbridge-{draw(st.integers(0, 10**6))}")
    if draw(st.booleans()):  # cut short somewhere: a broken multipart body
        data = data[: draw(st.integers(0, len(data)))]
    return data, f"multipart/form-data; boundary={boundary}"


EDGE_BODIES = [
    b"",
    b" ",
    b"null",
    b"[]",
    b"{}",
    b'""',
    b"0",
    b"-0",
    b"1e400",
    b"-1e400",
    b"NaN",
    b"[Infinity]",
    b"9" * 5000,
    b'{"a": 1e999}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b"[" * 64 + b"]" * 64,
    b"[" * 65 + b"]" * 65,
    b'{"a": 1, "a": 2}',
    b'[{"eventId": 1, "eventId": 1}]',
    b'{"object": "whatsapp_business_account", "object": "whatsapp_business_account"}',
    b'{"a": "\\ud800"}',
    b'{"a": "\\udc00\\ud800"}',
    b'{"\\ud800": 1}',
    b'{"a": "\\u0000"}',
    b'{"\\u0000": 1}',
    b'{"a": "\\u202e\\u200f"}',
    "\ufeff{}".encode(),
    b"\xff\xfe{\x00}\x00",
    b'{"a": "\xed\xa0\x80"}',
    b'{"a": "\xc0\xaf"}',
    b'{"a": 1}\x00',
    b"\x00",
    b"a=%00",
    b"a=%ED%A0%80",
    b"a=1&a=2&a=3",
    b"a[b][c]=1&a[b]=2",
    b"a" + b"[b]" * 5000 + b"=1",
    b"%",
    b"=&=&",
    b"a[]=1&a[]=2",
    b"a=1&a[b]=2",
    b"MessageSid=" + b"S" * 300 + b"&From=%2B1",
    b"MessageSid=SM1%00&Body=x",
]

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "text/plain",
    "application/vnd.api+json",
    "APPLICATION/JSON",
    "application/json; charset=latin-1",
    "application/json; x=" + "y" * 300,
    "*/*",
    "",
]


@st.composite
def hook_requests(draw) -> dict[str, Any]:
    """A request for one hook: method, body, content type, and how (or whether) it is signed."""
    hook = draw(st.sampled_from(ALL_HOOKS))
    kind, sample = SAMPLES[hook]
    natural = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
    choice = draw(
        st.sampled_from(
            ["mutated", "mutated", "mutated", "json", "form", "multipart", "bytes", "edge", "huge"]
        )
    )
    content_type: str | None = None
    if choice == "mutated" and kind == "json":
        body = _json_text(draw(mutated(json.loads(sample))), draw(st.booleans()))
    elif choice == "mutated" or choice == "form":
        body, content_type = draw(form_body(sample)), "application/x-www-form-urlencoded"
    elif choice == "json":
        body, content_type = _json_text(draw(json_values), draw(st.booleans())), "application/json"
    elif choice == "multipart":
        body, content_type = draw(multipart_body())
    elif choice == "bytes":
        body = draw(st.binary(max_size=300))
    elif choice == "edge":
        body = draw(st.sampled_from(EDGE_BODIES))
    else:  # a string around the size limit: just under it is stored, over it is 413
        size = draw(st.sampled_from([LIMIT - 40, LIMIT - 9, LIMIT - 8, LIMIT + 1, 3 * LIMIT]))
        body = b'{"email": "' + b"x" * size + b'"}'
    if content_type is None:
        content_type = natural
    if draw(st.integers(0, 7)) == 0:  # now and then, the wrong one (or none)
        content_type = draw(st.sampled_from([*CONTENT_TYPES, None]))
    return {
        "hook": hook,
        "method": draw(st.sampled_from(["POST", "POST", "POST", "PUT"])),
        "body": body,
        "content_type": content_type,
        "signing": draw(st.sampled_from(["good", "good", "good", "good", "wrong", "none"])),
    }


# Signing, as each sender does it ----------------------------------------------------------------

_message_ids = itertools.count(1)


def _hmac(secret: str, data: bytes, digest=hashlib.sha256) -> bytes:
    return hmac.new(secret.encode(), data, digest).digest()


def signed(hook: str, method: str, body: bytes, content_type: str | None, now: datetime, signing: str):
    """(query string, headers) for this request, signed as its sender would (or not, or wrongly)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    query = ""
    secret_suffix = "-wrong" if signing == "wrong" else ""
    if signing == "none":
        return query, headers
    if hook == "whatsapp":
        headers["X-Hub-Signature-256"] = "sha256=" + _hmac("wa-secret" + secret_suffix, body).hex()
    elif hook == "typeform":
        headers["Typeform-Signature"] = (
            "sha256=" + base64.b64encode(_hmac("tf-secret" + secret_suffix, body)).decode()
        )
    elif hook == "hubspot":
        stamp = str(int(now.timestamp() * 1000))
        message = method.encode() + b"http://localhost/hooks/hubspot" + body + stamp.encode()
        headers["X-HubSpot-Signature-v3"] = base64.b64encode(
            _hmac("hs-secret" + secret_suffix, message)
        ).decode()
        headers["X-HubSpot-Request-Timestamp"] = stamp
    elif hook == "standard":
        message_id = f"msg_{next(_message_ids)}"
        now = datetime.now(UTC)  # the package checks the timestamp against the system clock
        try:
            signature = Webhook(SW_SECRET if not secret_suffix else "whsec_d3Jvbmctc2VjcmV0").sign(
                message_id, now, body.decode("utf-8")
            )
        except UnicodeDecodeError:  # a sender signs text; these bytes are not
            signature = "v1,bm90LXRleHQ="
        headers.update(
            {
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            }
        )
    elif hook == "twilio":
        validator = RequestValidator("twilio-token" + secret_suffix)
        url = "http://localhost/hooks/twilio"
        if (content_type or "").startswith("application/json"):
            query = "bodySHA256=" + hashlib.sha256(body).hexdigest()
            params: MultiDict = MultiDict()
            url += "?" + query
        else:
            try:
                params = MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                params = MultiDict()
        headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
    elif hook == "n8n":
        credentials = base64.b64encode(f"n8n:n8n-password{secret_suffix}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
    elif hook != "form":
        headers["X-Seqbridge-Token"] = "hook-token" + secret_suffix
    return query, headers


# The property -----------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config):
    return {**app_config, "MAX_BODY_BYTES": LIMIT}


@pytest.fixture
def hooks(app_config, api):
    """Every connector behind a hook of organization acme; the API client of acme."""
    write_mapping(app_config, HOOKS)
    return api


def check_hook_answer(response, api, services) -> None:
    """The property for one webhook request; see the module docstring."""
    assert response.status_code < 500, (response.status_code, response.get_data()[:500])
    if response.status_code >= 300:
        assert_envelope(response)
        return
    data = response.get_json()["data"]
    assert data["status"] in ("queued", "duplicate", "ignored", "processed", "failed"), data
    stored = api.get(f"/api/v1/deliveries/{data['delivery_id']}")
    assert stored.status_code == 200, (data, stored.get_json())
    stored = stored.get_json()["data"]
    if data["status"] == "ignored":
        assert stored["status"] == "ignored" and stored["events"] == [], stored
    elif data["status"] == "queued":
        assert stored["status"] in ("queued", "processing", "processed", "failed"), stored
        assert stored["events"], stored
    drain(services)
    finished = api.get(f"/api/v1/deliveries/{data['delivery_id']}").get_json()["data"]
    # An internal error in processing shows as a retry; bad input must never cause one.
    assert finished["status"] in ("processed", "failed", "ignored"), finished
    assert finished["errors"] == [], finished["errors"]


@fuzz(300)
@given(request=hook_requests())
def test_every_hook_answers_any_request_with_a_stored_delivery_or_an_error_envelope(
    request, hooks, client, services, clock
):
    query, headers = signed(
        request["hook"],
        request["method"],
        request["body"],
        request["content_type"],
        clock.now(),
        request["signing"],
    )
    path = f"/hooks/{request['hook']}" + (f"?{query}" if query else "")
    response = client.open(path, method=request["method"], data=request["body"], headers=headers)
    check_hook_answer(response, hooks, services)


@fuzz(50)
@given(
    query=st.lists(
        st.tuples(st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge"]) | texts, texts),
        max_size=4,
    )
)
def test_the_meta_handshake_answers_any_query_with_its_challenge_or_an_envelope(query, hooks, client):
    encoded = urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in query]
    )
    response = client.get(f"/hooks/whatsapp?{encoded}")
    first = {}
    for key, value in query:
        first.setdefault(key, value)
    if response.status_code == 200:
        assert response.mimetype == "text/plain"
        assert first.get("hub.mode") == "subscribe" and first.get("hub.verify_token") == "wa-verify"
        assert response.get_data(as_text=True) == first.get("hub.challenge", "")
    else:
        assert_envelope(response)
    nul = any("\x00" in key + value for key, value in query)
    other = client.get(f"/hooks/generic?{encoded}")
    assert assert_envelope(other)["code"] == ("validation_failed" if nul else "method_not_allowed")


# The decided cases, exactly ----------------------------------------------------------------------


def post_signed(client, clock, hook: str, body: bytes, content_type: str = "application/json"):
    query, headers = signed(hook, "POST", body, content_type, clock.now(), "good")
    return client.post(f"/hooks/{hook}" + (f"?{query}" if query else ""), data=body, headers=headers)


def test_duplicate_names_are_a_400_on_every_json_hook_and_the_body_is_kept(hooks, client, clock):
    body = b'{"object": "whatsapp_business_account", "email": "a@example.com", "email": "b@example.com"}'
    for hook in JSON_HOOKS:
        response = post_signed(client, clock, hook, body)
        error = assert_envelope(response)
        assert response.status_code == 400 and error["code"] == "malformed_payload", (hook, error)
        assert "the name 'email' appears twice in one object" in error["message"], (hook, error)
    rejected = hooks.get("/api/v1/deliveries", query_string={"status": "rejected", "limit": 100}).get_json()[
        "data"
    ]
    assert sorted(d["hook"] for d in rejected) == sorted(JSON_HOOKS)
    for delivery in rejected:
        detail = hooks.get(f"/api/v1/deliveries/{delivery['id']}").get_json()["data"]
        assert detail["reject_reason"] == "malformed_payload"
        assert detail["request"]["body"] == body.decode()  # refused, never lost


UNSTORABLE = [
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64 levels"),
    (b"[" * 65 + b"]" * 65, "nested deeper than 64 levels"),
    (b'{"a": "\\ud800"}', "unpaired surrogate"),
    (b'{"\\udfff": 1}', "unpaired surrogate"),
    (b'{"a": "\\u0000"}', "$.data.payload.a holds the NUL character (U+0000)"),
    (b'{"a": NaN}', "NaN is not valid JSON"),
    (b'{"a": 1e400}', "the number '1e400' is too large"),
    (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8 (byte 7)"),
]


def test_json_a_database_cannot_hold_is_a_400_naming_why(hooks, client, clock):
    for body, message in UNSTORABLE:
        response = post_signed(client, clock, "generic", body)
        error = assert_envelope(response)
        assert response.status_code == 400 and error["code"] == "malformed_payload", (body[:40], error)
        assert message in error["message"], (body[:40], error)


def test_what_a_database_can_hold_is_stored_exactly(hooks, client, clock, services):
    value = {
        "rtl": "\u202egnp.exe",
        "marks": "\u200f\u200e",
        "emoji": "😀",
        "bom": "\ufeff",
        "max": "\U0010ffff",
        "deep": json.loads("[" * 63 + "]" * 63),
        "big": 10**30,
    }
    body = json.dumps(value, ensure_ascii=False).encode()
    response = post_signed(client, clock, "generic", body)
    assert response.status_code == 202, response.get_json()
    detail = hooks.get(f"/api/v1/deliveries/{response.get_json()['data']['delivery_id']}").get_json()["data"]
    assert detail["events"][0]["data"]["payload"] == value
    assert detail["request"]["body"] == body.decode()


def test_repeated_form_keys_keep_every_value_and_deep_brackets_are_refused(hooks, client, clock):
    response = post_signed(
        client,
        clock,
        "form",
        b"email=a%40example.com&interest=a&interest=b",
        "application/x-www-form-urlencoded",
    )
    assert response.status_code == 202, response.get_json()
    detail = hooks.get(f"/api/v1/deliveries/{response.get_json()['data']['delivery_id']}").get_json()["data"]
    assert detail["events"][0]["data"] == {"email": "a@example.com", "interest": ["a", "b"]}
    response = post_signed(
        client, clock, "generic", b"tag=a&tag=b&email=x", "application/x-www-form-urlencoded"
    )
    assert response.status_code == 202, response.get_json()
    detail = hooks.get(f"/api/v1/deliveries/{response.get_json()['data']['delivery_id']}").get_json()["data"]
    assert detail["events"][0]["data"]["payload"] == {"tag": ["a", "b"], "email": "x"}
    deep = post_signed(
        client, clock, "crm", b"a" + b"[b]" * 5000 + b"=1", "application/x-www-form-urlencoded"
    )
    error = assert_envelope(deep)
    assert deep.status_code == 400 and "nested deeper than 64 levels" in error["message"], error


def test_huge_bodies_are_413_before_anything_is_read(hooks, client, clock):
    body = b'{"email": "' + b"x" * LIMIT + b'"}'
    response = post_signed(client, clock, "generic", body)
    assert response.status_code == 413
    assert assert_envelope(response) == {
        "code": "payload_too_large",
        "message": "The request body is larger than this server accepts.",
        "details": {"limit_bytes": LIMIT},
    }
    assert hooks.get("/api/v1/deliveries").get_json()["data"] == []  # nothing stored, not even rejected


def test_a_long_provider_id_and_a_long_content_type_are_stored(hooks, client, clock):
    body = b'{"email": "a@example.com"}'
    _, headers = signed("generic", "POST", body, "application/json; x=" + "y" * 300, clock.now(), "good")
    headers["Idempotency-Key"] = "k" * 1000
    first = client.post("/hooks/generic", data=body, headers=headers)
    again = client.post("/hooks/generic", data=body, headers=headers)
    assert first.status_code == 202, first.get_json()
    delivery_id = first.get_json()["data"]["delivery_id"]
    assert again.get_json()["data"] == {
        "delivery_id": delivery_id,
        "status": "duplicate",
        "original": {
            "status": "queued",
            "received_at": clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "path": f"/api/v1/deliveries/{delivery_id}",
        },
    }
    [delivery] = hooks.get("/api/v1/deliveries").get_json()["data"]
    detail = hooks.get(f"/api/v1/deliveries/{delivery['id']}").get_json()["data"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", detail["events"][0]["dedupe_key"])
    assert detail["request"]["content_type"].startswith("application/json; x=yyy")


UNREADABLE = [
    ("twilio", b"MessageSid=SM1&Body=\xff", "application/x-www-form-urlencoded"),
    ("standard", b'{"a": "\xff"}', "application/json"),
    ("whatsapp", b'{"object": "whatsapp_business_account", "entry": [1]}', "application/json"),
    (
        "whatsapp",
        b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages":'
        b' [{"id": "w1", "text": "STOP"}]}}]}]}',
        "application/json",
    ),
    (
        "whatsapp",
        b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"messages":'
        b' [{"id": {"no": 1}}]}}]}]}',
        "application/json",
    ),
    (
        "typeform",
        b'{"event_id": "e", "form_response": {"answers": [{"type": ["x"], "field": "f"}]}}',
        "application/json",
    ),
    ("typeform", b'{"event_id": "e", "form_response": {"variables": [7]}}', "application/json"),
]


def test_bodies_a_connector_cannot_read_are_400_not_500(hooks, client, clock):
    for hook, body, content_type in UNREADABLE:
        response = post_signed(client, clock, hook, body, content_type)
        assert response.status_code == 400, (hook, body, response.get_data())
        assert assert_envelope(response)["code"] == "malformed_payload"


def test_a_hubspot_timestamp_of_unicode_or_huge_digits_is_refused(hooks, client):
    for stamp in ("²", "¹²³", "9" * 5000):  # str.isdigit() says yes to each; int() refuses them
        response = client.post(
            "/hooks/hubspot",
            data=b"[]",
            headers={
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": "x",
                "X-HubSpot-Request-Timestamp": stamp,
            },
        )
        assert response.status_code == 401, response.get_data()
        assert assert_envelope(response)["code"] == "timestamp_out_of_window"


def test_nul_in_a_hooks_query_string_is_refused_before_anything_is_stored(hooks, client):
    response = client.post("/hooks/generic?token=hook-token&x=a%00b", json={"a": 1})
    error = assert_envelope(response)
    assert response.status_code == 400 and error["details"]["errors"] == [
        {"path": "x", "in": "query", "message": "must not contain the NUL character (U+0000)"}
    ]
    assert hooks.get("/api/v1/deliveries").get_json()["data"] == []


# The API's JSON bodies --------------------------------------------------------------------------

_SPEC = Contract.load(load_settings()["OPENAPI_PATH"])
_SCHEMA = schemathesis.openapi.from_dict(_SPEC.spec)
BODY_OPERATIONS = sorted(
    (op for op in _SPEC.operations.values() if op.body_validator is not None), key=lambda op: op.operation_id
)


def _field_names(schema: dict[str, Any]) -> list[str]:
    """Every property name the schema (with its allOf / anyOf / oneOf parts) declares."""
    schema = _SPEC._deref(schema)
    names = list((schema.get("properties") or {}).keys())
    for keyword in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(keyword, []):
            names.extend(_field_names(part))
    return sorted(set(names))


def _body_schema(operation) -> dict[str, Any]:
    body = _SPEC._deref(_SPEC.spec["paths"][operation.path][operation.method.lower()]["requestBody"])
    return body["content"]["application/json"]["schema"]


FIELDS = {op.operation_id: _field_names(_body_schema(op)) for op in BODY_OPERATIONS}
#: Values aimed at what a schema does not say: column lengths, integer widths, odd text.
INTERESTING = [
    None,
    True,
    0,
    -1,
    1.5,
    -0.0,
    2**31,
    -(2**31) - 1,
    2**63,
    10**30,
    1e308,
    [],
    {},
    [None],
    {"": None},
    "",
    " ",
    "x" * 101,
    "x" * 201,
    "x" * 256,
    "x" * 321,
    "x" * 5000,
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "2026-13-45T99:99:99Z",
    "Mars/Olympus",
    "UTC",
    "active",
    "paused",
    "archived",
    "+99999999999999999999",
    "a@example.com",
    "ÄÖÜ@exämple.com",
    "\ud800",
    "\u202e",
    "\x00",
    ["vip", "vip"],
    ["x" * 101],
    {"a": {"b": {"c": [1, 2, {"d": None}]}}},
    [{"tag": "x"}],
    {"tag": "x" * 200},
]
api_values = st.sampled_from(INTERESTING) | json_values


def _generated(operation, mode: GenerationMode):
    """Schemathesis's bodies for this operation, valid (positive) or not (negative)."""
    return _SCHEMA[operation.path][operation.method].as_strategy(generation_mode=mode)


@st.composite
def api_requests(draw, params: dict[str, str]) -> tuple[Any, bytes, str]:
    """(operation, raw body, content type): generated from the contract, a valid body with a few
    fields set to odd values, or junk."""
    operation = draw(st.sampled_from(BODY_OPERATIONS))
    valid = VALID_REQUESTS[operation.operation_id].body(draw(st.integers(1, 10**6)), params)
    choice = draw(st.sampled_from(["positive", "positive", "negative", "fields", "fields", "edge", "bytes"]))
    content_type = "application/json"
    if choice in ("positive", "negative"):
        case = draw(_generated(operation, GenerationMode(choice)))
        body = case.body if isinstance(case.body, dict | list | str | int | float | bool) else valid
        raw = _json_text(body, draw(st.booleans()))
    elif choice == "fields":
        body = dict(valid)
        for _ in range(draw(st.integers(1, 3))):
            body[draw(st.sampled_from(FIELDS[operation.operation_id] or ["x"]))] = draw(api_values)
        raw = _json_text(body, draw(st.booleans()))
    elif choice == "edge":
        raw = draw(st.sampled_from(EDGE_BODIES))
    else:
        raw = draw(st.binary(max_size=200))
    if draw(st.integers(0, 9)) == 0:
        content_type = draw(st.sampled_from(CONTENT_TYPES))
    return operation, raw, content_type


@pytest.fixture
def world(api) -> dict[str, str]:
    """One of everything a path can name (contact, company, sequence, step, enrollment, queue)."""
    params = _fresh_path_params(api, "/api/v1/sequences/mappings")
    queue = _fresh_path_params(api, "/api/v1/event-queues")
    return {**params, "queue_id": queue["queue_id"], "queue_step_id": queue["step_id"]}


def _path(operation, world: dict[str, str]) -> str:
    params = {**world, "step_id": world["queue_step_id"]} if "/event-queues" in operation.path else world
    return _url(operation.path, params)


@fuzz(300)
@given(data=st.data())
def test_every_json_body_of_the_api_gets_its_answer_or_an_error_envelope(data, api, world):
    operation, raw, content_type = data.draw(api_requests(world))
    response = api._call(
        operation.method,
        _path(operation, world),
        data=raw,
        headers={"Content-Type": content_type} if content_type else {},
    )
    assert response.status_code < 500, (operation.operation_id, raw[:300], response.get_data()[:500])
    if response.status_code >= 300:
        assert_envelope(response)
    else:
        assert "data" in response.get_json(), response.get_json()


def test_duplicate_names_are_a_400_on_every_api_body(api, world):
    for operation in BODY_OPERATIONS:
        response = api._call(
            operation.method,
            _path(operation, world),
            data=b'{"name": "a", "name": "b"}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, operation.operation_id
        assert assert_envelope(response) == {
            "code": "malformed_json",
            "message": "The request body is not valid JSON: the name 'name' appears twice in one object.",
        }, operation.operation_id
