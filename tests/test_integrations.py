"""The Zapier app and the n8n package, built and tested with their own tooling against a real
Seqbridge (``seqbridge serve``, on SQLite and on PostgreSQL) on loopback.

Node.js 22 and the npm packages come from the npm registry through ``integrations/with-node``
and ``integrations/install-deps``, cached in ``~/.cache/seqbridge`` (``SEQBRIDGE_CACHE``): a
later run, a fresh clone's included, links the installed trees and downloads nothing. The n8n
end-to-end test (it installs n8n itself, ~1.7 GB) runs in ``scripts/test-n8n``, not here.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
INTEGRATIONS = ROOT / "integrations"
WITH_NODE = str(INTEGRATIONS / "with-node")
ORG = "seqbridge-integrations"
_installed: set[Path] = set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900, tool: str = WITH_NODE
):
    """Run an npm-side command with the pinned Node; fail with its output."""
    done = subprocess.run(
        [tool, *args],
        cwd=cwd,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done


def _npm_ci(package: Path) -> None:
    """The package's node_modules, as its lockfile says: linked from the cached tree
    ``integrations/install-deps`` made (``npm ci`` only for a lockfile no run installed yet)."""
    if package not in _installed:
        _tool([str(package)], INTEGRATIONS, timeout=1800, tool=str(INTEGRATIONS / "install-deps"))
        _installed.add(package)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seqbridge(request, tmp_path_factory) -> Iterator[dict[str, str]]:
    """``seqbridge serve`` on loopback, as the integrations' tests need it: the worker polling
    every 0.2 s, loopback hook targets allowed, and the dead-end hook for delivery.dead."""
    if request.param not in os.environ.get("SEQBRIDGE_TEST_BACKENDS", "sqlite,postgresql"):
        pytest.skip(f"{request.param} excluded by SEQBRIDGE_TEST_BACKENDS")
    from tests.conftest import fresh_database

    directory = tmp_path_factory.mktemp(f"integrations-{request.param}")
    databases = fresh_database(request, request.param, directory)
    url = next(databases)
    port = _free_port()
    env = {
        **os.environ,
        "SEQBRIDGE_DATABASE_URL": url,
        "SEQBRIDGE_MAPPINGS_DIR": str(INTEGRATIONS / "testing" / "mappings"),
        "SEQBRIDGE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "SEQBRIDGE_ALLOW_PRIVATE_TARGETS": "true",
        "SEQBRIDGE_PROCESSOR_POLL_SECONDS": "0.2",
        "SEQBRIDGE_DELIVERY_MAX_ATTEMPTS": "1",
        "SEQBRIDGE_TEST_ORG": ORG,
        "SEQBRIDGE_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(directory / "metrics"),
    }
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "keys",
            "create",
            "--org",
            ORG,
            "--scope",
            "*",
            "--name",
            "integrations",
        ],
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()[-1]
    log = directory / "serve.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        cwd=directory,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe nobody reads: a full pipe would block the server's logging.
        stderr=log.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass  # not listening yet, or too busy starting to answer
            assert time.monotonic() < deadline and proc.poll() is None, (
                f"seqbridge serve did not start:\n{log.read_text()[-4000:]}"
            )
            time.sleep(0.2)
        yield {"SEQBRIDGE_URL": base, "SEQBRIDGE_API_KEY": key, "SEQBRIDGE_SERVE_LOG": str(log)}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        databases.close()


def test_zapier_app_passes_its_jest_suite_against_seqbridge(seqbridge, tmp_path):
    package = INTEGRATIONS / "zapier"
    _npm_ci(package)
    report = tmp_path / "jest.json"
    done = subprocess.run(
        [WITH_NODE, "npx", "jest", "--runInBand", "--json", f"--outputFile={report}"],
        cwd=package,
        env={**os.environ, **seqbridge},
        capture_output=True,
        text=True,
        timeout=900,
    )
    serve_log = Path(seqbridge["SEQBRIDGE_SERVE_LOG"]).read_text()[-4000:]
    assert done.returncode == 0 and report.exists(), f"{done.stderr[-8000:]}\nseqbridge serve:\n{serve_log}"
    results = json.loads(report.read_text())
    names = {t["title"] for suite in results["testResults"] for t in suite["assertionResults"]}
    assert results["numFailedTests"] == 0 and results["numPassedTests"] >= 20, results["numTotalTests"]
    # Every trigger, action and search ran for real.
    for title in (
        "New Enrollment",
        "Enrollment Completed",
        "Enrollment Exited",
        "Contact Unsubscribed",
        "Webhook Delivery Failed",
        "Pause or Resume Enrollment",
    ):
        assert title in names, title
    # What the tests made is in this server (not in one jest started itself).
    me = requests.get(
        f"{seqbridge['SEQBRIDGE_URL']}/api/v1/me",
        headers={"Authorization": f"Bearer {seqbridge['SEQBRIDGE_API_KEY']}"},
        timeout=10,
    ).json()["data"]
    assert me["organization_name"] == ORG
    contacts = requests.get(
        f"{seqbridge['SEQBRIDGE_URL']}/api/v1/contacts?limit=1",
        headers={"Authorization": f"Bearer {seqbridge['SEQBRIDGE_API_KEY']}"},
        timeout=10,
    ).json()
    assert contacts["meta"]["total"] >= 10


def test_zapier_validate_is_clean():
    package = INTEGRATIONS / "zapier"
    _npm_ci(package)
    done = _tool(["npx", "zapier-platform", "validate", "--without-style"], package)
    assert "No structural errors found" in done.stdout, done.stdout


def test_n8n_package_builds_lints_and_passes_its_unit_tests():
    package = INTEGRATIONS / "n8n"
    _npm_ci(package)
    shutil.rmtree(package / "dist", ignore_errors=True)
    _tool(["npm", "run", "lint"], package)
    done = _tool(["npm", "test"], package)
    assert "# fail 0" in done.stdout and "# pass " in done.stdout, done.stdout[-3000:]
    for built in (
        "credentials/SeqbridgeApi.credentials.js",
        "nodes/Seqbridge/Seqbridge.node.js",
        "nodes/SeqbridgeTrigger/SeqbridgeTrigger.node.js",
        "nodes/Seqbridge/seqbridge.svg",
    ):
        assert (package / "dist" / built).exists(), built
    manifest = json.loads((package / "package.json").read_text())
    assert "n8n-community-node-package" in manifest["keywords"]
    assert not manifest.get("dependencies"), "community nodes ship without runtime dependencies"
