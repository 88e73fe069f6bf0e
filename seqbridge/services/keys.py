"""Organizations, API keys and scopes.

Keys are ``rk_live_`` followed by 43 characters of URL-safe randomness (256 bits). Only their
SHA-256 is stored: with that much entropy a slow password hash adds nothing, and a fast hash
keeps authentication to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from seqbridge.audit import AuditTag, record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import BadRequest, Forbidden, NotFound, Unauthorized
from seqbridge.services.common import new_id
from seqbridge.storage.db import Database

KEY_PREFIX = "rk_live_"

#: Every scope, by area. ``<area>:write`` implies ``<area>:read``; ``*`` grants all.
SCOPE_AREAS = ("sequences", "automations", "contacts", "hooks")
SCOPES = (
    *(f"{area}:{level}" for area in SCOPE_AREAS for level in ("read", "write")),
    "audit:read",
)
ALL_SCOPES = "*"

CLI_ACTOR = Actor(ActorType.CLI, "cli")


def scope_granted(granted: frozenset[str] | set[str], required: str) -> bool:
    """True if ``granted`` covers ``required`` (``X:write`` covers ``X:read``; ``*`` covers all)."""
    if ALL_SCOPES in granted or required in granted:
        return True
    area, _, level = required.partition(":")
    return level == "read" and f"{area}:write" in granted


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    id: str
    org_id: str
    org_name: str
    name: str
    prefix: str
    scopes: list[str]
    raw_key: str  # shown once, never stored


@dataclass(frozen=True)
class Principal:
    """An authenticated API key."""

    key_id: str
    org_id: str
    org_name: str
    scopes: frozenset[str]


def _mint(tx, caller: Caller, name: str, scopes: list[str], now) -> tuple[str, str, str]:
    """Store a new key of the caller's organization (its hash only) and audit it as the caller's
    doing; return (id, prefix, the raw key)."""
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id()
    prefix = raw_key[: len(KEY_PREFIX) + 4]
    tx.keys.insert_key(
        {
            "id": key_id,
            "org_id": caller.org_id,
            "name": name,
            "prefix": prefix,
            "key_hash": hash_key(raw_key),
            "scopes": scopes,
            "created_at": now,
        }
    )
    record(
        tx,
        caller,
        tag_for(caller, "api_key", "created"),
        "api_key",
        key_id,
        {"name": name, "prefix": prefix, "scopes": scopes},
        now,
    )
    return key_id, prefix, raw_key


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s != ALL_SCOPES and s not in SCOPES]
    if unknown:
        raise BadRequest(
            f"unknown scope(s): {', '.join(unknown)}; valid scopes are {', '.join((*SCOPES, ALL_SCOPES))}",
            code="unknown_scope",
        )
    if not scopes:
        raise BadRequest("a key needs at least one scope", code="missing_scope")
    return sorted(set(scopes))


class KeyService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def ensure_org(self, name: str) -> dict[str, Any]:
        """Return the organization called ``name``, creating it (and its audit chain) if needed."""
        name = name.strip()
        if not name or len(name) > 200:
            raise BadRequest("an organization name is 1 to 200 characters", code="invalid_org_name")
        with self.db.transaction() as tx:
            org = tx.orgs.get_org_by_name(name)
            if org:
                return org
            now = self.clock.now()
            org_id = new_id()
            tx.orgs.insert_org(org_id, name, now)
            tx.audit.start_chain(org_id)
            record(
                tx,
                Caller(org_id, CLI_ACTOR),
                AuditTag.CLI_ORGANIZATION_CREATED,
                "organization",
                org_id,
                {"name": name},
                now,
            )
            return tx.orgs.get_org(org_id)

    def create_key(self, org_name: str, scopes: list[str], name: str = "default") -> CreatedKey:
        """Create an API key for ``org_name`` (creating the organization if needed).

        Raises :class:`BadRequest` for unknown or missing scopes.
        """
        scopes = _check_scopes(scopes)
        org = self.ensure_org(org_name)
        with self.db.transaction() as tx:
            key_id, prefix, raw_key = _mint(tx, Caller(org["id"], CLI_ACTOR), name, scopes, self.clock.now())
        return CreatedKey(key_id, org["id"], org["name"], name, prefix, scopes, raw_key)

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key by id. Raises :class:`NotFound` if there is no such active key."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            key = tx.keys.get_key(key_id)
            if key is None or not tx.keys.revoke_key(key_id, now):
                raise NotFound(f"no active API key with id {key_id}")
            record(
                tx,
                Caller(key["org_id"], CLI_ACTOR),
                AuditTag.CLI_API_KEY_REVOKED,
                "api_key",
                key_id,
                {"name": key["name"], "prefix": key["prefix"]},
                now,
            )
            return key

    def list_keys(self, org_name: str | None = None) -> list[dict[str, Any]]:
        """Every key (without its secret), optionally of one organization."""
        with self.db.transaction(write=False) as tx:
            org_id = None
            if org_name is not None:
                org = tx.orgs.get_org_by_name(org_name)
                if org is None:
                    raise NotFound(f"no organization named {org_name!r}")
                org_id = org["id"]
            return tx.keys.list_keys(org_id)

    def describe(self, caller: Caller) -> dict[str, Any]:
        """Who-am-I for the calling key: its id and name, its organization's id and name, its scopes.

        Raises :class:`Unauthorized` if the key was revoked since the request authenticated.
        """
        with self.db.transaction(write=False) as tx:
            key = tx.keys.get_key(caller.actor.id)
            org = tx.orgs.get_org(caller.org_id)
        if key is None or org is None or key["revoked_at"] is not None:
            raise Unauthorized("The API key is not valid or has been revoked.", code="invalid_api_key")
        return {
            "key_id": key["id"],
            "key_name": key["name"],
            "organization_id": org["id"],
            "organization_name": org["name"],
            "scopes": sorted(caller.scopes),
        }

    def authenticate(self, raw_key: str | None) -> Principal:
        """Resolve a bearer key. Raises :class:`Unauthorized` if it is missing, unknown or revoked."""
        if not raw_key:
            raise Unauthorized()
        if not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 200:
            raise Unauthorized("The API key is not valid.", code="invalid_api_key")
        with self.db.transaction(write=False) as tx:
            key = tx.keys.find_active_key_by_hash(hash_key(raw_key))
        if key is None:
            raise Unauthorized("The API key is not valid or has been revoked.", code="invalid_api_key")
        return Principal(key["id"], key["org_id"], key["org_name"], frozenset(key["scopes"]))


# The console's key management -------------------------------------------------------------------
#
# Who may manage keys: only a caller whose key has every scope (``*``). Keys are the
# organization's root of trust and the API has no scope that covers them, so a narrower key
# can neither see the others nor mint new ones. A new key never gets a scope its creator lacks.


def require_all_scopes(caller: Caller) -> None:
    """Raises :class:`Forbidden` ``keys_manage_denied`` unless the caller's key has ``*``."""
    if ALL_SCOPES not in caller.scopes:
        raise Forbidden(
            "Only a key with every scope (*) can manage API keys.",
            code="keys_manage_denied",
            details={"required_scope": ALL_SCOPES},
        )


