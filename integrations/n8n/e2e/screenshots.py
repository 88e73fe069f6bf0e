"""Screenshots of the Seqbridge nodes in the real n8n editor, for the README (docs/integrations/).

Starts a Seqbridge (SQLite, loopback) with a sequence and an event queue, the pinned n8n (the
install ``scripts/test-n8n`` keeps in ``$SEQBRIDGE_CACHE/n8n/``) with this package through
N8N_CUSTOM_EXTENSIONS, sets up n8n's owner and a Seqbridge credential through n8n's REST API,
creates a workflow (Seqbridge Trigger "enrollment completed" → Seqbridge "Enroll" → Seqbridge
"Update contact"),
and photographs the canvas and the nodes' panels in Debian's chromium driven by Playwright.

Run it with ``scripts/n8n-screenshots`` (which builds the package first). Needs the
``playwright`` Python package (never ``playwright install``: it drives /usr/bin/chromium).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from playwright.sync_api import Page, sync_playwright

PACKAGE = Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent.parent
WITH_NODE = str(ROOT / "integrations" / "with-node")
CACHE = Path(os.environ.get("SEQBRIDGE_CACHE", Path.home() / ".cache" / "seqbridge"))
OUT = ROOT / "docs" / "integrations"
ORG = "Acme"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, what: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit(f"{what} did not answer {url}:\n{log.read_text()[-4000:]}")


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def n8n_binary() -> Path:
    """The pinned n8n, installed as e2e/n8n.test.js installs it (a folder per lockfile hash)."""
    runtime = PACKAGE / "e2e" / "runtime"
    digest = hashlib.sha256((runtime / "package-lock.json").read_bytes()).hexdigest()[:16]
    home = CACHE / "n8n" / digest
    if not (home / ".installed").exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(runtime / name, home / name)
        subprocess.run(
            [WITH_NODE, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=home, check=True
        )
        (home / ".installed").write_text(time.strftime("%FT%TZ"))
    return home / "node_modules" / ".bin" / "n8n"


def seqbridge_scene(base: str, key: str) -> dict[str, str]:
    """Two active sequences and an event queue: what the dropdowns will list."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {key}"

    def post(path: str, body: dict) -> dict:
        answer = api.post(f"{base}{path}", json=body, timeout=30)
        assert answer.ok, answer.text
        return answer.json()["data"]

    ids = {}
    for name in ("Welcome", "Upsell"):
        sequence = post("/api/v1/sequences", {"name": name, "from_email": "hello@example.com"})
        post(
            f"/api/v1/sequences/{sequence['id']}/steps",
            {"channel": "email", "delay_days": 1, "subject": "Hi", "body": "Hello"},
        )
        api.patch(
            f"{base}/api/v1/sequences/{sequence['id']}", json={"status": "active"}, timeout=30
        ).raise_for_status()
        ids[name.lower()] = sequence["id"]
    post("/api/v1/sequences", {"name": "Win-back"})
    post("/api/v1/event-queues", {"name": "Onboarding"})
    return ids


def node(name: str, kind: str, x: int, parameters: dict, credential_id: str, **extra: object) -> dict:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "name": name,
        "type": f"CUSTOM.{kind}",
        "typeVersion": 1,
        "position": [x, 0],
        "parameters": parameters,
        "credentials": {"seqbridgeApi": {"id": credential_id, "name": "Seqbridge (Acme)"}},
        **extra,
    }


def workflow(credential_id: str, scene: dict[str, str]) -> dict:
    """When a contact completes Welcome, enroll it in Upsell and tag it."""
    return {
        "name": "Welcome done → Upsell",
        "active": False,
        "settings": {"executionOrder": "v1"},
        "nodes": [
            node(
                "When Welcome completes",
                "seqbridgeTrigger",
                0,
                {"event": "enrollment.completed", "sequenceId": scene["welcome"]},
                credential_id,
                webhookId=str(uuid.uuid5(uuid.NAMESPACE_URL, "webhook")),
            ),
            node(
                "Enroll in Upsell",
                "seqbridge",
                280,
                {
                    "resource": "enrollment",
                    "operation": "enroll",
                    "sequenceId": scene["upsell"],
                    "identifyBy": "contactId",
                    "contactId": "={{ $json.data.contact.id }}",
                    "options": {"enrollmentSource": "n8n", "ifEnrolled": "return"},
                },
                credential_id,
            ),
            node(
                "Tag the contact",
                "seqbridge",
                560,
                {
                    "resource": "contact",
                    "operation": "update",
                    "contactId": "={{ $json.contact_id }}",
                    "updateFields": {"tags": "upsell"},
                },
                credential_id,
            ),
        ],
        "connections": {
            "When Welcome completes": {"main": [[{"node": "Enroll in Upsell", "type": "main", "index": 0}]]},
            "Enroll in Upsell": {"main": [[{"node": "Tag the contact", "type": "main", "index": 0}]]},
        },
    }


def open_node(page: Page, name: str) -> None:
    page.locator(f'[data-test-id="canvas-node"][data-node-name="{name}"]').dblclick()
    page.locator('[data-test-id="ndv"]').first.wait_for(state="visible", timeout=60000)


