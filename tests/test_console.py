"""The operator console through the Flask test client, on both engines: sign-in and sessions,
CSRF, scopes and organizations, inert webhook content, and each page's data. (The real-browser
tests are tests/test_console_browser.py.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from seqbridge.storage.schema import console_sessions
from tests import factories
from tests.console_helpers import csrf, sign_in
from tests.test_hooks import WHATSAPP_STOP, drain, meta_body, post_meta, write_mapping


@pytest.fixture
def key(make_key) -> str:
    return make_key("acme", ["*"], name="ops")


@pytest.fixture
def console(client, key):
    assert sign_in(client, key).status_code == 303
    return client


# Sign-in and sessions --------------------------------------------------------------------------


def test_a_page_without_a_session_goes_to_sign_in(client):
    answer = client.get("/deliveries?status=dead")
    assert (
        answer.status_code == 302 and answer.headers["Location"] == "/sign-in?next=/deliveries?status%3Ddead"
    )
    xhr = client.get("/deliveries", headers={"HX-Request": "true"})
    assert xhr.status_code == 401 and xhr.json["error"]["code"] == "session_expired"


def test_sign_in_exchanges_the_key_for_a_session_cookie(client, key, services):
    answer = sign_in(client, key)
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("seqbridge_console=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    token = cookie.split(";")[0].split("=", 1)[1]
    assert key not in cookie and token != key
    with services.db.transaction(write=False) as tx:
        [row] = tx.conn.execute(select(console_sessions)).mappings().all()
    assert key not in str(dict(row)) and token not in str(dict(row)) and len(row["token_hash"]) == 64
    page = client.get("/")
    assert page.status_code == 200 and "acme" in page.text and "Sign out" in page.text
    assert key not in page.text
    assert client.get("/audit?tag=api:console_session:created").text.count("api:console_session:created") >= 2


def test_a_wrong_key_is_refused_and_the_form_needs_its_token(client, key):
    wrong = sign_in(client, "rk_live_" + "x" * 43)
    assert (
        wrong.status_code == 401 and "not valid" in wrong.text and "Set-Cookie" not in wrong.headers
    ) or "seqbridge_console=" not in wrong.headers.get("Set-Cookie", "")
    assert client.get("/").status_code == 302
    forged = client.post("/sign-in", data={"api_key": key})
    assert forged.status_code == 403 and "expired" in forged.text
    assert client.get("/").status_code == 302


def test_behind_https_the_cookie_is_secure_and_host_prefixed(make_key, app_config):
    from seqbridge import create_app

    application = create_app({**app_config, "PUBLIC_BASE_URL": "https://hooks.example.com"})
    try:
        client = application.test_client()
        raw = application.extensions["seqbridge"].keys.create_key("acme", ["*"]).raw_key
        cookie = sign_in(client, raw).headers["Set-Cookie"]
        assert cookie.startswith("__Host-seqbridge_console=") and "Secure" in cookie and "Path=/" in cookie
    finally:
        application.extensions["seqbridge"].db.dispose()


def test_sign_out_idle_timeout_and_revoking_the_key_end_the_session(client, key, services, clock, make_key):
    sign_in(client, key)
    client.post("/sign-out", data={"csrf_token": csrf(client)})
    assert client.get("/").status_code == 302

    sign_in(client, key)
    clock.advance(timedelta(minutes=29))
    assert client.get("/").status_code == 200  # activity moves the idle deadline on
    clock.advance(timedelta(minutes=29))
    assert client.get("/").status_code == 200
    clock.advance(timedelta(minutes=31))
    assert client.get("/").status_code == 302

    sign_in(client, key)
    [listed] = [k for k in services.keys.list_keys("acme") if k["name"] == "ops"]
    services.keys.revoke_key(listed["id"])  # e.g. `seqbridge keys revoke`
    assert client.get("/").status_code == 302


# CSRF, scopes, organizations -------------------------------------------------------------------


def test_a_post_without_its_csrf_token_is_refused(console, api, services):
    delivery = factories.delivery(services, factories.org_id(api), status="dead")
    page = console.post(f"/deliveries/{delivery}/replay")
    assert page.status_code == 403 and "csrf_failed" in page.text
    as_json = console.post(f"/deliveries/{delivery}/replay", headers={"Accept": "application/json"})
    assert as_json.status_code == 403 and as_json.json["error"]["code"] == "csrf_failed"
    wrong = console.post(f"/deliveries/{delivery}/replay", data={"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    with services.db.transaction(write=False) as tx:
        assert tx.deliveries.get_delivery(factories.org_id(api), delivery)["status"] == "dead"
    ok = console.post(f"/deliveries/{delivery}/replay", data={"csrf_token": csrf(console)})
    assert ok.status_code == 303
    with services.db.transaction(write=False) as tx:
        assert tx.deliveries.get_delivery(factories.org_id(api), delivery)["status"] == "queued"


def test_a_read_only_key_sees_no_write_controls_and_a_forged_post_is_403(client, make_key, api, services):
    org = factories.org_id(api)
    delivery = factories.delivery(services, org, status="dead")
    sequence = factories.active_sequence(api)
    reader = make_key("acme", ["hooks:read", "sequences:read", "contacts:read", "audit:read"], name="reader")
    sign_in(client, reader)
    detail = client.get(f"/deliveries/{delivery}")
    assert (
        detail.status_code == 200
        and ">Replay<" not in detail.text
        and "playground" not in detail.text.lower()
    )
    listing = client.get("/deliveries")
    assert "Replay all matching" not in listing.text
    seq_page = client.get(f"/sequences/{sequence['id']}")
    assert seq_page.status_code == 200 and ">Pause<" not in seq_page.text
    assert "API keys" not in client.get("/").text
    token = csrf(client, "/")
    forged = client.post(f"/deliveries/{delivery}/replay", data={"csrf_token": token})
    assert forged.status_code == 403 and "hooks_write_denied" in forged.text
    forged = client.post(
        f"/sequences/{sequence['id']}/status", data={"csrf_token": token, "status": "paused"}
    )
    assert forged.status_code == 403 and "sequences_write_denied" in forged.text
    assert client.get("/keys").status_code == 403
    assert client.get("/replays/new").status_code == 403
    assert client.get("/mappings/whatsapp/playground").status_code == 403


def test_another_organizations_objects_are_404(console, other_api, services):
    theirs = factories.delivery(services, factories.org_id(other_api), status="dead")
    their_contact = factories.contact(other_api, email="them@globex.com")
    their_sequence = factories.active_sequence(other_api)
    assert console.get(f"/deliveries/{theirs}").status_code == 404
    assert console.post(f"/deliveries/{theirs}/replay", data={"csrf_token": csrf(console)}).status_code == 404
    assert console.get(f"/contacts/{their_contact['id']}").status_code == 404
    assert console.get(f"/sequences/{their_sequence['id']}").status_code == 404
    assert "No contact matches" in console.get("/contacts?q=them@globex.com").text


# Untrusted content ---------------------------------------------------------------------------


def test_webhook_content_renders_inert_and_readable(console, api, services):
    org = factories.org_id(api)
    delivery = factories.delivery(services, org, status="failed")
    evil = (
        '{"name": "<script>window.__xss=1</script>", "url": "javascript:alert(1)", "k": "rk_live_'
        + "a" * 43
        + '"}'
    )
    with services.db.transaction() as tx:
        tx.deliveries.conn.execute(
            __import__("sqlalchemy")
            .update(__import__("seqbridge.storage.schema", fromlist=["deliveries"]).deliveries)
            .where(
                __import__("seqbridge.storage.schema", fromlist=["deliveries"]).deliveries.c.id == delivery
            )
            .values(
                body=evil.encode(),
                headers={"x-long": "A" * 10_000, "x-evil": '"><img src=x onerror=alert(1)>'},
                errors=[{"at": "2026-01-01T00:00:00Z", "attempt": 1, "error": "<b>boom</b>"}],
            )
        )
    page = console.get(f"/deliveries/{delivery}")
    assert page.status_code == 200
    html = page.text
    assert "<script>window.__xss" not in html and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>boom</b>" not in html
    assert 'href="javascript:' not in html
    assert "rk_live_" + "a" * 43 not in html  # an API key in a body is redacted, as in the API
    assert "10000 characters; show all" in html  # a 10,000-character header is folded
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert not re.search(r"<script>(?!\s*$)", html)  # no inline script at all
    assert ' style="' not in html


# Pages ---------------------------------------------------------------------------------------


@pytest.fixture
def stopped(app_config, api, services):
    """A contact in two sequences who texted STOP on WhatsApp, processed."""
    write_mapping(app_config, WHATSAPP_STOP)
    person = factories.contact(api, phone="+15551234567", first_name="Kim", email="kim@example.com")
    names = ["Onboarding", "Nurture"]
    for name in names:
        sequence = factories.active_sequence(api, name=name)
        assert (
            api.post(
                f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}
            ).status_code
            == 201
        )
    answer = post_meta(services_client(services), meta_body("STOP", message_id="wamid.STOP42"))
    assert answer.status_code == 202
    drain(services)
    return person, answer.json["data"]["delivery_id"]


def services_client(services):
    from flask import current_app  # noqa: F401

    return services._test_client


@pytest.fixture(autouse=True)
def _client_for_services(services, client):
    services._test_client = client


def test_a_stop_reads_received_unsubscribed_exited_on_the_contact_timeline(stopped, console):
    person, delivery_id = stopped
    page = console.get(f"/contacts/{person['id']}")
    assert page.status_code == 200
    timeline = page.text.split('<ol class="timeline">')[1].split("</ol>")[0]
    received = timeline.index("message received on <strong>whatsapp</strong>")
    unsubscribed = timeline.index("<strong>unsubscribed</strong>")
    exited = [
        timeline.index(f"<strong>exited</strong> sequence <strong>{n}</strong>")
        for n in ("Onboarding", "Nurture")
    ]
    assert received < unsubscribed < min(exited)
    assert f"/deliveries/{delivery_id}" in timeline and "«STOP»" in timeline

    detail = console.get(f"/deliveries/{delivery_id}").text
    assert "<code>unenroll</code>" in detail and "(ended)" in detail and "hook:enrollment:exited" in detail
    assert "hook:contact:unsubscribed" in detail and f"/contacts/{person['id']}" in detail


def test_deliveries_are_found_by_provider_id_and_by_contact(stopped, console):
    _person, delivery_id = stopped
    for query in ("wamid.STOP42", "+1 555 123 4567", "kim@example.com"):
        page = console.get("/deliveries", query_string={"q": query})
        assert page.status_code == 200 and f"/deliveries/{delivery_id}" in page.text, query
    assert f"/deliveries/{delivery_id}" not in console.get("/deliveries?q=wamid.NOPE").text
    filtered = console.get("/deliveries?status=dead&hook=whatsapp")
    assert "No deliveries match these filters" in filtered.text
    rows = console.get("/deliveries?status=processed&fragment=rows")
    assert rows.text.lstrip().startswith("<tbody") and f"/deliveries/{delivery_id}" in rows.text


def test_the_overview_charts_the_deliveries_and_counts_the_backlog(stopped, console, api, services, clock):
    org = factories.org_id(api)
    for _ in range(3):
        factories.delivery(services, org, status="dead", hook="zap")
    page = console.get("/")
    assert page.status_code == 200 and 'id="chart-data"' in page.text
    assert '<a href="/deliveries?status=dead">3</a>' in page.text
    charts = console.get("/overview/charts?range=1h", headers={"Accept": "application/json"}).json["data"]
    assert charts["totals"]["processed"] == 1 and charts["totals"]["dead"] == 3
    assert len(charts["x"]) == 60 and sum(charts["series"]["dead"]) == 3
    assert charts["latency_overall"]["count"] == 1
    assert console.get("/overview/charts?range=1h&hook=zap").json["data"]["totals"]["processed"] == 0
    assert console.get("/overview/charts?range=9y").status_code == 400


def test_the_latency_histogram_counts_each_delivery_at_most_its_bound(api, services, clock):
    """Both engines bin the same way: a delivery that took exactly a bound counts under it."""
    from seqbridge.storage.delivery_stats import LATENCY_BOUNDS_MS

    org = factories.org_id(api)
    start = clock.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    took_ms = [5, 10, 11, 25, 100, 4_000_000]
    for ms in took_ms:
        factories.delivery(
            services, org, received_at=start + timedelta(seconds=1), took=timedelta(milliseconds=ms)
        )
    factories.delivery(services, org, status="dead", received_at=start + timedelta(seconds=2))
    factories.delivery(
        services, org, received_at=start + timedelta(minutes=1, seconds=1), took=timedelta(seconds=1)
    )
    edges = [start, start + timedelta(minutes=1), start + timedelta(minutes=2)]
    with services.db.transaction(write=False) as tx:
        first, second = tx.delivery_stats.latency_histogram(org, edges, None)
        counts, latency = tx.delivery_stats.counts_and_latency(org, edges, None)
        assert counts == tx.delivery_stats.counts_by_bucket(org, edges, None) and latency == [first, second]
    assert (counts[0]["processed"], counts[0]["dead"], counts[1]["processed"]) == (6, 1, 1)
    assert first["n"] == len(took_ms) and second["n"] == 1
    expected = [sum(1 for ms in took_ms if ms <= bound) for bound in LATENCY_BOUNDS_MS]
    assert first["le"] == expected and expected[:4] == [2, 4, 4, 5]
    assert second["le"] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]


def test_the_hooks_with_deliveries_are_each_named_once_per_organization(api, other_api, services):
    org, other = factories.org_id(api), factories.org_id(other_api)
    for hook in ("zap", "form", "zap", "whatsapp", "form", "zap"):
        factories.delivery(services, org, hook=hook)
    factories.delivery(services, other, hook="typeform")
    with services.db.transaction(write=False) as tx:
        assert tx.delivery_stats.hooks_with_deliveries(org) == ["form", "whatsapp", "zap"]
        assert tx.delivery_stats.hooks_with_deliveries(other) == ["typeform"]
        assert tx.delivery_stats.hooks_with_deliveries("no-such-org") == []


def test_the_playground_shows_planned_actions_and_runs_nothing(stopped, console, api):
    person, delivery_id = stopped
    page = console.post(
        "/mappings/whatsapp/playground",
        data={
            "csrf_token": csrf(console),
            "body": meta_body("stop please no, START").decode(),
            "content_type": "application/json",
            "headers": "",
            "delivery_id": "",
        },
    )
    assert page.status_code == 200
    stored = console.get(f"/mappings/whatsapp/playground?delivery={delivery_id}")
    assert "<code>upsert_contact</code>" in stored.text and "<code>unenroll</code>" in stored.text
    assert api.get(f"/api/v1/contacts/{person['id']}").json["data"]["status"] == "unsubscribed"
    bad = console.post(
        "/mappings/whatsapp/playground",
        data={"csrf_token": csrf(console), "body": "[1]", "content_type": "application/json"},
    )
    assert bad.status_code == 200 and "malformed_payload" in bad.text
    mappings = console.get("/mappings").text
    assert "http://localhost/hooks/whatsapp" in mappings and "whatsapp_cloud" in mappings


def test_enrollments_and_sequences_are_managed_from_their_pages(console, api):
    person = factories.contact(api, email="ada@example.com")
    sequence = factories.active_sequence(api, name="Welcome")
    enrolled = api.post(
        f"/api/v1/sequences/{sequence['id']}/enroll", json={"customer_id": person["id"]}
    ).json["data"]
    token = csrf(console)
    base = f"/sequences/{sequence['id']}/enrollments/{enrolled['id']}"
    assert console.post(f"{base}/pause", data={"csrf_token": token}).status_code == 303
    assert api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"][0]["status"] == "paused"
    assert console.post(f"{base}/resume", data={"csrf_token": token}).status_code == 303
    assert console.post(f"{base}/unenroll", data={"csrf_token": token}).status_code == 303
    [ended] = api.get(f"/api/v1/sequences/{sequence['id']}/enrollments").json["data"]
    assert (ended["status"], ended["exit_reason"]) == ("exited", "manual")
    page = console.get(f"/sequences/{sequence['id']}?status=exited")
    assert "ada@example.com" in page.text and "exited 1" in page.text
    assert (
        console.post(
            f"/sequences/{sequence['id']}/status", data={"csrf_token": token, "status": "paused"}
        ).status_code
        == 303
    )
    assert api.get(f"/api/v1/sequences/{sequence['id']}").json["data"]["status"] == "paused"
    assert "Welcome" in console.get("/sequences").text


def test_contacts_search_by_email_phone_and_tag(console, api):
    factories.contact(api, email="Ada@Example.com", phone="+16505551234", tags=["vip"])
    factories.contact(api, email="bob@example.com")
    assert "Ada@Example.com" in console.get("/contacts?q=ada@example.com").text
    assert "Ada@Example.com" in console.get("/contacts?q=%2B1 650 555 1234").text
    by_tag = console.get("/contacts?q=vip").text
    assert "Ada@Example.com" in by_tag and "bob@example.com" not in by_tag
    assert "No contact matches" in console.get("/contacts?q=nobody@example.com").text


def test_audit_log_filters_and_verifies_the_chain(console, api):
    factories.contact(api, email="ada@example.com")
    page = console.get("/audit?tag=api:contact:created")
    assert "api:contact:created" in page.text and "api:console_session:created</code></a>" not in page.text
    verified = console.post("/audit/verify", data={"csrf_token": csrf(console)})
    assert verified.status_code == 200 and "The chain is intact" in verified.text


def test_keys_are_managed_by_a_star_key_and_shown_once(console, services):
    created = console.post(
        "/keys", data={"csrf_token": csrf(console), "name": "zapier", "scope": ["hooks:read"]}
    )
    assert created.status_code == 201
    raw = re.search(r'id="new-key">(rk_live_[^<]+)<', created.text).group(1)
    assert services.keys.authenticate(raw).scopes == frozenset({"hooks:read"})
    assert raw not in console.get("/keys").text
    [row] = [k for k in services.keys.list_keys("acme") if k["name"] == "zapier"]
    assert console.post(f"/keys/{row['id']}/revoke", data={"csrf_token": csrf(console)}).status_code == 303
    assert "revoked" in console.get("/keys").text


def test_subscriptions_page_lists_health_and_creates_with_the_secret_once(console, api):
    refused = console.post(
        "/subscriptions",
        data={
            "csrf_token": csrf(console),
            "event": "contact.unsubscribed",
            "target_url": "http://127.0.0.1:9/zap",
        },
    )
    assert refused.status_code == 400 and "target_refused" in refused.text  # the API's own checks
    created = console.post(
        "/subscriptions",
        data={
            "csrf_token": csrf(console),
            "event": "contact.unsubscribed",
            "target_url": "http://93.184.215.14/zap",
        },
    )
    assert created.status_code == 201 and "shown this once" in created.text
    listed = console.get("/subscriptions").text
    assert "contact.unsubscribed" in listed and "healthy" in listed and "whsec_" not in listed


def test_replay_by_filter_from_the_console(console, api, services):
    org = factories.org_id(api)
    for _ in range(3):
        factories.delivery(services, org, status="dead", hook="zap")
    confirm = console.get("/replays/new?status=dead&hook=zap")
    assert "3 deliveries match" in confirm.text and "Replay 3 deliveries" in confirm.text
    started = console.post("/replays", data={"csrf_token": csrf(console), "status": "dead", "hook": "zap"})
    assert started.status_code == 303
    job_page = console.get(started.headers["Location"])
    assert "0 of 3 replayed" in job_page.text.replace('<span id="replay-count">0</span>', "0")
    from seqbridge.worker.replay_jobs import ReplayJobRunner

    while ReplayJobRunner(services).run_once("w") > 0:
        pass
    progress = console.get(started.headers["Location"] + "?fragment=progress").text
    assert '<span id="replay-count">3</span> of 3 replayed' in progress and "100%" in progress
