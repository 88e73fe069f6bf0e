"""Contacts (persons), their tags, and companies (accounts)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, not_, select, update
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

    def find_contacts_by_attribute(self, org_id: str, name: str, value: str) -> list[dict[str, Any]]:
        """Contacts whose custom attribute ``name`` is ``value`` (e.g. a CRM's own id), oldest first."""
        query = (
            select(contacts)
            .where(contacts.c.org_id == org_id, contacts.c.attributes[name].as_string() == value)
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

    def match_contacts(
        self,
        org_id: str,
        *,
        contact_filter: dict[str, Any] | None,
        customer_filter: dict[str, Any] | None,
        after_id: str | None,
        eligible: bool | None,
        live_in_sequence: tuple[str, bool] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Contacts matching a filter, in id order after ``after_id``, at most ``limit``.

        ``eligible`` True keeps only contacts that may be enrolled, False only those that may not,
        None both. ``live_in_sequence`` = (sequence_id, has_live) keeps only contacts that do
        (True) or do not (False) have a live enrollment in that sequence. The filters' fields
        must be valid (``check_filters``).
        """
        query = _matching(
            select(*_ELIGIBILITY), org_id, contact_filter, customer_filter, eligible, live_in_sequence
        )
        if after_id is not None:
            query = query.where(contacts.c.id > after_id)
        return [dict(r) for r in self.conn.execute(query.order_by(contacts.c.id).limit(limit)).mappings()]

    def count_matching(
        self,
        org_id: str,
        *,
        contact_filter: dict[str, Any] | None,
        customer_filter: dict[str, Any] | None,
        live_in_sequence: tuple[str, bool] | None,
    ) -> int:
        """How many contacts match a filter (and ``live_in_sequence``, as :meth:`match_contacts`)."""
        query = _matching(
            select(func.count()).select_from(contacts),
            org_id,
            contact_filter,
            customer_filter,
            None,
            live_in_sequence,
        )
        return self.conn.execute(query).scalar_one()


def _matching(query, org_id, contact_filter, customer_filter, eligible, live_in_sequence):
    """``query`` narrowed to an organization's contacts matching the filters (see match_contacts)."""
    from seqbridge.storage.schema import enrollments

    query = query.where(contacts.c.org_id == org_id)
    for name, value in (contact_filter or {}).items():
        column = contacts.c.email_normalized if name == "email" else contacts.c[name]
        query = query.where(_matches(column, value, lower=name == "email"))
    if customer_filter:
        matching_companies = select(companies.c.id).where(companies.c.org_id == org_id)
        for name, value in customer_filter.items():
            matching_companies = matching_companies.where(_matches(companies.c[name], value))
        query = query.where(contacts.c.company_id.in_(matching_companies))
    if eligible is not None:
        ok = and_(
            contacts.c.status == "active",
            contacts.c.converted.is_(False),
            contacts.c.has_open_ticket.is_(False),
        )
        query = query.where(ok if eligible else not_(ok))
    if live_in_sequence is not None:
        sequence_id, has_live = live_in_sequence
        live = exists().where(
            enrollments.c.sequence_id == sequence_id,
            enrollments.c.contact_id == contacts.c.id,
            enrollments.c.status.in_(("active", "paused")),
        )
        query = query.where(live if has_live else not_(live))
    return query


def _matches(column, value, *, lower: bool = False):
    """Equality, or membership when ``value`` is a list."""
    if isinstance(value, list):
        return column.in_([v.lower() if lower and isinstance(v, str) else v for v in value])
    return column == (value.lower() if lower and isinstance(value, str) else value)


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