def wait_for_value(page: Page, text: str) -> None:
    """Until the open panel shows ``text`` (an option n8n loaded from Seqbridge); else a picture
    of what it shows instead, for the error."""
    inputs = page.locator('[data-test-id="ndv"] input')
    deadline = time.monotonic() + 60
    while not any(inputs.nth(i).input_value() == text for i in range(inputs.count())):
        if time.monotonic() > deadline:
            failed = Path(tempfile.gettempdir()) / "n8n-screenshots-failed.png"
            page.screenshot(path=str(failed))
            raise TimeoutError(f"the panel never showed {text!r} (see {failed})")
        page.wait_for_timeout(250)
    page.mouse.move(1300, 860)  # off every node: no hover tooltip in the picture


def close_node(page: Page) -> None:
    page.keyboard.press("Escape")
    page.locator('[data-test-id="ndv"]').first.wait_for(state="hidden", timeout=30000)


def main() -> None:
    n8n = n8n_binary()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="n8n-shots-"))
    try:
        sb_port, n8n_port = free_port(), free_port()
        sb_env = {
            **os.environ,
            "SEQBRIDGE_DATABASE_URL": f"sqlite:///{work}/seqbridge.db",
            "SEQBRIDGE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "SEQBRIDGE_ALLOW_PRIVATE_TARGETS": "true",
            "SEQBRIDGE_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        }
        seqbridge = os.environ.get("SEQBRIDGE_BIN", str(ROOT / ".venv" / "bin" / "seqbridge"))
        created = subprocess.run(
            [seqbridge, "keys", "create", "--org", ORG, "--scope", "*", "--name", "n8n"],
            env=sb_env,
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        sb_base, n8n_base = f"http://127.0.0.1:{sb_port}", f"http://127.0.0.1:{n8n_port}"
        n8n_env = {
            **os.environ,
            "N8N_USER_FOLDER": str(work / "n8n"),
            "N8N_CUSTOM_EXTENSIONS": str(PACKAGE / "dist"),
            "N8N_ENCRYPTION_KEY": "screenshots-only-not-a-secret-0123",
            "N8N_PORT": str(n8n_port),
            "N8N_LISTEN_ADDRESS": "127.0.0.1",
            "N8N_HOST": "127.0.0.1",
            "WEBHOOK_URL": f"{n8n_base}/",
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_PERSONALIZATION_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            "N8N_RUNNERS_ENABLED": "false",
            "N8N_SECURE_COOKIE": "false",
            "N8N_HIRING_BANNER_ENABLED": "false",
            "N8N_LOG_LEVEL": "warn",
        }
        serve = [seqbridge, "serve", "--host", "127.0.0.1", "--port", str(sb_port), "--workers", "1"]
        with (
            process(serve, sb_env, work / "seqbridge.log") as sb,
            process([WITH_NODE, str(n8n), "start"], n8n_env, work / "n8n.log") as n8n_proc,
        ):
            wait_for(f"{sb_base}/readyz", "seqbridge serve", sb, work / "seqbridge.log")
            scene = seqbridge_scene(sb_base, key)
            # /healthz answers before the REST controllers are mounted; /rest/settings after.
            wait_for(f"{n8n_base}/rest/settings", "n8n", n8n_proc, work / "n8n.log", timeout=600)
            shoot(n8n_base, sb_base, key, scene)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def shoot(n8n_base: str, sb_base: str, key: str, scene: dict[str, str]) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        rest = context.request

        def call(path: str, body: dict) -> dict:
            # n8n mounts its REST controllers a while after it starts answering: until then a
            # route is a 404 or the editor's HTML. Retry those; anything else must succeed.
            deadline = time.monotonic() + 300
            while True:
                answer = rest.post(f"{n8n_base}/rest{path}", data=body)
                if answer.ok and "json" in answer.headers.get("content-type", ""):
                    return answer.json()["data"]
                assert answer.status in (200, 404) and time.monotonic() < deadline, answer.text()
                time.sleep(1)

        owner = {
            "email": "owner@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "password": "Screenshots-0nly",
        }
        call("/owner/setup", owner)
        credential = call(
            "/credentials",
            {"name": "Seqbridge (Acme)", "type": "seqbridgeApi", "data": {"baseUrl": sb_base, "apiKey": key}},
        )
        workflow_id = call("/workflows", workflow(credential["id"], scene))["id"]

        page = context.new_page()
        page.goto(f"{n8n_base}/workflow/{workflow_id}")
        page.locator('[data-test-id="canvas-node"]').nth(2).wait_for(timeout=120000)
        page.wait_for_timeout(1500)  # the canvas fits the view after the nodes render
        page.screenshot(path=str(OUT / "n8n-workflow.png"))

        open_node(page, "Enroll in Upsell")
        # The Sequence dropdown shows the name n8n loaded from Seqbridge (getSequences).
        wait_for_value(page, "Upsell")
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "n8n-enroll-node.png"))
        close_node(page)

        open_node(page, "When Welcome completes")
        wait_for_value(page, "Welcome")
        page.wait_for_timeout(500)
        page.screenshot(path=str(OUT / "n8n-trigger-node.png"))
        close_node(page)
        browser.close()
    print(json.dumps({"screenshots": sorted(str(p.relative_to(ROOT)) for p in OUT.glob("n8n-*.png"))}))


if __name__ == "__main__":
    main()
