"""Contacts, their tags and their attribute index, staged: an identity map with lookups by
phone, email and attribute kept in step with the batch's writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from seqbridge.storage.contacts import ContactStore, attribute_text
from seqbridge.storage.staged.base import Row, Unsupported, copy_row, update_held

if TYPE_CHECKING:
    from seqbridge.storage.staged import Lookups, Staging


class _Lookup:
    """Which contacts have each value of one key (phone, email, attribute), for the values read
    so far; kept in step with the batch's writes."""

    def __init__(self, keys_of: Callable[[Row], Iterable[tuple]]) -> None:
        self.keys_of = keys_of
        self.ids: dict[tuple, set[str]] = {}

    def fill(
        self, key: tuple, db_ids: Iterable[str], rows: dict[str, Row | None], dirty: Iterable[str]
    ) -> None:
        """Record what the database said for ``key``, corrected by the batch's own writes."""
        found = set()
        for contact_id in (*db_ids, *dirty):
            row = rows.get(contact_id)
            if row is not None and key in self.keys_of(row):
                found.add(contact_id)
        self.ids[key] = found

    def move(self, contact_id: str, before: Row | None, after: Row | None) -> None:
        old = set(self.keys_of(before)) if before else set()
        new = set(self.keys_of(after)) if after else set()
        for key in old - new:
            if key in self.ids:
                self.ids[key].discard(contact_id)
        for key in new - old:
            if key in self.ids:
                self.ids[key].add(contact_id)


def _phone_keys(row: Row) -> list[tuple]:
    return [(row["org_id"], row["phone"])] if row.get("phone") else []


def _email_keys(row: Row) -> list[tuple]:
    return [(row["org_id"], row["email_normalized"])] if row.get("email_normalized") else []


def _attribute_keys(row: Row) -> list[tuple]:
    keys = []
    for name, value in (row.get("attributes") or {}).items():
        text = attribute_text(value)
        if text is not None:
            keys.append((row["org_id"], name, text))
    return keys


#: The columns the lookups by phone, email and attribute read (a STOP changes none of them).
_INDEXED = frozenset({"org_id", "phone", "email_normalized", "attributes"})


def _unindexed(_before: Row, _after: Row) -> None:
    """A change no lookup sees: nothing to move."""


def _oldest_first(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]))


