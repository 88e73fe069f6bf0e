"""Contacts: the persons sequences enroll. ``/customers`` is the sequences dialect's name for them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import IntegrityError

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import Conflict, MissingField, NotFound, ValidationFailed
from seqbridge.services.common import OffsetPage, format_time, new_id
from seqbridge.services.normalize import normalize_email, normalize_phone, normalize_tags, normalize_timezone
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx


class ContactStatus(StrEnum):
    ACTIVE = "active"  # may be contacted
    UNSUBSCRIBED = "unsubscribed"  # opted out (e.g. texted STOP); never enrolled or sent to
    BOUNCED = "bounced"  # email bounced permanently
    DO_NOT_CONTACT = "do_not_contact"  # blocked by an operator


#: Plain text fields copied as given.
TEXT_FIELDS = ("first_name", "last_name", "contact_type", "source", "job_title", "city", "state", "country")

#: Called inside the creating transaction: (tx, caller, contact) — auto-enrollment plugs in here.
ContactCreatedListener = Callable[[Tx, Caller, dict[str, Any]], None]
#: Called inside the transaction that added tags: (tx, caller, contact, new_tags).
TagsAddedListener = Callable[[Tx, Caller, dict[str, Any], list[str]], None]


@dataclass(frozen=True)
class ContactRef:
    """How a caller named a contact: by ``id`` (customer_id / contact_id), ``email``, ``phone``
    (E.164) or ``attribute:<name>`` (a custom attribute, e.g. a CRM's own id)."""

    kind: str
    value: str


def contact_ref(body: dict[str, Any]) -> ContactRef:
    """The first identifier present of customer_id, email, contact_id, contactId.

    Raises :class:`MissingField` when none is given.
    """
    for key, kind in (("customer_id", "id"), ("email", "email"), ("contact_id", "id"), ("contactId", "id")):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return ContactRef(kind, value.strip())
    raise MissingField(
        "contact_id is required (or customer_id, email, contactId).",
        details={"fields": ["customer_id", "email", "contact_id", "contactId"]},
    )


def resolve_contact(tx: Tx, caller: Caller, ref: ContactRef) -> dict[str, Any]:
    """The contact ``ref`` names (the oldest, for a phone or an attribute several share).
    Raises :class:`NotFound`."""
    if ref.kind == "email":
        contact = tx.contacts.find_contact_by_email(caller.org_id, ref.value.lower())
    elif ref.kind == "phone":  # already E.164
        contact = next(iter(tx.contacts.find_contacts_by_phone(caller.org_id, ref.value)), None)
    elif ref.kind.startswith("attribute:"):
        matches = tx.contacts.find_contacts_by_attribute(caller.org_id, ref.kind.partition(":")[2], ref.value)
        contact = next(iter(matches), None)
    else:
        contact = tx.contacts.get_contact(caller.org_id, ref.value)
    if contact is None:
        raise NotFound(f"No contact with {ref.kind} {ref.value}.")
    return contact


def contact_to_api(row: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "phone": row["phone"],
        **{name: row[name] for name in TEXT_FIELDS},
        "tags": tags,
        "status": row["status"],
        "converted": bool(row["converted"]),
        "has_open_ticket": bool(row["has_open_ticket"]),
        "timezone": row["timezone"],
        "company_id": row["company_id"],
        "attributes": row["attributes"] or {},
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }


class ContactService:
    def __init__(self, db: Database, clock: Clock, default_region: str | None = None) -> None:
        self.db = db
        self.clock = clock
        self.default_region = default_region or None
        self.created_listeners: list[ContactCreatedListener] = []
        self.tags_added_listeners: list[TagsAddedListener] = []

    # Reads ------------------------------------------------------------------------------

    def get_contact(self, caller: Caller, contact_id: str) -> dict[str, Any]:
        """The contact, or :class:`NotFound` (also for another organization's contact)."""
        with self.db.transaction(write=False) as tx:
            return self._load(tx, caller, contact_id)

    def list_contacts(self, caller: Caller, filters: dict[str, Any], limit: int, offset: int) -> OffsetPage:
        filters = dict(filters)
        if filters.get("email") is not None:
            filters["email"] = filters["email"].strip().lower()
        if filters.get("phone") is not None:
            filters["phone"] = normalize_phone(filters["phone"], self.default_region, field="phone")
        with self.db.transaction(write=False) as tx:
            rows, total = tx.contacts.list_contacts(caller.org_id, filters, limit, offset)
            tags = tx.contacts.tags_for([r["id"] for r in rows])
        return OffsetPage([contact_to_api(r, tags.get(r["id"], [])) for r in rows], total, limit, offset)

    def find_by_email(self, caller: Caller, email: str) -> dict[str, Any] | None:
        """The contact with this email (case-insensitive), or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.contacts.find_contact_by_email(caller.org_id, email.strip().lower())
            return contact_to_api(row, tx.contacts.tags_for([row["id"]]).get(row["id"], [])) if row else None

    def find_by_attribute(self, caller: Caller, name: str, value: str) -> dict[str, Any] | None:
        """The oldest contact whose custom attribute ``name`` equals ``value``, or None."""
        with self.db.transaction(write=False) as tx:
            rows = tx.contacts.find_contacts_by_attribute(caller.org_id, name, value)
            return (
                contact_to_api(rows[0], tx.contacts.tags_for([rows[0]["id"]]).get(rows[0]["id"], []))
                if rows
                else None
            )

    def find_by_phone(self, caller: Caller, phone: str) -> list[dict[str, Any]]:
        """Every contact with this phone number (normalised to E.164 first), oldest first."""
        e164 = normalize_phone(phone, self.default_region)
        with self.db.transaction(write=False) as tx:
            rows = tx.contacts.find_contacts_by_phone(caller.org_id, e164)
            tags = tx.contacts.tags_for([r["id"] for r in rows])
        return [contact_to_api(r, tags.get(r["id"], [])) for r in rows]

    # Writes -----------------------------------------------------------------------------

    def create_contact(self, caller: Caller, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a contact, run the created/tags-added listeners, and audit it.

        Raises :class:`ValidationFailed` for bad values and :class:`Conflict` when the email is taken.
        """
        now = self.clock.now()
        values = self._clean(fields)
        if not values.get("email") and not values.get("phone"):
            raise ValidationFailed(
                "A contact needs an email or a phone number.",
                details={"errors": [{"path": "$", "in": "body", "message": "give email or phone (or both)"}]},
            )
        tags = values.pop("tags", [])
        row = {
            "id": new_id(),
            "org_id": caller.org_id,
            "email": None,
            "email_normalized": None,
            "phone": None,
            **dict.fromkeys(TEXT_FIELDS),
            "status": ContactStatus.ACTIVE.value,
            "converted": False,
            "has_open_ticket": False,
            "timezone": None,
            "company_id": None,
            "attributes": {},
            **values,
            "created_at": now,
            "updated_at": now,
        }
        with self._writing() as tx:
            self._check_refs(tx, caller, row)
            tx.contacts.insert_contact(row)
            if tags:
                tx.contacts.add_tags(caller.org_id, row["id"], tags)
            contact = contact_to_api(row, sorted(tags))
            record(tx, caller, tag_for(caller, "contact", "created"), "contact", row["id"], contact, now)
            for listener in self.created_listeners:
                listener(tx, caller, contact)
            if tags:
                for listener in self.tags_added_listeners:
                    listener(tx, caller, contact, sorted(tags))
        return contact

    def update_contact(self, caller: Caller, contact_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change the given fields; ``tags``, when given, replaces the whole set."""
        now = self.clock.now()
        values = self._clean(fields)
        tags = values.pop("tags", None)
        with self._writing() as tx:
            before = self._load(tx, caller, contact_id)
            self._check_refs(tx, caller, values, current_id=contact_id)
            tx.contacts.update_contact(caller.org_id, contact_id, {**values, "updated_at": now})
            added: list[str] = []
            if tags is not None:
                tx.contacts.remove_tags(contact_id, set(before["tags"]) - set(tags))
                added = tx.contacts.add_tags(caller.org_id, contact_id, tags)
                after = self._load(tx, caller, contact_id)
            else:  # the tags are as they were: only the row is read again
                after = contact_to_api(tx.contacts.get_contact(caller.org_id, contact_id), before["tags"])
            changes = {k: after[k] for k in (*values, *(["tags"] if tags is not None else [])) if k in after}
            record(
                tx,
                caller,
                tag_for(caller, "contact", "updated"),
                "contact",
                contact_id,
                {"changes": changes},
                now,
            )
            self._record_status_change(tx, caller, before, after, now)
            if added:
                for listener in self.tags_added_listeners:
                    listener(tx, caller, after, added)
        return after

    @staticmethod
    def _record_status_change(tx: Tx, caller: Caller, before: dict, after: dict, now) -> None:
        """An opt-out (or opt back in) is its own audit event, so "who unsubscribed when" is one query."""
        if before["status"] == after["status"]:
            return
        if after["status"] == ContactStatus.UNSUBSCRIBED:
            action = "unsubscribed"
        elif before["status"] == ContactStatus.UNSUBSCRIBED:
            action = "resubscribed"
        else:
            return
        record(
            tx,
            caller,
            tag_for(caller, "contact", action),
            "contact",
            after["id"],
            {"from": before["status"], "to": after["status"]},
            now,
        )

    def add_tags(self, caller: Caller, contact_id: str, tags: list[str]) -> dict[str, Any]:
        """Add tags (keeping existing ones); tag_added listeners see only the new ones."""
        now = self.clock.now()
        tags = normalize_tags(tags)
        with self._writing() as tx:
            self._load(tx, caller, contact_id)
            added = tx.contacts.add_tags(caller.org_id, contact_id, tags)
            if added:
                tx.contacts.update_contact(caller.org_id, contact_id, {"updated_at": now})
            after = self._load(tx, caller, contact_id)
            record(
                tx,
                caller,
                tag_for(caller, "contact", "updated"),
                "contact",
                contact_id,
                {"tags_added": added, "tags": after["tags"]},
                now,
            )
            if added:
                for listener in self.tags_added_listeners:
                    listener(tx, caller, after, added)
        return after

    def remove_tag(self, caller: Caller, contact_id: str, tag: str) -> dict[str, Any]:
        now = self.clock.now()
        with self._writing() as tx:
            before = self._load(tx, caller, contact_id)
            if tag not in before["tags"]:
                raise NotFound(f"contact {contact_id} has no tag {tag!r}", code="tag_not_found")
            tx.contacts.remove_tags(contact_id, [tag])
            tx.contacts.update_contact(caller.org_id, contact_id, {"updated_at": now})
            after = self._load(tx, caller, contact_id)
            record(
                tx,
                caller,
                tag_for(caller, "contact", "updated"),
                "contact",
                contact_id,
                {"tags_removed": [tag], "tags": after["tags"]},
                now,
            )
        return after

    def delete_contact(self, caller: Caller, contact_id: str) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            before = self._load(tx, caller, contact_id)
            tx.contacts.delete_contact(caller.org_id, contact_id)
            record(
                tx,
                caller,
                tag_for(caller, "contact", "deleted"),
                "contact",
                contact_id,
                {"email": before["email"], "phone": before["phone"]},
                now,
            )

    # Helpers ----------------------------------------------------------------------------

    def _load(self, tx: Tx, caller: Caller, contact_id: str) -> dict[str, Any]:
        row = tx.contacts.get_contact(caller.org_id, contact_id)
        if row is None:
            raise NotFound(f"no contact with id {contact_id}")
        return contact_to_api(row, tx.contacts.tags_for([contact_id]).get(contact_id, []))

    def _clean(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Normalise the fields a caller sent into column values."""
        values: dict[str, Any] = {}
        for name in (*TEXT_FIELDS, "status", "converted", "has_open_ticket", "company_id", "attributes"):
            if name in fields:
                values[name] = fields[name]
        if "attributes" in values and values["attributes"] is None:
            values["attributes"] = {}
        if "email" in fields:
            if fields["email"] is None:
                values["email"] = values["email_normalized"] = None
            else:
                values["email"], values["email_normalized"] = normalize_email(fields["email"])
        if "phone" in fields:
            values["phone"] = (
                None if fields["phone"] is None else normalize_phone(fields["phone"], self.default_region)
            )
        if "timezone" in fields:
            values["timezone"] = (
                None if fields["timezone"] is None else normalize_timezone(fields["timezone"])
            )
        if "tags" in fields:
            values["tags"] = normalize_tags(fields["tags"] or [])
        return values

    def _check_refs(
        self, tx: Tx, caller: Caller, values: dict[str, Any], current_id: str | None = None
    ) -> None:
        if (
            values.get("company_id") is not None
            and tx.companies.get_company(caller.org_id, values["company_id"]) is None
        ):
            raise ValidationFailed(
                f"company_id: no company with id {values['company_id']}",
                code="company_not_found",
                details={"errors": [{"path": "$.company_id", "in": "body", "message": "no such company"}]},
            )
        if values.get("email_normalized"):
            existing = tx.contacts.find_contact_by_email(caller.org_id, values["email_normalized"])
            if existing is not None and existing["id"] != current_id:
                raise _email_taken(existing["id"])

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Tx]:
        """A write transaction that turns a lost race on the unique email into a 409."""
        try:
            with self.db.transaction() as tx:
                yield tx
        except IntegrityError as error:
            if "email" in str(error.orig).lower():
                raise _email_taken(None) from error
            raise


def _email_taken(existing_id: str | None) -> Conflict:
    details = {"existing_id": existing_id} if existing_id else {}
    return Conflict("A contact with this email already exists.", code="email_taken", details=details)
