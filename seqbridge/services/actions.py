"""Carrying out a planned action on the hosted backend, through the same services the API uses.

Each action gives an *outcome*, never an exception for what a caller can get wrong:

- ``done``: it happened (with the ids it touched);
- ``skipped``: nothing to do, and that is fine (already enrolled, not enrolled, ineligible);
- ``failed``: it cannot happen as written (unknown sequence, no contact identifier, bad value);
  retrying would not help, so the delivery ends ``failed`` and can be replayed after a fix.

Database trouble is not an outcome: it propagates, the delivery's transaction rolls back, and
the worker retries it later.
"""

from __future__ import annotations

import contextlib
from typing import Any

from seqbridge.context import Caller
from seqbridge.errors import Conflict, NotFound, SeqbridgeError, Unprocessable
from seqbridge.services.contacts import ContactRef
from seqbridge.services.normalize import normalize_phone
from seqbridge.services.sequences import SequenceKind
from seqbridge.storage.staged import Lookups

MAX_BULK_CONTACTS = 10_000
#: The actions a batch's unit of work carries out (bulk_enroll reads and writes by filter: alone).
STAGEABLE = frozenset({"upsert_contact", "enroll", "unenroll"})


class ActionFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _outcome(status: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, **extra}


class LocalTarget:
    """The hosted backend as a target. ``services`` is :class:`seqbridge.services.Services`."""

    def __init__(self, services) -> None:
        self.services = services

    def run(self, caller: Caller, action: dict[str, Any]) -> dict[str, Any]:
        """Carry out one planned action; return its outcome."""
        handler = getattr(self, "_" + action["action"])
        try:
            return handler(caller, action)
        except ActionFailed as error:
            return _outcome("failed", code=error.code, message=error.message)
        except SeqbridgeError as error:
            if error.status >= 500:
                raise
            return _outcome(
                "failed",
                code=error.code,
                message=error.message,
                **({"details": error.details} if error.details else {}),
            )

    def lookups(self, org_id: str, actions: list[dict[str, Any]]) -> Lookups:
        """What these actions will look up, normalised exactly as carrying them out does (so a
        batch can read it all at once); a value that would fail is left for the action to fail."""
        phones: set[str] = set()
        emails: set[str] = set()
        ids: set[str] = set()
        attributes: set[tuple[str, str]] = set()
        sequences: set[str] = set()
        ends = upserts = False
        for action in actions:
            if action.get("target") != "local":
                continue
            named = action if action["action"] == "upsert_contact" else action.get("contact")
            if isinstance(named, dict):
                self._identifiers(named, phones, emails, ids, attributes)
            ref = action.get("queue", action.get("sequence"))
            if isinstance(ref, str) and ref.strip() and ref != "*":
                sequences.add(ref.strip())
            ends = ends or action["action"] == "unenroll"
            upserts = upserts or action["action"] == "upsert_contact"
        found = (phones, emails, ids, attributes, sequences)
        triggers = ("contact_created", "tag_added") if upserts else ()  # auto-enrollment
        return Lookups(org_id, *(frozenset(f) for f in found), ends_enrollments=ends, triggers=triggers)

    def _identifiers(
        self, given: dict[str, Any], phones: set, emails: set, ids: set, attributes: set
    ) -> None:
        attribute = given.get("attribute")
        if isinstance(attribute, dict) and len(attribute) == 1:
            [(name, value)] = attribute.items()
            if value not in (None, ""):
                attributes.add((name, str(value)))
        if isinstance(given.get("id"), str) and given["id"].strip():
            ids.add(given["id"].strip())
        if isinstance(given.get("email"), str) and given["email"].strip():
            emails.add(given["email"].strip().lower())
        if isinstance(given.get("phone"), str) and given["phone"].strip():
            with contextlib.suppress(SeqbridgeError):  # an invalid number: the action will say so
                phones.add(normalize_phone(given["phone"], self.services.contacts.default_region))

    # Helpers -----------------------------------------------------------------------------------

    def _kind_and_id(self, caller: Caller, action: dict[str, Any]) -> tuple[SequenceKind, str]:
        kind = SequenceKind.EVENT_QUEUE if "queue" in action else SequenceKind.SEQUENCE
        ref = action.get("queue" if kind is SequenceKind.EVENT_QUEUE else "sequence")
        if not isinstance(ref, str) or not ref.strip():
            raise ActionFailed(
                "missing_sequence", f"the {kind.value.replace('_', ' ')} is empty for this event"
            )
        return kind, self.services.sequences.resolve_id(caller, kind, ref.strip())

    def _contact_ref(self, given: Any) -> ContactRef:
        if not isinstance(given, dict) or not given:
            raise ActionFailed("missing_contact", "no contact identifier (email, phone or id) for this event")
        attribute = given.get("attribute")
        if isinstance(attribute, dict) and len(attribute) == 1:
            [(name, value)] = attribute.items()
            if value not in (None, ""):
                return ContactRef(f"attribute:{name}", str(value))
        for field in ("id", "email", "phone"):
            value = given.get(field)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise ActionFailed(
                    "invalid_contact", f"contact {field} must be a string, got {type(value).__name__}"
                )
            if field == "phone":
                return ContactRef("phone", normalize_phone(value, self.services.contacts.default_region))
            return ContactRef(field, value.strip())
        raise ActionFailed("missing_contact", "no contact identifier (email, phone or id) for this event")

    # Actions -----------------------------------------------------------------------------------

    def _enroll(self, caller: Caller, action: dict[str, Any]) -> dict[str, Any]:
        kind, sequence_id = self._kind_and_id(caller, action)
        ref = self._contact_ref(action.get("contact"))
        data = action.get("data")
        if data is not None and not isinstance(data, dict):
            raise ActionFailed("invalid_data", "enroll data must be an object")
        try:
            enrollment = self.services.enrollment.enroll(
                caller, kind, sequence_id, ref, source="hook", data=data
            )
        except Conflict as error:
            return _outcome("skipped", code=error.code, message=error.message, sequence_id=sequence_id)
        except Unprocessable as error:
            return _outcome(
                "skipped",
                code=error.code,
                message=error.message,
                sequence_id=sequence_id,
                reason=error.details.get("reason"),
            )
        return _outcome(
            "done",
            sequence_id=sequence_id,
            enrollment_id=enrollment["id"],
            contact_id=enrollment["contact_id"],
        )

    def _unenroll(self, caller: Caller, action: dict[str, Any]) -> dict[str, Any]:
        reason = str(action.get("reason") or "unenrolled")
        ref = self._contact_ref(action.get("contact"))
        everything = action.get("sequence", action.get("queue")) == "*"
        try:
            if everything:
                ended = self.services.enrollment.unenroll_everywhere(caller, ref, reason=reason)
            else:
                kind, sequence_id = self._kind_and_id(caller, action)
                ended = self.services.enrollment.unenroll(caller, kind, sequence_id, ref, reason=reason)
        except NotFound as error:
            if error.code == "not_enrolled":
                return _outcome("skipped", code="not_enrolled", message=error.message)
            raise
        if not ended:
            return _outcome("skipped", code="not_enrolled", message="the contact is not enrolled anywhere")
        return _outcome("done", reason=reason, enrollment_ids=[e["id"] for e in ended])

    def _bulk_enroll(self, caller: Caller, action: dict[str, Any]) -> dict[str, Any]:
        kind, sequence_id = self._kind_and_id(caller, action)
        enrollment = self.services.enrollment
        if "filter" in action or "customer_filter" in action:
            key = "filter" if "filter" in action else "customer_filter"
            if not isinstance(action[key], dict):
                raise ActionFailed("invalid_filter", f"bulk_enroll {key} must be an object")
            enrolled = skipped = already = 0
            cursor = None
            while True:  # the service checks the filter's fields: a wrong one is a failed outcome
                page = enrollment.enroll_matching(
                    caller,
                    kind,
                    sequence_id,
                    contact_filter=action.get("filter"),
                    customer_filter=action.get("customer_filter"),
                    cursor=cursor,
                    source="hook",
                )
                if cursor is None:  # the first page counts them; later pages count ours too
                    already = page.already_enrolled
                enrolled += page.enrolled
                skipped += page.skipped
                cursor = page.next_cursor
                if not page.has_more or not cursor:
                    break
            return _outcome(
                "done", sequence_id=sequence_id, enrolled=enrolled, skipped=skipped, already_enrolled=already
            )
        contacts = action.get("contacts")
        if isinstance(contacts, str | dict):
            contacts = [contacts]
        if not isinstance(contacts, list):
            raise ActionFailed("invalid_contacts", "bulk_enroll contacts must be a list")
        if len(contacts) > MAX_BULK_CONTACTS:
            raise ActionFailed("too_many_contacts", f"at most {MAX_BULK_CONTACTS} contacts per action")
        ids, emails = [], []
        for item in contacts:
            if isinstance(item, dict):
                ref = self._contact_ref(item)
                if ref.kind == "phone":
                    raise ActionFailed("invalid_contacts", "bulk_enroll identifies contacts by email or id")
                (emails if ref.kind == "email" else ids).append(ref.value)
            elif isinstance(item, str) and item.strip():
                (emails if "@" in item else ids).append(item.strip())
        if not ids and not emails:
            return _outcome("skipped", code="no_contacts", message="the event lists no contacts")
        result = enrollment.enroll_bulk(
            caller,
            kind,
            sequence_id,
            customer_ids=ids,
            emails=emails,
            source="hook",
            max_contacts=MAX_BULK_CONTACTS,
        )
        return _outcome("done", sequence_id=sequence_id, enrolled=result.enrolled, skipped=result.skipped)

    def _upsert_contact(self, caller: Caller, action: dict[str, Any]) -> dict[str, Any]:
        contacts = self.services.contacts
        fields = dict(action.get("set") or {})
        tags = action.get("tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        if not isinstance(tags, list):
            raise ActionFailed("invalid_tags", "tags must be a list or a comma-separated string")
        identity = {
            k: action[k] for k in ("id", "email", "phone", "attribute") if action.get(k) not in (None, "", {})
        }
        if not identity:
            raise ActionFailed("missing_contact", "no contact identifier (email, phone or id) for this event")
        existing = self._find(caller, identity)
        if existing is None:
            if not ({"email", "phone"} & set(identity)):  # an id or attribute alone cannot create one
                raise ActionFailed("contact_not_found", f"no contact with {_describe(identity)}")
            attributes = {**(fields.pop("attributes", None) or {}), **(identity.get("attribute") or {})}
            values = {
                **fields,
                **{k: v for k, v in identity.items() if k in ("email", "phone")},
                "tags": tags,
            }
            if attributes:
                values["attributes"] = attributes
            created = contacts.create_contact(caller, values)
            return _outcome("done", operation="created", contact_id=created["id"])
        changes = {k: v for k, v in fields.items() if existing.get(k) != v}
        for name in ("email", "phone"):  # fill in an identifier the contact did not have yet
            if identity.get(name) and not existing.get(name):
                changes[name] = identity[name]
        if changes:
            contacts.update_contact(caller, existing["id"], changes)
        new_tags = [t for t in tags if t not in existing.get("tags", [])]
        if new_tags:
            contacts.add_tags(caller, existing["id"], new_tags)
        if not changes and not new_tags:
            return _outcome(
                "skipped", code="unchanged", message="the contact already matches", contact_id=existing["id"]
            )
        return _outcome(
            "done",
            operation="updated",
            contact_id=existing["id"],
            fields=sorted(changes),
            tags_added=new_tags,
        )

    def _find(self, caller: Caller, identity: dict[str, Any]) -> dict[str, Any] | None:
        contacts = self.services.contacts
        if identity.get("id"):
            try:
                return contacts.get_contact(caller, str(identity["id"]))
            except NotFound:
                return None
        if isinstance(identity.get("attribute"), dict) and len(identity["attribute"]) == 1:
            [(name, value)] = identity["attribute"].items()
            found = contacts.find_by_attribute(caller, name, str(value))
            if found is not None:
                return found
        if identity.get("email"):
            found = contacts.find_by_email(caller, str(identity["email"]))
            if found is not None:
                return found
        if identity.get("phone"):
            matches = contacts.find_by_phone(caller, str(identity["phone"]))
            if matches:
                return matches[0]
        return None


def _describe(identity: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in identity.items())
