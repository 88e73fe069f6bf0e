"""Turning what callers send into the canonical form we store: emails, phones, tags, zones."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from seqbridge.errors import ValidationFailed


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}", details={"errors": [{"path": f"$.{field}", "in": "body", "message": message}]}
    )


def normalize_email(email: str, field: str = "email") -> tuple[str, str]:
    """Return (email as given but trimmed, lower-cased lookup form). Raises :class:`ValidationFailed`."""
    email = email.strip()
    try:
        validate_email(email, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise _invalid(field, str(exc)) from None
    return email, email.lower()


def normalize_phone(phone: str, default_region: str | None = None, field: str = "phone") -> str:
    """Return ``phone`` in E.164 (``+16505551234``). Raises :class:`ValidationFailed`.

    A number without ``+`` is read in ``default_region`` when one is set; otherwise it is taken as
    international without the plus, which is how WhatsApp sends ``from`` (``16505551234``).
    """
    found = _e164(phone, default_region)
    if found is None:
        raise _invalid(
            field, f"{phone!r} is not a valid phone number; use international form, e.g. +14155550123"
        )
    return found


@lru_cache(maxsize=8192)
def _e164(phone: str, default_region: str | None) -> str | None:
    """E.164 for ``phone``, or None (remembered: a webhook's number is read several times, and
    parsing one costs a quarter of a millisecond)."""
    raw = phone.strip()
    if raw.lower().startswith("whatsapp:"):
        raw = raw[len("whatsapp:") :]
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    candidates = [raw] if raw.startswith("+") else ([raw] if default_region else []) + [f"+{raw}"]
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, None if candidate.startswith("+") else default_region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def normalize_tags(tags: list[str], field: str = "tags") -> list[str]:
    """Trim, drop duplicates, keep order. Raises :class:`ValidationFailed` on empty or long tags."""
    seen: dict[str, None] = {}
    for index, tag in enumerate(tags):
        tag = tag.strip()
        if not tag or len(tag) > 100:
            raise _invalid(f"{field}[{index}]", "a tag is 1 to 100 characters")
        seen.setdefault(tag, None)
    return list(seen)


def normalize_timezone(name: str, field: str = "timezone") -> str:
    """Return an IANA zone name. Raises :class:`ValidationFailed` for unknown zones."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(field, f"{name!r} is not an IANA time zone, e.g. Europe/Berlin") from None
    return name
