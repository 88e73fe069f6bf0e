"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real
`seqbridge serve` on loopback (gunicorn and the worker), on SQLite.

A failing test leaves a screenshot in test-artifacts/console/; every page's screenshot is kept in
test-artifacts/console/pages/ (docs/console/ holds the ones the README shows).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.test_hooks import meta_body

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
APP_SECRET = "browser-test-app-secret"
ZAP_TOKEN = "browser-test-zap-token"
MAPPING = """
version: 1
hooks:
  whatsapp:
    organization: acme
    source: {connector: whatsapp_cloud, app_secret: APP_SECRET, verify_token: verify-me}
    rules:
      - name: stop
        when: {field: event.text, keyword: [STOP, UNSUBSCRIBE]}
        actions:
          - upsert_contact: {phone: "{{ event.from }}", set: {status: unsubscribed}}
          - unenroll: {sequence: "*", contact: {phone: "{{ event.from }}"}, reason: unsubscribed}
      - name: other messages
        actions: []
  zap:
    organization: acme
    source: {connector: zapier, token: ZAP_TOKEN}
    on_unmatched: fail
    rate_limit: {per_second: 50, burst: 100}
    rules:
      - name: enroll
        when: {field: event.payload.action, equals: enroll}
        actions:
          - enroll: {sequence: {path: event.payload.sequence}, contact: {email: {path: event.payload.email}}}
""".replace("APP_SECRET", APP_SECRET).replace("ZAP_TOKEN", ZAP_TOKEN)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, admin: str, reader: str) -> None:
        self.base, self.admin, self.reader = base, admin, reader

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.admin}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kwargs)

    def whatsapp(self, text: str, message_id: str, sender: str = "15551234567") -> requests.Response:
        body = meta_body(text, message_id=message_id, sender=sender)
        signature = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return requests.post(
            f"{self.base}/hooks/whatsapp",
            data=body,
            timeout=10,
            headers={"X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json"},
        )

    def zap(self, payload: dict, key: str) -> requests.Response:
        return requests.post(
            f"{self.base}/hooks/zap",
            json=payload,
            timeout=10,
            headers={"X-Seqbridge-Token": ZAP_TOKEN, "Idempotency-Key": key},
        )

    def wait(self, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting")
            time.sleep(0.2)


def _key(env: dict, scopes: list[str], name: str) -> str:
    args = [sys.executable, "-m", "seqbridge", "keys", "create", "--org", "acme", "--name", name]
    for scope in scopes:
        args += ["--scope", scope]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-server")
    (root / "mappings").mkdir()
    (root / "mappings" / "hooks.yaml").write_text(textwrap.dedent(MAPPING))
    port = _free_port()
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": f"sqlite:///{root}/console.db",
        "SEQBRIDGE_MAPPINGS_DIR": str(root / "mappings"),
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.2",
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
    }
    subprocess.run(
        [sys.executable, "-m", "seqbridge", "init"], env=env, check=True, capture_output=True, timeout=60
    )
    admin = _key(env, ["*"], "ops")
    reader = _key(env, ["hooks:read", "sequences:read", "contacts:read", "audit:read"], "reader")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqbridge", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or still loading the app
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "seqbridge serve did not start"
            time.sleep(0.2)
        yield Server(base, admin, reader)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-gpu",
            ],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin")
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(str(e)))
    tab.problems = problems
    yield tab
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def sign_in(page, server: Server, key: str | None = None) -> None:
    page.goto(server.base + "/")
    page.get_by_label("API key").fill(key or server.admin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.base + "/")


