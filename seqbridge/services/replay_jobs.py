"""Replay by filter, as a job: every delivery matching a filter is queued again, in the
background, with progress you can watch and a cancel that stops it between two batches.

- The filter is frozen when the job is created: ``received_before`` is the earlier of its
  ``until`` and that moment, so what arrives later is not part of it, and the job walks the
  matching deliveries oldest first on a (received_at, id) cursor, so each is visited once,
  even when its replay makes it match again (a replayed ``processed`` delivery ends processed).
- Each delivery is replayed through :meth:`DeliveryService.replay`, with the same checks and
  the same audit event (``api:delivery:replayed``, as the key that created the job, with
  ``via.replay_job``); one that is no longer replayable (queued again meanwhile) is skipped.
- The worker runs a batch per turn (``REPLAY_JOB_BATCH``): the batch's replays and the job's
  progress commit in one transaction, so a crash repeats nothing and loses nothing. The job is
  leased while a batch runs; a cancel waits for the batch in hand and stops the rest.
- The job itself is audited: ``api:replay_job:created`` (filter and count),
  ``api:replay_job:cancelled``, ``worker:replay_job:finished`` (the counts).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Actor, ActorType, Caller
from seqbridge.errors import BadRequest, Conflict, NotFound
from seqbridge.services.common import CursorPage, decode_time_cursor, format_time, new_id, time_cursor
from seqbridge.services.inbox import REPLAYABLE
from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.replay")

#: What a replay job replays unless told otherwise: what went wrong.
DEFAULT_STATUSES = ("failed", "dead")
_REPLAYABLE = tuple(s.value for s in REPLAYABLE)


class ReplayJobStatus(StrEnum):
    QUEUED = "queued"  # created; no batch has run yet
    RUNNING = "running"  # at least one batch ran; more may match
    DONE = "done"  # every matching delivery was visited
    CANCELLED = "cancelled"  # stopped by an operator; what was replayed stays replayed


def job_to_api(row: dict[str, Any]) -> dict[str, Any]:
    handled = row["replayed"] + row["skipped"]
    done = row["status"] == ReplayJobStatus.DONE
    return {
        "id": row["id"],
        "status": row["status"],
        "filter": row["filter"],
        "received_before": format_time(row["received_before"]),
        "total": row["total"],
        "replayed": row["replayed"],
        "skipped": row["skipped"],
        "progress": 1.0 if done or row["total"] == 0 else round(min(1.0, handled / row["total"]), 4),
        "created_by": row["created_by"],
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
        "finished_at": format_time(row["finished_at"]),
    }


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class ReplayJobService:
    def __init__(self, db: Database, clock: Clock, settings: dict[str, Any], deliveries) -> None:
        self.db = db
        self.clock = clock
        self.deliveries = deliveries  # DeliveryService: every replay goes through its replay()
        self.lease = timedelta(seconds=settings["PROCESSOR_LEASE_SECONDS"])

    # The filter ----------------------------------------------------------------------------------

    @staticmethod
    def make_filter(
        hook: str | None, statuses: list[str] | None, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]:
        """The stored form of a filter (times as ISO text). Raises :class:`BadRequest`
        ``not_replayable`` for a status that cannot be replayed, ``invalid_filter`` for an
        empty time range."""
        statuses = sorted(set(statuses or DEFAULT_STATUSES))
        wrong = [s for s in statuses if s not in _REPLAYABLE]
        if wrong:
            raise BadRequest(
                f"Only {', '.join(_REPLAYABLE)} deliveries can be replayed, not {', '.join(wrong)}.",
                code="not_replayable",
                details={"statuses": wrong},
            )
        if since and until and since >= until:
            raise BadRequest("since must be before until.", code="invalid_filter")
        return {
            "hook": hook or None,
            "statuses": statuses,
            "since": format_time(since),
            "until": format_time(until),
        }

    @staticmethod
    def _query_filter(flt: dict[str, Any]) -> dict[str, Any]:
        return {**flt, "since": _parse_time(flt.get("since")), "until": _parse_time(flt.get("until"))}

    def _bound(self, flt: dict[str, Any], now: datetime) -> datetime:
        """The job's exclusive upper bound: ``until``, but never later than now (inclusive)."""
        until = _parse_time(flt.get("until"))
        latest = now + timedelta(microseconds=1)
        return min(until, latest) if until else latest

    def count(self, caller: Caller, flt: dict[str, Any]) -> int:
        """How many deliveries a filter (from :meth:`make_filter`) matches now."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            return tx.replay_jobs.count_matching(
                caller.org_id, self._query_filter(flt), self._bound(flt, now)
            )

    # The operator's side -------------------------------------------------------------------------

    def create(self, caller: Caller, flt: dict[str, Any]) -> dict[str, Any]:
        """Create a job for a filter (from :meth:`make_filter`); the worker runs it."""
        now = self.clock.now()
        bound = self._bound(flt, now)
        with self.db.transaction() as tx:
            total = tx.replay_jobs.count_matching(caller.org_id, self._query_filter(flt), bound)
            row = {
                "id": new_id(),
                "org_id": caller.org_id,
                "status": ReplayJobStatus.QUEUED.value,
                "filter": flt,
                "received_before": bound,
                "total": total,
                "replayed": 0,
                "skipped": 0,
                "cursor_at": None,
                "cursor_id": None,
                "created_by": caller.actor.id,
                "request_id": caller.request_id,
                "lease_owner": None,
                "lease_expires_at": None,
                "created_at": now,
                "updated_at": now,
                "finished_at": None,
            }
            tx.replay_jobs.insert_job(row)
            record(
                tx,
                caller,
                tag_for(caller, "replay_job", "created"),
                "replay_job",
                row["id"],
                {"filter": flt, "total": total},
                now,
            )
        return job_to_api(row)

    def get(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """The job, or :class:`NotFound` ``replay_job_not_found`` (also another organization's)."""
        with self.db.transaction(write=False) as tx:
            row = tx.replay_jobs.get_job(caller.org_id, job_id)
        if row is None:
            raise NotFound(f"No replay job with id {job_id}.", code="replay_job_not_found")
        return job_to_api(row)

    def list(self, caller: Caller, *, cursor: str | None, limit: int) -> CursorPage:
        """The organization's jobs, newest first."""
        before = decode_time_cursor(cursor)
        with self.db.transaction(write=False) as tx:
            rows = tx.replay_jobs.list_jobs(caller.org_id, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = time_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return CursorPage([job_to_api(r) for r in rows], limit, next_cursor)

    def cancel(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """Stop a queued or running job after the batch in hand. Raises :class:`NotFound`, or
        :class:`Conflict` ``replay_job_finished`` for a job that is done or already cancelled."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = tx.replay_jobs.get_job(caller.org_id, job_id, for_update=True)
            if row is None:
                raise NotFound(f"No replay job with id {job_id}.", code="replay_job_not_found")
            if not tx.replay_jobs.cancel(caller.org_id, job_id, now):
                raise Conflict(
                    f"The replay job is already {row['status']}.",
                    code="replay_job_finished",
                    details={"status": row["status"]},
                )
            record(
                tx,
                caller,
                tag_for(caller, "replay_job", "cancelled"),
                "replay_job",
                job_id,
                {"replayed": row["replayed"], "skipped": row["skipped"], "total": row["total"]},
                now,
            )
            return job_to_api(tx.replay_jobs.get_job(caller.org_id, job_id))

    # The worker's side ---------------------------------------------------------------------------

    def run_batch(self, worker_id: str, batch: int) -> int:
        """Lease one open job, replay its next ``batch`` deliveries and record the progress in
        one transaction; return how many deliveries were handled (0: nothing to do)."""
        now = self.clock.now()
        with self.db.transaction(write=False) as tx:
            if not tx.replay_jobs.any_open(now):  # an idle poll only reads
                return 0
        with self.db.transaction() as tx:
            job = tx.replay_jobs.claim_one(worker_id, now, now + self.lease)
        if job is None:
            return 0
        with self.db.transaction() as tx:
            job = tx.replay_jobs.lock_leased(job["id"], worker_id)
            if job is None:
                return 0  # cancelled between the claim and now
            flt = self._query_filter(job["filter"])
            after = (job["cursor_at"], job["cursor_id"]) if job["cursor_at"] else None
            targets = tx.replay_jobs.next_matching(job["org_id"], flt, job["received_before"], after, batch)
            caller = Caller(
                job["org_id"],
                Actor(ActorType.API_KEY, job["created_by"]),
                job["request_id"],
                via={"replay_job": job["id"]},
            )
            replayed = skipped = 0
            for _, delivery_id in targets:
                try:
                    self.deliveries.replay(caller, delivery_id)  # a SAVEPOINT of this transaction
                    replayed += 1
                except (Conflict, NotFound):  # queued again or pruned meanwhile
                    skipped += 1
            values: dict[str, Any] = {
                "replayed": job["replayed"] + replayed,
                "skipped": job["skipped"] + skipped,
                "lease_owner": None,
                "lease_expires_at": None,
                "updated_at": now,
            }
            if targets:
                values["cursor_at"], values["cursor_id"] = targets[-1]
            if len(targets) < batch:
                values.update(status=ReplayJobStatus.DONE.value, finished_at=now)
                worker = Caller(job["org_id"], Actor(ActorType.WORKER, worker_id), job["request_id"])
                record(
                    tx,
                    worker,
                    tag_for(worker, "replay_job", "finished"),
                    "replay_job",
                    job["id"],
                    {"replayed": values["replayed"], "skipped": values["skipped"], "total": job["total"]},
                    now,
                )
            tx.replay_jobs.update_job(job["id"], values)
        log.info(
            "replay job %s: %d replayed, %d skipped in this batch",
            job["id"],
            replayed,
            skipped,
            extra={"org": job["org_id"]},
        )
        return max(len(targets), 1)
