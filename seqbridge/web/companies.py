"""Companies (accounts)."""

from __future__ import annotations

from flask import Blueprint

from seqbridge.storage.contacts import COMPANY_FILTER_COLUMNS
from seqbridge.web.envelope import body, caller, no_content, ok, page, query
from seqbridge.web.pipeline import services

bp = Blueprint("companies", __name__, url_prefix="/api/v1/companies")


@bp.get("")
def list_companies():
    q = query()
    filters = {k: q[k] for k in COMPANY_FILTER_COLUMNS if k in q}
    return page(services().companies.list_companies(caller(), filters, q["limit"], q["offset"]))


@bp.post("")
def create_company():
    return ok(services().companies.create_company(caller(), body()), 201)


@bp.get("/<company_id>")
def get_company(company_id: str):
    return ok(services().companies.get_company(caller(), company_id))


@bp.patch("/<company_id>")
def update_company(company_id: str):
    return ok(services().companies.update_company(caller(), company_id, body()))


@bp.delete("/<company_id>")
def delete_company(company_id: str):
    services().companies.delete_company(caller(), company_id)
    return no_content()