class OrgKeyService:
    """The organization's keys, managed by one of its own keys (the console's Keys page)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        """Every key of the caller's organization (without secrets), oldest first."""
        require_all_scopes(caller)
        with self.db.transaction(write=False) as tx:
            return tx.keys.list_keys(caller.org_id)

    def create(self, caller: Caller, name: str, scopes: list[str]) -> CreatedKey:
        """A new key for the caller's organization; its raw value is in the answer only.

        Raises :class:`Forbidden`, and :class:`BadRequest` for a bad name or scope."""
        require_all_scopes(caller)
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise BadRequest("A key's name is 1 to 200 characters.", code="invalid_key_name")
        scopes = _check_scopes(scopes)
        beyond = [s for s in scopes if s != ALL_SCOPES and not scope_granted(caller.scopes, s)]
        if beyond or (ALL_SCOPES in scopes and ALL_SCOPES not in caller.scopes):
            raise Forbidden(
                "A key cannot grant scopes its creator lacks.",
                code="scope_not_held",
                details={"scopes": beyond or [ALL_SCOPES]},
            )
        with self.db.transaction() as tx:
            org = tx.orgs.get_org(caller.org_id)
            key_id, prefix, raw_key = _mint(tx, caller, name, scopes, self.clock.now())
        return CreatedKey(key_id, caller.org_id, org["name"], name, prefix, scopes, raw_key)

    def revoke(self, caller: Caller, key_id: str) -> dict[str, Any]:
        """Revoke one of the organization's keys and end its console sessions.

        Raises :class:`Forbidden`, or :class:`NotFound` for an unknown, revoked or foreign key."""
        require_all_scopes(caller)
        now = self.clock.now()
        with self.db.transaction() as tx:
            key = tx.keys.get_key(key_id)
            if key is None or key["org_id"] != caller.org_id or not tx.keys.revoke_key(key_id, now):
                raise NotFound(f"No active API key with id {key_id}.", code="api_key_not_found")
            sessions = tx.sessions.end_sessions_of_key(key_id, now)
            record(
                tx,
                caller,
                tag_for(caller, "api_key", "revoked"),
                "api_key",
                key_id,
                {"name": key["name"], "prefix": key["prefix"], "sessions_ended": sessions},
                now,
            )
            return {**key, "revoked_at": now}
