"""API keys: format, hashing, listing, revocation, and the CLI that manages them."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from seqbridge.cli import main
from seqbridge.errors import BadRequest, NotFound
from seqbridge.storage.schema import api_keys, organizations

KEY_FORMAT = re.compile(r"rk_live_[A-Za-z0-9_\-]{43}")


def test_created_key_is_random_shown_once_and_stored_hashed(services):
    first = services.keys.create_key("acme", ["contacts:read"], "zapier")
    second = services.keys.create_key("acme", ["contacts:read"], "n8n")
    assert KEY_FORMAT.fullmatch(first.raw_key) and KEY_FORMAT.fullmatch(second.raw_key)
    assert first.raw_key != second.raw_key
    assert first.org_id == second.org_id  # the organization is created once
    with services.db.engine.connect() as conn:
        rows = conn.execute(select(api_keys)).mappings().all()
    stored = {r["id"]: r for r in rows}
    assert stored[first.id]["key_hash"] == hashlib.sha256(first.raw_key.encode()).hexdigest()
    assert first.raw_key not in repr(rows)
    assert stored[first.id]["prefix"] == first.raw_key[:12]


def test_listing_never_includes_the_secret(services):
    created = services.keys.create_key("acme", ["*"], "ops")
    listed = services.keys.list_keys("acme")
    assert [k["id"] for k in listed] == [created.id]
    assert "key_hash" not in listed[0]
    assert created.raw_key not in repr(listed)
    with pytest.raises(NotFound):
        services.keys.list_keys("no-such-org")


def test_revoked_key_gets_401(services, client):
    created = services.keys.create_key("acme", ["contacts:read"])
    headers = {"Authorization": f"Bearer {created.raw_key}"}
    assert client.get("/api/v1/contacts", headers=headers).status_code == 200
    services.keys.revoke_key(created.id)
    response = client.get("/api/v1/contacts", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_api_key"
    with pytest.raises(NotFound):
        services.keys.revoke_key(created.id)  # already revoked


def test_unknown_scopes_are_refused(services):
    with pytest.raises(BadRequest, match="unknown scope"):
        services.keys.create_key("acme", ["contacts:delete"])
    with pytest.raises(BadRequest, match="at least one scope"):
        services.keys.create_key("acme", [])


def test_key_creation_and_revocation_are_audited(services):
    created = services.keys.create_key("acme", ["contacts:write"], "crm")
    services.keys.revoke_key(created.id)
    with services.db.engine.connect() as conn:
        org_id = conn.execute(select(organizations.c.id).where(organizations.c.name == "acme")).scalar_one()
    from seqbridge.context import Actor, ActorType, Caller

    page = services.audit_log.list_events(Caller(org_id, Actor(ActorType.CLI, "cli")), order="asc")
    tags = [e["tag"] for e in page.items]
    assert tags == ["cli:organization:created", "cli:api_key:created", "cli:api_key:revoked"]
    assert page.items[1]["data"] == {"name": "crm", "prefix": created.prefix, "scopes": ["contacts:write"]}
    assert created.raw_key not in repr(page.items)


# The CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(database_url, monkeypatch):
    monkeypatch.setenv("SEQBRIDGE_DATABASE_URL", database_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_cli_keys_create_prints_the_key_alone_on_the_last_line(cli, client):
    result = cli("keys", "create", "--org", "Acme Inc", "--scope", "contacts:read", "--scope", "audit:read")
    assert result.exit_code == 0, result.output
    last_line = result.output.rstrip("\n").splitlines()[-1]
    assert KEY_FORMAT.fullmatch(last_line)
    assert "audit:read contacts:read" in result.output
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {last_line}"})
    assert me.status_code == 200
    assert me.json["data"]["scopes"] == ["audit:read", "contacts:read"]


def test_cli_list_and_revoke(cli, client):
    key = cli("keys", "create", "--org", "acme", "--scope", "*", "--name", "laptop").output.splitlines()[-1]
    listing = cli("keys", "list")
    assert "laptop" in listing.output and "active" in listing.output
    assert key not in listing.output
    key_id = listing.output.splitlines()[1].split()[0]
    revoked = cli("keys", "revoke", key_id)
    assert revoked.exit_code == 0 and key_id in revoked.output
    assert "revoked" in cli("keys", "list").output
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    again = cli("keys", "revoke", key_id)
    assert again.exit_code == 1 and "no active API key" in again.output


def test_cli_rejects_an_unknown_scope(cli):
    result = cli("keys", "create", "--org", "acme", "--scope", "everything")
    assert result.exit_code == 2
    assert "everything" in result.output


@pytest.mark.slow
def test_console_script_keys_create_in_a_real_process(database_url):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqbridge",
            "--database-url",
            database_url,
            "keys",
            "create",
            "--org",
            "proc",
            "--scope",
            "sequences:write",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert KEY_FORMAT.fullmatch(result.stdout.rstrip("\n").splitlines()[-1])
