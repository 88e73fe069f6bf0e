"""Filters for enrolling by filter: which fields each axis may use (the event-queue seed's "entity
axis distinction": contact fields on ``contact_filter``, company fields on ``customer_filter``),
checked the same way by the API, the mapping validator and enrolling itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqbridge.errors import BadRequest
from seqbridge.storage.contacts import COMPANY_FILTER_COLUMNS

#: Fields each filter axis may use (the event-queue seed's "entity axis distinction"): the
#: contact's own, and every company column a list filter matches but the company's name.
CONTACT_FILTER_FIELDS = (
    *("contact_type", "source", "email", "first_name", "last_name", "job_title"),
    *("city", "state", "country"),
)
CUSTOMER_FILTER_FIELDS = tuple(c for c in COMPANY_FILTER_COLUMNS if c != "name")
_ELSEWHERE = {
    "opportunity_type": "opportunity_type lives on deals and is not filterable here; "
    "use automations with deal triggers instead"
}


@dataclass(frozen=True)
class FilterProblem:
    """One field a filter cannot take: ``axis`` (contact_filter or customer_filter), ``field``,
    ``code`` (``wrong_filter_axis`` or ``invalid_filter``) and a message naming what to use."""

    axis: str
    field: str
    code: str
    message: str


def _filter_value_ok(value: Any) -> bool:
    scalar = (str, bool)
    return isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )


def filter_problems(contact_filter: Any, customer_filter: Any) -> list[FilterProblem]:
    """Every field of the two filters that is on the wrong axis, unknown, or holds a value a filter
    cannot take (a string, a boolean or a list of them). The API and the mapping validator both
    use this check, and enrolling by filter runs it again on the computed filter."""
    problems = []
    for axis, given, allowed, other, other_fields in (
        ("contact_filter", contact_filter, CONTACT_FILTER_FIELDS, "customer_filter", CUSTOMER_FILTER_FIELDS),
        ("customer_filter", customer_filter, CUSTOMER_FILTER_FIELDS, "contact_filter", CONTACT_FILTER_FIELDS),
    ):
        if given is not None and not isinstance(given, dict):
            problems.append(FilterProblem(axis, "", "invalid_filter", f"{axis} must be an object of fields"))
            continue
        for name, value in (given or {}).items():
            if name in allowed:
                if not _filter_value_ok(value):
                    problems.append(
                        FilterProblem(
                            axis,
                            name,
                            "invalid_filter",
                            f"{name} must be a string, a boolean or a list of them",
                        )
                    )
                continue
            if name in _ELSEWHERE:
                message = _ELSEWHERE[name]
            elif name in other_fields:
                owner = "company/customer" if other == "customer_filter" else "contact"
                message = f"{name} is a {owner} field: filter on it with {other}, not {axis}"
            else:
                message = f"unknown field {name}; {axis} takes {', '.join(allowed)}"
            problems.append(FilterProblem(axis, str(name), "wrong_filter_axis", message))
    return problems


def check_filters(contact_filter: Any, customer_filter: Any) -> None:
    """Refuse a field used on the wrong axis (naming the filter to use), an unknown field, or a
    value a filter cannot take. Raises :class:`BadRequest` (``wrong_filter_axis`` or
    ``invalid_filter``) with every problem in ``details.errors``."""
    problems = filter_problems(contact_filter, customer_filter)
    if problems:
        errors = [
            {"path": f"$.{p.axis}" + (f".{p.field}" if p.field else ""), "in": "body", "message": p.message}
            for p in problems
        ]
        raise BadRequest(problems[0].message, code=problems[0].code, details={"errors": errors})
