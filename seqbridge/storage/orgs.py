"""Organizations and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import api_keys, organizations


class OrgStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get_org_by_name(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(organizations).where(organizations.c.name == name)).mappings().first()
        return dict(row) if row else None

    def get_org(self, org_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(organizations).where(organizations.c.id == org_id)).mappings().first()
        return dict(row) if row else None

    def insert_org(self, org_id: str, name: str, created_at: datetime) -> None:
        self.conn.execute(insert(organizations).values(id=org_id, name=name, created_at=created_at))

    def list_orgs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(organizations).order_by(organizations.c.name)).mappings()
        return [dict(r) for r in rows]


class KeyStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_key(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(api_keys).values(**row))

    def find_active_key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        query = (
            select(api_keys, organizations.c.name.label("org_name"))
            .join(organizations, organizations.c.id == api_keys.c.org_id)
            .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        )
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def list_keys(self, org_id: str | None = None) -> list[dict[str, Any]]:
        query = (
            select(
                api_keys.c.id,
                api_keys.c.org_id,
                organizations.c.name.label("org_name"),
                api_keys.c.name,
                api_keys.c.prefix,
                api_keys.c.scopes,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
            )
            .join(organizations, organizations.c.id == api_keys.c.org_id)
            .order_by(organizations.c.name, api_keys.c.created_at)
        )
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return dict(row) if row else None

    def revoke_key(self, key_id: str, revoked_at: datetime) -> bool:
        result = self.conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=revoked_at)
        )
        return result.rowcount == 1
