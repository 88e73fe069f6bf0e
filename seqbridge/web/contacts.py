"""Contacts (persons). ``/api/v1/customers`` serves the same resource under the sequences
dialect's name, with ``customer_id`` meaning the contact's id."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.web.envelope import body, caller, no_content, ok, page, query
from seqbridge.web.pipeline import services
from seqbridge.web.sequences import enrollment_to_api

FILTERS = (
    "email",
    "phone",
    "status",
    "contact_type",
    "source",
    "job_title",
    "city",
    "state",
    "country",
    "company_id",
    "tag",
    "converted",
    "first_name",
    "last_name",
)


def person_blueprint(name: str, prefix: str, id_param: str) -> Blueprint:
    """The person routes under ``prefix`` (one for ``contacts``, one for the ``customers`` alias)."""
    bp = Blueprint(name, __name__, url_prefix=prefix)
    item = f"/<{id_param}>"

    @bp.get("")
    def list_people():
        q = query()
        filters = {k: q[k] for k in FILTERS if k in q}
        return page(services().contacts.list_contacts(caller(), filters, q["limit"], q["offset"]))

    @bp.post("")
    def create_person():
        return ok(services().contacts.create_contact(caller(), body()), 201)

    @bp.get(item)
    def get_person(**ids: str):
        return ok(services().contacts.get_contact(caller(), ids[id_param]))

    @bp.patch(item)
    def update_person(**ids: str):
        return ok(services().contacts.update_contact(caller(), ids[id_param], body()))

    @bp.delete(item)
    def delete_person(**ids: str):
        services().contacts.delete_contact(caller(), ids[id_param])
        return no_content()

    @bp.post(f"{item}/tags")
    def add_tags(**ids: str):
        return ok(services().contacts.add_tags(caller(), ids[id_param], body()["tags"]))

    @bp.delete(f"{item}/tags/<tag>")
    def remove_tag(tag: str, **ids: str):
        return ok(services().contacts.remove_tag(caller(), ids[id_param], tag))

    return bp


contacts_bp = person_blueprint("contacts", "/api/v1/contacts", "contact_id")
customers_bp = person_blueprint("customers", "/api/v1/customers", "customer_id")


@contacts_bp.post("/<contact_id>/unenroll")
def unenroll_contact(contact_id: str):
    """Exit the contact from one sequence (``sequence_id``) or from everything, with a reason."""
    given = body() or {}
    ended = services().enrollment.exit_contact(
        caller(), contact_id, given.get("sequence_id"), given.get("reason") or "manual"
    )
    return ok(
        {
            "contact_id": contact_id,
            "enrollments_ended": len(ended),
            "enrollments": [enrollment_to_api(e) for e in ended],
        }
    )
