"""Replay jobs: replay by filter, run by the worker in batches, claimed under a lease."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import deliveries, replay_jobs

#: A job that can still make progress.
_OPEN = ("queued", "running")


def _matching(org_id: str, flt: dict[str, Any], received_before: datetime):
    """The WHERE clause of a job's filter (every part reads ix_deliveries_org_status_received)."""
    conditions = [
        deliveries.c.org_id == org_id,
        deliveries.c.status.in_(flt["statuses"]),
        deliveries.c.received_at < received_before,
    ]
    if flt.get("hook"):
        conditions.append(deliveries.c.hook == flt["hook"])
    if flt.get("since"):
        conditions.append(deliveries.c.received_at >= flt["since"])
    return conditions


class ReplayJobStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # The filter ----------------------------------------------------------------------------------

    def count_matching(self, org_id: str, flt: dict[str, Any], received_before: datetime) -> int:
        """How many deliveries a filter matches now (``flt`` has parsed datetimes)."""
        query = select(func.count()).select_from(deliveries).where(*_matching(org_id, flt, received_before))
        return int(self.conn.execute(query).scalar_one())

    def next_matching(
        self,
        org_id: str,
        flt: dict[str, Any],
        received_before: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[datetime, str]]:
        """(received_at, id) of the next ``limit`` matching deliveries after ``after``, oldest first."""
        query = select(deliveries.c.received_at, deliveries.c.id).where(
            *_matching(org_id, flt, received_before)
        )
        if after:
            at, last_id = after
            query = query.where(
                or_(
                    deliveries.c.received_at > at,
                    and_(deliveries.c.received_at == at, deliveries.c.id > last_id),
                )
            )
        query = query.order_by(deliveries.c.received_at, deliveries.c.id).limit(limit)
        return [(r[0], r[1]) for r in self.conn.execute(query)]

    # Jobs ----------------------------------------------------------------------------------------

    def insert_job(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(replay_jobs).values(**row))

    def get_job(self, org_id: str, job_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
        query = select(replay_jobs).where(replay_jobs.c.org_id == org_id, replay_jobs.c.id == job_id)
        if for_update:
            query = query.with_for_update()
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def list_jobs(
        self, org_id: str, *, before: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first, keyset-paginated on (created_at, id)."""
        query = select(replay_jobs).where(replay_jobs.c.org_id == org_id)
        if before:
            at, last_id = before
            query = query.where(
                or_(
                    replay_jobs.c.created_at < at,
                    and_(replay_jobs.c.created_at == at, replay_jobs.c.id < last_id),
                )
            )
        query = query.order_by(replay_jobs.c.created_at.desc(), replay_jobs.c.id.desc()).limit(limit)
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def any_open(self, now: datetime) -> bool:
        """Is a job waiting, or running under an expired lease? (A probe of ix_replay_jobs_status.)"""
        query = select(replay_jobs.c.id).where(
            replay_jobs.c.status.in_(_OPEN),
            or_(replay_jobs.c.lease_expires_at.is_(None), replay_jobs.c.lease_expires_at < now),
        )
        return self.conn.execute(query.limit(1)).first() is not None

    def claim_one(self, worker_id: str, now: datetime, lease_until: datetime) -> dict[str, Any] | None:
        """Lease the oldest open job nobody holds (or whose holder's lease expired); return it."""
        query = (
            select(replay_jobs.c.id)
            .where(
                replay_jobs.c.status.in_(_OPEN),
                or_(replay_jobs.c.lease_expires_at.is_(None), replay_jobs.c.lease_expires_at < now),
            )
            .order_by(replay_jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        job_id = self.conn.execute(query).scalar()
        if job_id is None:
            return None
        claimed = self.conn.execute(
            update(replay_jobs)
            .where(replay_jobs.c.id == job_id, replay_jobs.c.status.in_(_OPEN))
            .values(status="running", lease_owner=worker_id, lease_expires_at=lease_until, updated_at=now)
        ).rowcount
        if not claimed:
            return None
        return dict(
            self.conn.execute(select(replay_jobs).where(replay_jobs.c.id == job_id)).mappings().first()
        )

    def lock_leased(self, job_id: str, worker_id: str) -> dict[str, Any] | None:
        """The job, locked for the rest of the transaction, if ``worker_id`` still holds it running."""
        row = (
            self.conn.execute(
                select(replay_jobs)
                .where(
                    replay_jobs.c.id == job_id,
                    replay_jobs.c.status == "running",
                    replay_jobs.c.lease_owner == worker_id,
                )
                .with_for_update()
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def update_job(self, job_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(update(replay_jobs).where(replay_jobs.c.id == job_id).values(**values))

    def cancel(self, org_id: str, job_id: str, now: datetime) -> bool:
        """Cancel an open job; False if it had already finished."""
        return (
            self.conn.execute(
                update(replay_jobs)
                .where(
                    replay_jobs.c.org_id == org_id,
                    replay_jobs.c.id == job_id,
                    replay_jobs.c.status.in_(_OPEN),
                )
                .values(
                    status="cancelled",
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            ).rowcount
            == 1
        )
