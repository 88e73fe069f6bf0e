"""Companies: the accounts contacts belong to (``customer_filter`` in the event-queue dialect)."""

from __future__ import annotations

from typing import Any

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import NotFound
from seqbridge.services.common import OffsetPage, format_time, new_id
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx

FIELDS = ("name", "account_type", "industry", "is_customer", "is_supplier", "city", "state", "country")


def company_to_api(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        **{name: row[name] for name in FIELDS},
        "is_customer": bool(row["is_customer"]),
        "is_supplier": bool(row["is_supplier"]),
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }


class CompanyService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def get_company(self, caller: Caller, company_id: str) -> dict[str, Any]:
        """The company, or :class:`NotFound` (also for another organization's company)."""
        with self.db.transaction(write=False) as tx:
            return company_to_api(self._load(tx, caller, company_id))

    def list_companies(self, caller: Caller, filters: dict[str, Any], limit: int, offset: int) -> OffsetPage:
        with self.db.transaction(write=False) as tx:
            rows, total = tx.companies.list_companies(caller.org_id, filters, limit, offset)
        return OffsetPage([company_to_api(r) for r in rows], total, limit, offset)

    def create_company(self, caller: Caller, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        row = {
            "id": new_id(),
            "org_id": caller.org_id,
            **dict.fromkeys(FIELDS),
            "is_customer": False,
            "is_supplier": False,
            **{k: v for k, v in fields.items() if k in FIELDS},
            "created_at": now,
            "updated_at": now,
        }
        row["name"] = row["name"].strip()
        with self.db.transaction() as tx:
            tx.companies.insert_company(row)
            company = company_to_api(row)
            record(tx, caller, tag_for(caller, "company", "created"), "company", row["id"], company, now)
        return company

    def update_company(self, caller: Caller, company_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        values = {k: v for k, v in fields.items() if k in FIELDS}
        with self.db.transaction() as tx:
            self._load(tx, caller, company_id)
            tx.companies.update_company(caller.org_id, company_id, {**values, "updated_at": now})
            company = company_to_api(self._load(tx, caller, company_id))
            record(
                tx,
                caller,
                tag_for(caller, "company", "updated"),
                "company",
                company_id,
                {"changes": {k: company[k] for k in values}},
                now,
            )
        return company

    def delete_company(self, caller: Caller, company_id: str) -> None:
        """Delete the company; its contacts stay, unlinked."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            before = self._load(tx, caller, company_id)
            tx.companies.delete_company(caller.org_id, company_id)
            record(
                tx,
                caller,
                tag_for(caller, "company", "deleted"),
                "company",
                company_id,
                {"name": before["name"]},
                now,
            )

    def _load(self, tx: Tx, caller: Caller, company_id: str) -> dict[str, Any]:
        row = tx.companies.get_company(caller.org_id, company_id)
        if row is None:
            raise NotFound(f"no company with id {company_id}")
        return row