def shot(page, name: str) -> None:
    (ARTIFACTS / "pages").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pages" / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def people(server):
    """Kim (+15551234567) enrolled in two sequences; Ada enrolled in one."""
    kim = server.api(
        "POST",
        "/api/v1/contacts",
        json={"email": "kim@example.com", "phone": "+15551234567", "first_name": "Kim", "tags": ["whatsapp"]},
    ).json()["data"]
    ada = server.api(
        "POST", "/api/v1/contacts", json={"email": "ada@example.com", "first_name": "Ada", "tags": ["vip"]}
    ).json()["data"]
    sequences = {}
    for name in ("Onboarding", "Nurture"):
        seq = server.api(
            "POST", "/api/v1/sequences", json={"name": name, "from_email": "hi@example.com"}
        ).json()["data"]
        server.api(
            "POST",
            f"/api/v1/sequences/{seq['id']}/steps",
            json={"channel": "email", "delay_days": 2, "subject": "Hi", "body": "Hello"},
        )
        server.api("PATCH", f"/api/v1/sequences/{seq['id']}", json={"status": "active"})
        server.api("POST", f"/api/v1/sequences/{seq['id']}/enroll", json={"customer_id": kim["id"]})
        sequences[name] = seq
    server.api(
        "POST", f"/api/v1/sequences/{sequences['Onboarding']['id']}/enroll", json={"customer_id": ada["id"]}
    )
    return {"kim": kim, "ada": ada, "sequences": sequences}


# Sign-in ---------------------------------------------------------------------------------------


