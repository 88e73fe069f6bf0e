"""Contacts (persons), their tags, and companies (accounts)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, not_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from seqbridge.storage.bulk import bulk_insert, update_rows
from seqbridge.storage.schema import companies, contact_attributes, contact_tags, contacts

#: Longest attribute name and text value kept in ``contact_attributes`` (longer ones are not
#: identifiers; a lookup of one scans the organization's contacts instead).
MAX_ATTRIBUTE_NAME = contact_attributes.c.name.type.length
MAX_ATTRIBUTE_VALUE = contact_attributes.c.value.type.length

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


def attribute_text(value: Any) -> str | None:
    """A custom attribute's value as lookups compare it: strings as they are, numbers and
    booleans as JSON writes them (what PostgreSQL's ``->>`` gives); None for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def attribute_rows(contact_id: str, org_id: str, attributes: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``contact_attributes`` rows for a contact's attributes."""
    rows = []
    for name, value in (attributes or {}).items():
        text = attribute_text(value)
        if text is not None and len(name) <= MAX_ATTRIBUTE_NAME and len(text) <= MAX_ATTRIBUTE_VALUE:
            rows.append({"contact_id": contact_id, "name": name, "org_id": org_id, "value": text})
    return rows


def _page(conn: Connection, query: Select, order_by: Iterable, limit: int, offset: int):
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = conn.execute(query.order_by(*order_by).limit(limit).offset(offset)).mappings()
    return [dict(r) for r in rows], total


class ContactStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_contact(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(contacts).values(**row))
        self.index_attributes([(row["id"], row["org_id"], row.get("attributes"))], replace=False)

    def insert_contacts(self, rows: list[dict[str, Any]]) -> None:
        """Insert many contacts (dicts with the same keys) with their attribute index rows."""
        bulk_insert(self.conn, contacts, rows)
        self.index_attributes([(r["id"], r["org_id"], r.get("attributes")) for r in rows], replace=False)

    def update_contacts(self, rows: list[dict[str, Any]]) -> None:
        """Write many contacts' changed columns (``{"id", "org_id", column: value, …}``) in as few
        statements as the values allow, re-indexing the attributes of those that changed them."""
        update_rows(self.conn, contacts, [{k: v for k, v in r.items() if k != "org_id"} for r in rows])
        changed = [(r["id"], r["org_id"], r["attributes"]) for r in rows if "attributes" in r]
        self.index_attributes(changed, replace=True)

    def add_tag_rows(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``{contact_id, org_id, tag}`` rows the contacts do not have yet."""
        bulk_insert(self.conn, contact_tags, rows)

    def remove_tag_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """Delete these (contact id, tag) pairs."""
        if pairs:
            self.conn.execute(
                delete(contact_tags).where(tuple_(contact_tags.c.contact_id, contact_tags.c.tag).in_(pairs))
            )

    def index_attributes(
        self, contacts_: list[tuple[str, str, dict[str, Any] | None]], *, replace: bool
    ) -> None:
        """Keep ``contact_attributes`` in step with (contact id, org id, attributes); ``replace``
        drops what those contacts had first."""
        if replace and contacts_:
            ids = [c[0] for c in contacts_]
            self.conn.execute(delete(contact_attributes).where(contact_attributes.c.contact_id.in_(ids)))
        rows = [row for c in contacts_ for row in attribute_rows(*c)]
        if rows:
            bulk_insert(self.conn, contact_attributes, rows)

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

    def find_contacts_by_phones(self, org_id: str, phones: list[str]) -> dict[str, list[dict[str, Any]]]:
        """For each of ``phones``, its contacts, oldest first (one query: a batch's lookups).

        Sorted here, not by the query: asked to ``ORDER BY created_at`` over several phones, a
        planner without statistics (SQLite on a new or freshly imported database) walked the whole
        organization in ix_contacts_org_created to skip the sort, instead of probing the phone
        index once per number (bench.drain: a quarter of the worker's time at 30,000 contacts)."""
        found: dict[str, list[dict[str, Any]]] = {p: [] for p in phones}
        if phones:
            query = select(contacts).where(contacts.c.org_id == org_id, contacts.c.phone.in_(phones))
            for row in self.conn.execute(query).mappings():
                found[row["phone"]].append(dict(row))
            for rows in found.values():
                if len(rows) > 1:
                    rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return found

    def find_contacts_by_emails(self, org_id: str, emails_normalized: list[str]) -> dict[str, dict[str, Any]]:
        """The contacts with these lower-cased emails, by email (one query)."""
        if not emails_normalized:
            return {}
        query = select(contacts).where(
            contacts.c.org_id == org_id, contacts.c.email_normalized.in_(emails_normalized)
        )
        return {r["email_normalized"]: dict(r) for r in self.conn.execute(query).mappings()}

    def get_contacts(self, org_id: str, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The organization's contacts with these ids, by id (one query)."""
        if not contact_ids:
            return {}
        query = select(contacts).where(contacts.c.org_id == org_id, contacts.c.id.in_(contact_ids))
        return {r["id"]: dict(r) for r in self.conn.execute(query).mappings()}

    def find_contacts_by_attribute(self, org_id: str, name: str, value: str) -> list[dict[str, Any]]:
        """Contacts whose custom attribute ``name`` is ``value`` (e.g. a CRM's own id), oldest
        first: an index probe of ``contact_attributes``."""
        return self.find_contacts_by_attributes(org_id, name, [value]).get(value, [])

    def find_contacts_by_attributes(
        self, org_id: str, name: str, values: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """For each of ``values``, the contacts whose attribute ``name`` has it, oldest first
        (one query). A name or value too long to be indexed is looked for in the JSON itself."""
        found: dict[str, list[dict[str, Any]]] = {v: [] for v in values}
        indexed = [v for v in values if len(v) <= MAX_ATTRIBUTE_VALUE]
        if len(name) <= MAX_ATTRIBUTE_NAME and indexed:
            query = (
                select(contacts, contact_attributes.c.value.label("_matched"))
                .join(contact_attributes, contact_attributes.c.contact_id == contacts.c.id)
                .where(
                    contact_attributes.c.org_id == org_id,
                    contact_attributes.c.name == name,
                    contact_attributes.c.value.in_(indexed),
                )
                .order_by(contacts.c.created_at, contacts.c.id)
            )
            for row in self.conn.execute(query).mappings():
                contact = dict(row)
                found[contact.pop("_matched")].append(contact)
        for value in values if len(name) > MAX_ATTRIBUTE_NAME else [v for v in values if v not in indexed]:
            query = (
                select(contacts)
                .where(contacts.c.org_id == org_id, contacts.c.attributes[name].as_string() == value)
                .order_by(contacts.c.created_at, contacts.c.id)
            )
            found[value] = [dict(r) for r in self.conn.execute(query).mappings()]
        return found

    def update_contact(self, org_id: str, contact_id: str, values: dict[str, Any]) -> bool:
        result = self.conn.execute(
            update(contacts).where(contacts.c.org_id == org_id, contacts.c.id == contact_id).values(**values)
        )
        if result.rowcount == 1 and "attributes" in values:
            self.index_attributes([(contact_id, org_id, values["attributes"])], replace=True)
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