class StagedContacts(Unsupported):
    """Contacts, their tags and their attribute index, as :class:`ContactStore` offers them."""

    def __init__(self, staging: Staging) -> None:
        self.staging = staging
        self.store = ContactStore(staging.conn)
        self.rows: dict[str, Row | None] = {}
        self.tags: dict[str, list[str]] = {}
        self.db_tags: dict[str, frozenset[str]] = {}
        self.inserted: dict[str, Row] = {}
        self.updated: dict[str, dict[str, Any]] = {}
        self.by_phone = _Lookup(_phone_keys)
        self.by_email = _Lookup(_email_keys)
        self.by_attribute = _Lookup(_attribute_keys)

    # Reading ---------------------------------------------------------------------------------

    def _dirty(self) -> list[str]:
        return [*self.inserted, *self.updated]

    def _adopt(self, rows: Iterable[Row]) -> list[str]:
        """Take rows the database returned into the map (the map's own version wins)."""
        ids = []
        for row in rows:
            if self.rows.get(row["id"]) is None and row["id"] not in self.updated:
                self.rows[row["id"]] = row
            ids.append(row["id"])
        return ids

    def prefetch(self, lookups: Lookups) -> None:
        org = lookups.org_id
        self._load_phones(org, [p for p in lookups.phones if (org, p) not in self.by_phone.ids])
        self._load_emails(org, [e for e in lookups.emails if (org, e) not in self.by_email.ids])
        self._load_ids(org, [i for i in lookups.ids if i not in self.rows])
        by_name: dict[str, list[str]] = defaultdict(list)
        for name, value in lookups.attributes:
            if (org, name, value) not in self.by_attribute.ids:
                by_name[name].append(value)
        for name, values in by_name.items():
            self._load_attributes(org, name, values)
        self._load_tags([i for i, r in self.rows.items() if r is not None])

    def _load_phones(self, org: str, phones: list[str]) -> None:
        if phones:
            for phone, rows in self.store.find_contacts_by_phones(org, phones).items():
                self.by_phone.fill((org, phone), self._adopt(rows), self.rows, self._dirty())

    def _load_emails(self, org: str, emails: list[str]) -> None:
        if emails:
            found = self.store.find_contacts_by_emails(org, emails)
            for email in emails:
                ids = self._adopt([found[email]]) if email in found else []
                self.by_email.fill((org, email), ids, self.rows, self._dirty())

    def _load_ids(self, org: str, ids: list[str]) -> None:
        if ids:
            found = self.store.get_contacts(org, ids)
            self._adopt(found.values())
            for contact_id in ids:
                self.rows.setdefault(contact_id, None)

    def _load_attributes(self, org: str, name: str, values: list[str]) -> None:
        for value, rows in self.store.find_contacts_by_attributes(org, name, values).items():
            self.by_attribute.fill((org, name, value), self._adopt(rows), self.rows, self._dirty())

    def _load_tags(self, ids: list[str]) -> None:
        missing = [i for i in ids if i not in self.tags]
        if missing:
            found = self.store.tags_for(missing)
            for contact_id in missing:
                self.tags[contact_id] = list(found.get(contact_id, []))
                self.db_tags[contact_id] = frozenset(self.tags[contact_id])

    def _found(self, lookup: _Lookup, key: tuple, load: Callable[[], None]) -> list[Row]:
        if key not in lookup.ids:
            load()
        return [copy_row(self.rows[i]) for i in lookup.ids[key]]

    def get_contact(self, org_id: str, contact_id: str) -> Row | None:
        if contact_id not in self.rows:
            self._load_ids(org_id, [contact_id])
        row = self.rows[contact_id]
        return copy_row(row) if row is not None and row["org_id"] == org_id else None

    def find_contact_by_email(self, org_id: str, email_normalized: str) -> Row | None:
        key = (org_id, email_normalized)
        found = self._found(self.by_email, key, lambda: self._load_emails(org_id, [email_normalized]))
        return _oldest_first(found)[0] if found else None

    def find_contacts_by_phone(self, org_id: str, phone: str) -> list[Row]:
        key = (org_id, phone)
        return _oldest_first(self._found(self.by_phone, key, lambda: self._load_phones(org_id, [phone])))

    def find_contacts_by_attribute(self, org_id: str, name: str, value: str) -> list[Row]:
        key = (org_id, name, value)
        load = lambda: self._load_attributes(org_id, name, [value])  # noqa: E731
        return _oldest_first(self._found(self.by_attribute, key, load))

    def tags_for(self, contact_ids: list[str]) -> dict[str, list[str]]:
        self._load_tags([i for i in contact_ids if i not in self.inserted])
        found: dict[str, list[str]] = defaultdict(list)
        for contact_id in contact_ids:
            if self.tags.get(contact_id):
                found[contact_id] = list(self.tags[contact_id])
        return found

    # Writing ---------------------------------------------------------------------------------

    def _reindex(self, contact_id: str, before: Row | None, after: Row | None) -> None:
        for lookup in (self.by_phone, self.by_email, self.by_attribute):
            lookup.move(contact_id, before, after)

    def insert_contact(self, row: Row) -> None:
        contact_id = row["id"]
        stored = copy_row(row)
        self.rows[contact_id] = stored
        self.inserted[contact_id] = stored
        self.tags[contact_id] = []
        self._reindex(contact_id, None, stored)
        self.staging.enrollments.new_contact(contact_id)

        def undo() -> None:
            self._reindex(contact_id, stored, None)
            del self.rows[contact_id], self.inserted[contact_id], self.tags[contact_id]
            self.staging.enrollments.forget_contact(contact_id)

        self.staging.undo.append(undo)

    def update_contact(self, org_id: str, contact_id: str, values: dict[str, Any]) -> bool:
        if self.get_contact(org_id, contact_id) is None:
            return False
        update_held(
            self.staging,
            self.rows[contact_id],
            values,
            held=self.updated,
            inserted=self.inserted,
            changed=(
                (lambda before, after: self._reindex(contact_id, before, after))
                if _INDEXED.intersection(values)
                else _unindexed
            ),
            copy=copy_row,
        )
        return True

    def add_tags(self, org_id: str, contact_id: str, tags: Iterable[str]) -> list[str]:
        existing = self.tags_for([contact_id]).get(contact_id, [])
        new = sorted(set(tags) - set(existing))
        if new:
            self._set_tags(contact_id, sorted({*existing, *new}))
        return new

    def remove_tags(self, contact_id: str, tags: Iterable[str]) -> None:
        self._load_tags([contact_id] if contact_id not in self.inserted else [])
        gone = set(tags)
        if gone & set(self.tags.get(contact_id, [])):
            self._set_tags(contact_id, [t for t in self.tags[contact_id] if t not in gone])

    def _set_tags(self, contact_id: str, tags: list[str]) -> None:
        before = self.tags[contact_id]
        self.tags[contact_id] = tags
        self.staging.undo.append(lambda: self.tags.__setitem__(contact_id, before))

    def flush(self) -> None:
        # Changes to stored rows first: one may free an email a new contact takes.
        if self.updated:
            org_of = {i: self.rows[i]["org_id"] for i in self.updated}
            self.store.update_contacts([{"id": i, "org_id": org_of[i], **v} for i, v in self.updated.items()])
        if self.inserted:
            self.store.insert_contacts(list(self.inserted.values()))
        added, removed = [], []
        for contact_id, tags in self.tags.items():
            before = self.db_tags.get(contact_id, frozenset())
            if contact_id in self.inserted or set(tags) != before:
                org_id = self.rows[contact_id]["org_id"]
                added += [
                    {"contact_id": contact_id, "org_id": org_id, "tag": t} for t in tags if t not in before
                ]
                removed += [(contact_id, t) for t in before if t not in tags]
        self.store.remove_tag_pairs(removed)
        if added:
            self.store.add_tag_rows(added)
        for contact_id, tags in self.tags.items():
            self.db_tags[contact_id] = frozenset(tags)
        self.inserted.clear()
        self.updated.clear()