def test_sign_in_with_a_key_and_a_wrong_key_is_refused(page, server):
    page.goto(server.base + "/deliveries")
    assert "/sign-in" in page.url
    page.get_by_label("API key").fill("rk_live_" + "w" * 43)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That key is not valid")
    shot(page, "sign-in")
    page.get_by_label("API key").fill(server.admin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/deliveries$"))
    assert page.get_by_role("heading", name="Deliveries").is_visible()
    cookies = page.context.cookies()
    [session] = [c for c in cookies if c["name"] == "seqbridge_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and server.admin not in session["value"]
    assert page.evaluate("document.cookie") == ""  # nothing readable by scripts
    page.get_by_role("button", name="Sign out").click()
    page.goto(server.base + "/")
    assert "/sign-in" in page.url


# A STOP, live -----------------------------------------------------------------------------------


def test_a_signed_whatsapp_stop_appears_live_and_reads_on_the_contact_timeline(page, server, people):
    sign_in(page, server)
    page.goto(server.base + "/deliveries?hook=whatsapp")
    assert (
        page.get_by_text("No deliveries match these filters").is_visible()
        or page.locator("#delivery-rows tr").count() == 0
    )
    answer = server.whatsapp("STOP", "wamid.BROWSER1")
    assert answer.status_code == 202
    delivery_id = answer.json()["data"]["delivery_id"]
    started = time.monotonic()
    link = page.locator(f'a[href="/deliveries/{delivery_id}"]')
    link.wait_for(timeout=10_000)  # the list polls every 3 s: no reload
    assert time.monotonic() - started < 10
    # Processed within seconds, still without a reload.
    page.locator("#delivery-rows tr", has=link).get_by_text("processed").wait_for(timeout=15_000)
    link.click()
    page.wait_for_url(f"**/deliveries/{delivery_id}")
    row = page.locator("tr", has=page.locator("code", has_text="unenroll"))
    assert row.locator(".badge").inner_text() == "done"
    assert row.get_by_role("link", name=re.compile("enrollment .* \\(ended\\)")).count() == 2
    assert page.get_by_text("hook:contact:unsubscribed").is_visible()
    # Times are shown in the browser's zone (Europe/Berlin here), UTC on hover.
    received = page.locator("dl.facts time").first
    assert "UTC" in received.get_attribute("title") and "UTC" not in received.inner_text()
    shot(page, "delivery")
    page.locator("tr", has=page.locator("code", has_text="upsert_contact")).get_by_role(
        "link", name="contact"
    ).click()
    page.wait_for_url(f"**/contacts/{people['kim']['id']}")
    items = page.locator("ol.timeline > li").all_inner_texts()
    text = "\n".join(items)
    received_at = text.index("message received on whatsapp")
    unsubscribed = text.index("unsubscribed", received_at)
    exited = text.index("exited sequence Onboarding", unsubscribed)
    assert received_at < unsubscribed < exited and "exited sequence Nurture" in text
    assert "«STOP»" in text
    shot(page, "contact")


# Replays ----------------------------------------------------------------------------------------


def test_replay_one_and_replay_by_filter_with_progress(page, server, people):
    ids = []
    for n in range(4):
        answer = server.zap({"action": "nothing-matches", "n": n}, key=f"replay-{n}")
        assert answer.status_code == 202
        ids.append(answer.json()["data"]["delivery_id"])
    server.wait(
        lambda: all(
            server.api("GET", f"/api/v1/deliveries/{i}").json()["data"]["status"] == "failed" for i in ids
        )
    )
    sign_in(page, server)
    page.goto(f"{server.base}/deliveries/{ids[0]}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Replay", exact=True).click()
    assert page.get_by_role("status").inner_text().startswith("Queued again")
    server.wait(lambda: server.api("GET", f"/api/v1/deliveries/{ids[0]}").json()["data"]["replays"] == 1)

    server.wait(
        lambda: server.api("GET", f"/api/v1/deliveries/{ids[0]}").json()["data"]["status"] == "failed"
    )
    page.goto(server.base + "/deliveries?hook=zap&status=failed")
    shot(page, "deliveries")
    page.get_by_role("link", name="Replay all matching…").click()
    assert page.get_by_text("4 deliveries match").is_visible()
    shot(page, "replay-confirm")
    page.get_by_role("button", name="Replay 4 deliveries").click()
    page.wait_for_url(re.compile(r".*/replays/[0-9a-f-]+$"))
    page.get_by_text("4 of 4 replayed").wait_for(timeout=20_000)  # the progress updates in place
    assert page.locator("#replay-progress").get_by_text("done").is_visible()
    assert page.locator("progress").first.get_attribute("value") == "1.0"
    shot(page, "replay-job")
    for delivery_id in ids:
        assert server.api("GET", f"/api/v1/deliveries/{delivery_id}").json()["data"]["replays"] >= 1


# Playground, scopes, CSRF, XSS, keyboard ---------------------------------------------------------


def test_the_playground_shows_a_planned_action(page, server):
    sign_in(page, server)
    page.goto(server.base + "/mappings")
    assert page.get_by_text(f"{server.base}/hooks/whatsapp").is_visible()
    shot(page, "mappings")
    page.locator("#hook-whatsapp").get_by_role("link", name="Playground").click()
    page.get_by_label("Body").fill(meta_body("Stop", message_id="wamid.PLAY").decode())
    page.get_by_role("button", name="Show what would happen").click()
    result = page.locator("#pg-result")
    assert result.get_by_text("upsert_contact").first.is_visible()
    assert result.locator("ol.planned li").count() == 2 and "unsubscribed" in result.inner_text()
    shot(page, "playground")
    # Nothing was stored: no delivery has that provider id.
    assert server.api("GET", "/api/v1/deliveries?hook=whatsapp").json()["data"] == [] or all(
        "wamid.PLAY" not in json.dumps(d)
        for d in server.api("GET", "/api/v1/deliveries?hook=whatsapp").json()["data"]
    )


def test_a_read_only_key_sees_no_write_controls_and_a_forged_post_is_refused(page, server, people):
    failed = server.zap({"action": "nope"}, key="read-only-1").json()["data"]["delivery_id"]
    server.wait(
        lambda: server.api("GET", f"/api/v1/deliveries/{failed}").json()["data"]["status"] == "failed"
    )
    sign_in(page, server, server.reader)
    page.goto(f"{server.base}/deliveries/{failed}")
    assert page.get_by_role("button", name="Replay").count() == 0
    assert page.get_by_role("link", name="Try in playground").count() == 0
    page.goto(f"{server.base}/sequences/{people['sequences']['Onboarding']['id']}")
    assert page.get_by_role("button").filter(has_text=re.compile("Pause|Unenroll|Activate")).count() == 0
    assert page.get_by_role("link", name="API keys").count() == 0
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    status = page.evaluate(
        """async ([url, token]) => (await fetch(url, {method: 'POST', headers: {'Content-Type':
           'application/x-www-form-urlencoded'}, body: 'csrf_token=' + token})).status""",
        [f"/deliveries/{failed}/replay", token],
    )
    assert status == 403


def test_a_post_without_its_csrf_token_is_refused(page, server):
    failed = server.zap({"action": "nope"}, key="csrf-1").json()["data"]["delivery_id"]
    server.wait(
        lambda: server.api("GET", f"/api/v1/deliveries/{failed}").json()["data"]["status"] == "failed"
    )
    sign_in(page, server)
    page.goto(f"{server.base}/deliveries/{failed}")
    status = page.evaluate(
        """async (url) => (await fetch(url, {method: 'POST', headers: {'Content-Type':
           'application/x-www-form-urlencoded'}, body: ''})).status""",
        f"/deliveries/{failed}/replay",
    )
    assert status == 403
    assert server.api("GET", f"/api/v1/deliveries/{failed}").json()["data"]["replays"] == 0


def test_an_xss_payload_in_a_webhook_renders_inert(page, server):
    payload = {
        "action": "<script>window.__xss = 1</script>",
        "name": '<img src=x onerror="window.__xss = 2">',
        "link": "javascript:window.__xss = 3",
        "long": "L" * 10_000,
    }
    delivery_id = server.zap(payload, key="xss-1").json()["data"]["delivery_id"]
    server.wait(
        lambda: server.api("GET", f"/api/v1/deliveries/{delivery_id}").json()["data"]["status"] == "failed"
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, server)
    page.goto(f"{server.base}/deliveries/{delivery_id}")
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__xss") is None and dialogs == []
    body = page.locator("pre.body").inner_text()
    assert (
        "<script>window.__xss = 1</script>" in body and '<img src=x onerror=\\"window.__xss = 2\\">' in body
    )
    assert page.locator("pre.body img").count() == 0 and page.locator("main script").count() == 0
    box = page.locator("pre.body").bounding_box()
    assert box["width"] <= 1280  # the 10,000-character value wraps instead of widening the page
    page.goto(f"{server.base}/deliveries?q=xss-1")
    assert page.evaluate("window.__xss") is None and dialogs == []


def test_keyboard_navigation_reaches_the_main_actions(page, server):
    page.goto(server.base + "/sign-in")
    assert page.evaluate("document.activeElement.id") == "api_key"  # the key field has the focus
    page.keyboard.type(server.admin)
    page.keyboard.press("Enter")
    page.wait_for_url(server.base + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.goto(server.base + "/")
    for _ in range(8):  # skip link, brand, sign out, then the menu
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Deliveries":
            break
    assert page.evaluate("document.activeElement.textContent") == "Deliveries"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    page.wait_for_url("**/deliveries")
    page.get_by_label("Search").focus()
    page.keyboard.type("kim@example.com")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*q=kim%40example.com.*"))
    # The replay button of a failed delivery is reachable and works from the keyboard.
    failed = server.zap({"action": "nope"}, key="keyboard-1").json()["data"]["delivery_id"]
    server.wait(
        lambda: server.api("GET", f"/api/v1/deliveries/{failed}").json()["data"]["status"] == "failed"
    )
    page.goto(f"{server.base}/deliveries/{failed}")
    page.once("dialog", lambda dialog: dialog.accept())
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Replay":
            break
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*replayed=1$"))


def test_every_page_renders_without_script_or_policy_errors(page, server, people):
    sign_in(page, server)
    pages = {
        "overview": "/",
        "deliveries-all": "/deliveries",
        "replays": "/replays",
        "mappings": "/mappings",
        "sequences": "/sequences",
        "sequence": f"/sequences/{people['sequences']['Onboarding']['id']}",
        "queues": "/queues",
        "contacts": "/contacts",
        "audit": "/audit",
        "keys": "/keys",
        "subscriptions": "/subscriptions",
    }
    for name, path in pages.items():
        page.goto(server.base + path)
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").count() == 1, name
        shot(page, name)
    assert page.problems == []  # no script error, no Content-Security-Policy violation
    page.goto(server.base + "/")
    # The charts are drawn (the day's latency arrives by its own request).
    page.locator(".chart .uplot").nth(3).wait_for(timeout=30_000)  # no string eval: the CSP forbids it
    assert page.problems == []
