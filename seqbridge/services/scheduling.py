"""When each step runs. Used by enrollment (the first tasks), by step edits, and by the processor
(the next task after a send).

A sequence keeps one open task per enrollment: the next step, scheduled from the previous send.
An event queue plans every step's task at enrollment, each delay counted from the enrollment
anchor or from the previous step, as the step says.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from seqbridge.context import Caller
from seqbridge.storage.tx import Tx


def step_delay(step: dict[str, Any]) -> timedelta:
    return timedelta(days=int(step["delay_days"] or 0), minutes=int(step["delay_minutes"] or 0))


def task_idempotency_key(task: dict[str, Any]) -> str:
    """Stable per enrollment and step: a send records its outcome under this key (Message-ID,
    webhook-id), so a retry after a crash is recognised."""
    return f"{task['enrollment_id']}:{task['step_id']}"


def task_row(
    enrollment: dict[str, Any], step: dict[str, Any], scheduled_for: datetime, now: datetime
) -> dict:
    """A pending task for ``step`` of ``enrollment``. Every row has the same keys (for executemany)."""
    return {
        "org_id": enrollment["org_id"],
        "sequence_id": enrollment["sequence_id"],
        "enrollment_id": enrollment["id"],
        "step_id": step["id"],
        "contact_id": enrollment["contact_id"],
        "position": step["position"],
        "status": "pending",
        "scheduled_for": scheduled_for,
        "remaining_seconds": None,
        "attempts": 0,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
    }


_NO_STEPS_LEFT = "no steps left after a step was deleted"


class Scheduler:
    def plan(
        self, kind: str, steps: list[dict[str, Any]], enrollment: dict[str, Any], now: datetime
    ) -> list[dict]:
        """The tasks to create when ``enrollment`` starts, ``steps`` in position order."""
        if not steps:
            return []
        anchor = enrollment["enrollment_time"]
        if kind == "sequence":
            return [task_row(enrollment, steps[0], anchor + step_delay(steps[0]), now)]
        tasks, previous = [], anchor
        for step in steps:
            base = anchor if step["delay_anchor"] == "enrollment" else previous
            previous = base + step_delay(step)
            tasks.append(task_row(enrollment, step, previous, now))
        return tasks

    def step_removed(
        self,
        tx: Tx,
        caller: Caller,
        kind: str,
        sequence_id: str,
        step: dict[str, Any],
        tasks: list[dict[str, Any]],
        now: datetime,
    ) -> int:
        """Cancel ``tasks``, the open tasks of a just-deleted step (read before the delete); a
        sequence enrollment moves to the step that now holds that position, at the same time, or
        completes if there is none. Returns how many tasks were cancelled."""
        if not tasks:
            return 0
        steps = tx.sequences.list_steps([sequence_id])
        successor = next((s for s in steps if s["position"] >= step["position"]), None)
        from seqbridge.services.lifecycle import LIVE, EnrollmentStatus, move

        for task in tasks:
            tx.enrollments.update_task(
                task["id"],
                {"status": "cancelled", "last_error": "step deleted", "updated_at": now, "finished_at": now},
            )
            enrollment = tx.enrollments.get_enrollment(caller.org_id, task["enrollment_id"])
            if kind != "sequence":
                # Queue tasks are planned per step: the others keep their times. An enrollment
                # left with nothing to run is complete.
                if not tx.enrollments.open_tasks(enrollment["id"]) and enrollment["status"] in LIVE:
                    move(tx, caller, [enrollment], EnrollmentStatus.COMPLETED, now, note=_NO_STEPS_LEFT)
                continue
            if successor is not None:
                replacement = task_row(enrollment, successor, task["scheduled_for"] or now, now)
                if task["status"] == "paused":
                    replacement.update(
                        status="paused", scheduled_for=None, remaining_seconds=task["remaining_seconds"]
                    )
                tx.enrollments.insert_tasks([replacement])
            elif enrollment["status"] in LIVE:
                move(tx, caller, [enrollment], EnrollmentStatus.COMPLETED, now, note=_NO_STEPS_LEFT)
        for enrollment_id in {t["enrollment_id"] for t in tasks}:
            self.mirror(tx, enrollment_id, now)
        return len(tasks)

    def mirror(self, tx: Tx, enrollment_id: str, now: datetime) -> None:
        """Copy the earliest open task onto the enrollment (``current_step_id``, ``next_send_at``)."""
        open_tasks = [t for t in tx.enrollments.open_tasks(enrollment_id) if t["status"] != "leased"]
        pending = [t for t in open_tasks if t["scheduled_for"] is not None]
        first = (
            min(pending, key=lambda t: t["scheduled_for"])
            if pending
            else (open_tasks[0] if open_tasks else None)
        )
        tx.enrollments.update_enrollment(
            enrollment_id,
            {
                "current_step_id": first["step_id"] if first else None,
                "next_send_at": first["scheduled_for"] if first else None,
                "updated_at": now,
            },
        )
