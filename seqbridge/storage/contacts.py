"""Contacts (persons), their tags, and companies (accounts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from seqbridge.storage.schema import companies, contact_tags, contacts

#: Contact columns that list filters may match exactly.
CONTACT_FILTER_COLUMNS = (
    "status",
    "contact_type",
    "source",
    "job_title",
    "city",
    "state",
    "country",
    "company_id",
    "phone",
    "first_name",
    "last_name",
)

#: Company columns that list filters may match exactly.
COMPANY_FILTER_COLUMNS = (
    "name",
    "account_type",
    "industry",
    "is_customer",
    "is_supplier",
    "city",
    "state",
    "country",
)


_ELIGIBILITY = (
    contacts.c.id,
    contacts.c.email_normalized,
    contacts.c.status,
    contacts.c.converted,
    contacts.c.has_open_ticket,
    contacts.c.company_id,
)


def _page(conn: Connection, query: Select, order_by: Iterable, limit: int, offset: int):
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(query.order_by(*order_by).limit(limit).offset(offset)).mappings()
    return [dict(r) for r in rows], total


class ContactStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_contact(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(contacts).values(**row))

    def get_contact(self, org_id: str, contact_id: str) -> dict[str, Any] | None:
        row = (
            self.conn.execute(
                select(contacts).where(contacts.c.org_id == org_id, contacts.c.id == contact_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def find_contact_by_email(self, org_id: str, email_normalized: str) -> dict[str, Any] | None:
        query = select(contacts).where(
            contacts.c.org_id == org_id, contacts.c.email_normalized == email_normalized
        )
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def eligibility_by_ids(self, org_id: str, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
        """What enrollment needs of each contact (id, email, status, flags, company), by id, in one query."""
        if not contact_ids:
            return {}
        query = select(*_ELIGIBILITY).where(contacts.c.org_id == org_id, contacts.c.id.in_(contact_ids))
        return {r["id"]: dict(r) for r in self.conn.execute(query).mappings()}

    def eligibility_by_emails(self, org_id: str, emails_normalized: list[str]) -> dict[str, dict[str, Any]]:
        """The same, by lower-cased email."""
        if not emails_normalized:
            return {}
        query = select(*_ELIGIBILITY).where(
            contacts.c.org_id == org_id, contacts.c.email_normalized.in_(emails_normalized)
        )
        return {r["email_normalized"]: dict(r) for r in self.conn.execute(query).mappings()}

    def find_contacts_by_phone(self, org_id: str, phone: str) -> list[dict[str, Any]]:
        query = (
            select(contacts)
            .where(contacts.c.org_id == org_id, contacts.c.phone == phone)
            .order_by(contacts.c.created_at, contacts.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def update_contact(self, org_id: str, contact_id: str, values: dict[str, Any]) -> bool:
        result = self.conn.execute(
            update(contacts).where(contacts.c.org_id == org_id, contacts.c.id == contact_id).values(**values)
        )
        return result.rowcount == 1

    def delete_contact(self, org_id: str, contact_id: str) -> bool:
        result = self.conn.execute(
            delete(contacts).where(contacts.c.org_id == org_id, contacts.c.id == contact_id)
        )
        return result.rowcount == 1

    def list_contacts(
        self, org_id: str, filters: dict[str, Any], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        query = select(contacts).where(contacts.c.org_id == org_id)
        for name in CONTACT_FILTER_COLUMNS:
            if filters.get(name) is not None:
                query = query.where(contacts.c[name] == filters[name])
        if filters.get("email") is not None:
            query = query.where(contacts.c.email_normalized == filters["email"])
        if filters.get("converted") is not None:
            query = query.where(contacts.c.converted == filters["converted"])
        if filters.get("tag") is not None:
            query = query.where(
                exists().where(
                    contact_tags.c.contact_id == contacts.c.id, contact_tags.c.tag == filters["tag"]
                )
            )
        return _page(self.conn, query, (contacts.c.created_at, contacts.c.id), limit, offset)

    # Tags -------------------------------------------------------------------------------

    def tags_for(self, contact_ids: list[str]) -> dict[str, list[str]]:
        """Map each contact id to its sorted tags, in one query."""
        found: dict[str, list[str]] = defaultdict(list)
        if not contact_ids:
            return found
        query = (
            select(contact_tags.c.contact_id, contact_tags.c.tag)
            .where(contact_tags.c.contact_id.in_(contact_ids))
            .order_by(contact_tags.c.tag)
        )
        for contact_id, tag in self.conn.execute(query):
            found[contact_id].append(tag)
        return found

    def add_tags(self, org_id: str, contact_id: str, tags: Iterable[str]) -> list[str]:
        """Add the tags the contact does not have yet; return those that were new."""
        existing = set(self.tags_for([contact_id]).get(contact_id, []))
        new = sorted(set(tags) - existing)
        if new:
            self.conn.execute(
                insert(contact_tags), [{"contact_id": contact_id, "org_id": org_id, "tag": t} for t in new]
            )
        return new

    def remove_tags(self, contact_id: str, tags: Iterable[str]) -> None:
        tags = list(tags)
        if tags:
            self.conn.execute(
                delete(contact_tags).where(
                    contact_tags.c.contact_id == contact_id, contact_tags.c.tag.in_(tags)
                )
            )


class CompanyStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_company(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(companies).values(**row))

    def get_company(self, org_id: str, company_id: str) -> dict[str, Any] | None:
        query = select(companies).where(companies.c.org_id == org_id, companies.c.id == company_id)
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def update_company(self, org_id: str, company_id: str, values: dict[str, Any]) -> bool:
        result = self.conn.execute(
            update(companies)
            .where(companies.c.org_id == org_id, companies.c.id == company_id)
            .values(**values)
        )
        return result.rowcount == 1

    def delete_company(self, org_id: str, company_id: str) -> bool:
        result = self.conn.execute(
            delete(companies).where(companies.c.org_id == org_id, companies.c.id == company_id)
        )
        return result.rowcount == 1

    def list_companies(
        self, org_id: str, filters: dict[str, Any], limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        query = select(companies).where(companies.c.org_id == org_id)
        for name in COMPANY_FILTER_COLUMNS:
            if filters.get(name) is not None:
                query = query.where(companies.c[name] == filters[name])
        return _page(self.conn, query, (companies.c.created_at, companies.c.id), limit, offset)
