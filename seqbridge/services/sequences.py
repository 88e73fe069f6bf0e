"""Sequences and their steps. Event queues are sequences of another ``kind``; each API dialect
passes its kind and shapes the answers, the rules live here once."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from seqbridge.audit import record, tag_for
from seqbridge.clock import Clock
from seqbridge.context import Caller
from seqbridge.errors import BadRequest, Conflict, NotFound, ValidationFailed
from seqbridge.services.common import OffsetPage, new_id
from seqbridge.services.scheduling import Scheduler
from seqbridge.storage.db import Database
from seqbridge.storage.tx import Tx
from seqbridge.templating import TemplateError, compile_template


class SequenceKind(StrEnum):
    SEQUENCE = "sequence"  # the sequences and bot dialects
    EVENT_QUEUE = "event_queue"  # the event-queue dialect


class SequenceStatus(StrEnum):
    DRAFT = "draft"  # being built; cannot be enrolled into
    ACTIVE = "active"  # enrolls and sends
    PAUSED = "paused"  # enrolls, but holds every send until active again
    ARCHIVED = "archived"  # retired; cannot be enrolled into, holds what is left


class StepAction(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    ADD_TAG = "add_tag"
    UPDATE_CONTACT = "update_contact"


SEQUENCE_FIELDS = (
    "name",
    "description",
    "trigger_type",
    "trigger_config",
    "exit_conditions",
    "status",
    "from_email",
    "from_name",
    "reply_to_email",
    "send_window",
)
STEP_FIELDS = (
    "delay_days",
    "delay_minutes",
    "delay_anchor",
    "action",
    "subject",
    "body",
    "webhook_url",
    "config",
)

_NOUN = {SequenceKind.SEQUENCE: "sequence", SequenceKind.EVENT_QUEUE: "event queue"}


def _field_error(path: str, message: str, code: str = "validation_failed") -> ValidationFailed:
    return ValidationFailed(
        f"{path}: {message}",
        code=code,
        details={"errors": [{"path": path, "in": "body", "message": message}]},
    )


class SequenceService:
    def __init__(self, db: Database, clock: Clock, scheduler: Scheduler) -> None:
        self.db = db
        self.clock = clock
        self.scheduler = scheduler

    # Sequences --------------------------------------------------------------------------

    def load(self, tx: Tx, caller: Caller, kind: SequenceKind, sequence_id: str, *, lock: bool = False):
        """The sequence row, or :class:`NotFound` (also for another organization's, or another kind's)."""
        row = tx.sequences.get_sequence(caller.org_id, sequence_id, kind.value, for_update=lock)
        if row is None:
            raise NotFound(f"No {_NOUN[kind]} with id {sequence_id}.")
        return row

    def resolve_id(self, caller: Caller, kind: SequenceKind, id_or_name: str) -> str:
        """The id of the sequence whose id, or else whose unique name, is ``id_or_name``.

        Raises :class:`NotFound`, or :class:`Conflict` ``ambiguous_name`` when several share the name.
        """
        with self.db.transaction(write=False) as tx:
            if tx.sequences.get_sequence(caller.org_id, id_or_name, kind.value) is not None:
                return id_or_name
            ids = tx.sequences.find_sequence_ids_by_name(caller.org_id, id_or_name, kind.value)
        if not ids:
            raise NotFound(f"No {_NOUN[kind]} with id or name {id_or_name!r}.")
        if len(ids) > 1:
            raise Conflict(
                f"{len(ids)} {_NOUN[kind]}s are called {id_or_name!r}; use the id.",
                code="ambiguous_name",
                details={"ids": ids},
            )
        return ids[0]

    def get_sequence(self, caller: Caller, kind: SequenceKind, sequence_id: str) -> dict[str, Any]:
        """The sequence with its counters and its steps in order."""
        with self.db.transaction(write=False) as tx:
            row = self.load(tx, caller, kind, sequence_id)
            return self._decorate(tx, [row], with_steps=True)[0]

    def list_sequences(
        self,
        caller: Caller,
        kind: SequenceKind,
        status: str | None,
        limit: int,
        offset: int,
        *,
        with_steps=False,
    ) -> OffsetPage:
        with self.db.transaction(write=False) as tx:
            rows, total = tx.sequences.list_sequences(caller.org_id, kind.value, status, limit, offset)
            items = self._decorate(tx, rows, with_steps=with_steps)
        return OffsetPage(items, total, limit, offset)

    def create_sequence(self, caller: Caller, kind: SequenceKind, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a sequence, always as a draft (a queue is created active: its dialect has no status)."""
        now = self.clock.now()
        row = {
            "id": new_id(),
            "org_id": caller.org_id,
            "kind": kind.value,
            "name": fields["name"].strip(),
            "description": fields.get("description"),
            "trigger_type": fields.get("trigger_type") or "manual",
            "trigger_config": fields.get("trigger_config") or {},
            "exit_conditions": fields.get("exit_conditions") or {},
            "status": SequenceStatus.DRAFT.value
            if kind is SequenceKind.SEQUENCE
            else SequenceStatus.ACTIVE.value,
            "from_email": fields.get("from_email"),
            "from_name": fields.get("from_name"),
            "reply_to_email": fields.get("reply_to_email"),
            "send_window": fields.get("send_window"),
            "created_at": now,
            "updated_at": now,
        }
        if kind is SequenceKind.EVENT_QUEUE and fields.get("status"):
            row["status"] = fields["status"]
        self._check_trigger(row)
        self._check_send_window(row["send_window"])
        with self.db.transaction() as tx:
            tx.sequences.insert_sequence(row)
            record(
                tx,
                caller,
                tag_for(caller, "sequence", "created"),
                kind.value,
                row["id"],
                {k: row[k] for k in SEQUENCE_FIELDS},
                now,
            )
            return self._decorate(tx, [row], with_steps=True)[0]

    def update_sequence(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Change the given fields. Activating needs at least one step (400 otherwise)."""
        now = self.clock.now()
        values = {k: fields[k] for k in SEQUENCE_FIELDS if k in fields}
        if "name" in values:
            values["name"] = values["name"].strip()
        for key in ("trigger_config", "exit_conditions"):
            if key in values and values[key] is None:
                values[key] = {}
        with self.db.transaction() as tx:
            before = self.load(tx, caller, kind, sequence_id, lock=True)
            checked = {**before, **values}
            self._check_trigger(checked)
            if "trigger_config" in values:
                values["trigger_config"] = checked["trigger_config"]
            self._check_send_window(values.get("send_window"))
            if values.get("status") == SequenceStatus.ACTIVE and tx.sequences.count_steps(sequence_id) == 0:
                raise BadRequest(
                    f"A {_NOUN[kind]} needs at least one step before it can be activated.",
                    code="sequence_has_no_steps",
                    details={"errors": [{"path": "$.status", "in": "body", "message": "add a step first"}]},
                )
            tx.sequences.update_sequence(caller.org_id, sequence_id, {**values, "updated_at": now})
            changes = {k: v for k, v in values.items() if before.get(k) != v}
            record(
                tx,
                caller,
                tag_for(caller, "sequence", "updated"),
                kind.value,
                sequence_id,
                {"changes": changes},
                now,
            )
            return self._decorate(tx, [self.load(tx, caller, kind, sequence_id)], with_steps=True)[0]

    def delete_sequence(self, caller: Caller, kind: SequenceKind, sequence_id: str) -> None:
        """Delete a sequence with its steps and enrollments (the sequences dialect's cascade), or
        retire an event queue: its pending tasks are cancelled and its history is kept. Either way
        the audit log records what was cancelled."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            row = self.load(tx, caller, kind, sequence_id, lock=True)
            counters = tx.sequences.enrollment_counters([sequence_id])[sequence_id]
            live = tx.enrollments.count_live(sequence_id)
            if kind is SequenceKind.EVENT_QUEUE:
                from seqbridge.services.lifecycle import EnrollmentStatus, end_all_in_sequence

                cancelled = end_all_in_sequence(
                    tx, sequence_id, EnrollmentStatus.EXITED, "queue_deleted", now
                )
                tx.sequences.update_sequence(
                    caller.org_id, sequence_id, {"deleted_at": now, "updated_at": now}
                )
                record(
                    tx,
                    caller,
                    tag_for(caller, "sequence", "deleted"),
                    kind.value,
                    sequence_id,
                    {
                        "name": row["name"],
                        "live_enrollments_cancelled": live,
                        "tasks_cancelled": cancelled,
                        **counters,
                    },
                    now,
                )
                return
            tx.sequences.delete_sequence(caller.org_id, sequence_id)
            record(
                tx,
                caller,
                tag_for(caller, "sequence", "deleted"),
                kind.value,
                sequence_id,
                {"name": row["name"], "live_enrollments_cancelled": live, **counters},
                now,
            )

    # Steps ------------------------------------------------------------------------------

    def add_step(self, caller: Caller, kind: SequenceKind, sequence_id: str, fields: dict[str, Any]) -> dict:
        """Insert a step at ``position`` (default: last), renumbering the steps after it."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.load(tx, caller, kind, sequence_id, lock=True)
            count = tx.sequences.count_steps(sequence_id)
            position = fields.get("position") or count + 1
            if position > count + 1:
                raise _field_error("$.position", f"must be between 1 and {count + 1}")
            row = {
                "id": new_id(),
                "org_id": caller.org_id,
                "sequence_id": sequence_id,
                "position": position,
                "action": StepAction.EMAIL.value,
                "delay_days": 0,
                "delay_minutes": 0,
                "delay_anchor": "previous",
                "subject": None,
                "body": None,
                "webhook_url": None,
                "config": {},
                **{k: v for k, v in fields.items() if k in STEP_FIELDS and v is not None},
                "created_at": now,
                "updated_at": now,
            }
            self._check_step(row)
            tx.sequences.shift_positions(sequence_id, position, None, +1)
            tx.sequences.insert_step(row)
            tx.sequences.update_sequence(caller.org_id, sequence_id, {"updated_at": now})
            record(
                tx,
                caller,
                tag_for(caller, "step", "created"),
                "step",
                row["id"],
                {"sequence_id": sequence_id, **{k: row[k] for k in ("position", *STEP_FIELDS)}},
                now,
            )
            return row

    def update_step(
        self, caller: Caller, kind: SequenceKind, sequence_id: str, step_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Change a step; a new ``position`` moves it and renumbers the steps in between."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.load(tx, caller, kind, sequence_id, lock=True)
            step = self._load_step(tx, kind, sequence_id, step_id)
            values = {k: fields[k] for k in STEP_FIELDS if k in fields}
            merged = {**step, **values}
            self._check_step(merged)
            target = fields.get("position")
            if target is not None and target != step["position"]:
                count = tx.sequences.count_steps(sequence_id)
                if target > count:
                    raise _field_error("$.position", f"must be between 1 and {count}")
                if target < step["position"]:
                    tx.sequences.shift_positions(sequence_id, target, step["position"] - 1, +1)
                else:
                    tx.sequences.shift_positions(sequence_id, step["position"] + 1, target, -1)
                values["position"] = target
            tx.sequences.update_step(step_id, {**values, "updated_at": now})
            tx.sequences.update_sequence(caller.org_id, sequence_id, {"updated_at": now})
            record(
                tx,
                caller,
                tag_for(caller, "step", "updated"),
                "step",
                step_id,
                {"sequence_id": sequence_id, "changes": values},
                now,
            )
            return tx.sequences.get_step(sequence_id, step_id)

    def delete_step(self, caller: Caller, kind: SequenceKind, sequence_id: str, step_id: str) -> None:
        """Delete a step and close the gap. Work scheduled for it is cancelled; an enrollment that was
        waiting for it moves on to the step that takes its place (or completes)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            self.load(tx, caller, kind, sequence_id, lock=True)
            step = self._load_step(tx, kind, sequence_id, step_id)
            waiting = tx.enrollments.open_tasks_for_step(sequence_id, step_id)
            tx.sequences.delete_step(step_id)
            tx.sequences.shift_positions(sequence_id, step["position"] + 1, None, -1)
            affected = self.scheduler.step_removed(tx, caller, kind, sequence_id, step, waiting, now)
            tx.sequences.update_sequence(caller.org_id, sequence_id, {"updated_at": now})
            record(
                tx,
                caller,
                tag_for(caller, "step", "deleted"),
                "step",
                step_id,
                {"sequence_id": sequence_id, "position": step["position"], "tasks_cancelled": affected},
                now,
            )

    # Helpers ----------------------------------------------------------------------------

    def _load_step(self, tx: Tx, kind: SequenceKind, sequence_id: str, step_id: str) -> dict[str, Any]:
        step = tx.sequences.get_step(sequence_id, step_id)
        if step is None:
            raise NotFound(f"No step with id {step_id} in this {_NOUN[kind]}.")
        return step

    def _decorate(self, tx: Tx, rows: list[dict[str, Any]], *, with_steps: bool) -> list[dict[str, Any]]:
        ids = [r["id"] for r in rows]
        counters = tx.sequences.enrollment_counters(ids)
        steps: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if with_steps:
            for step in tx.sequences.list_steps(ids):
                steps[step["sequence_id"]].append(step)
        return [{**r, **counters[r["id"]], **({"steps": steps[r["id"]]} if with_steps else {})} for r in rows]

    @staticmethod
    def _check_send_window(window: dict[str, Any] | None) -> None:
        if not window:
            return
        start, end = window.get("start") or "00:00", window.get("end") or "23:59"
        if start >= end:
            raise _field_error("$.send_window.end", "the window must end after it starts, on the same day")
        for key in ("timezone", "fallback_timezone"):
            name = window.get(key)
            if name and name != "contact":
                try:
                    ZoneInfo(name)
                except (ZoneInfoNotFoundError, ValueError):
                    raise _field_error(f"$.send_window.{key}", f"{name!r} is not an IANA time zone") from None

    @staticmethod
    def _check_trigger(row: dict[str, Any]) -> None:
        """A ``tag_added`` trigger's tag, when given, is a tag (trimmed, 1 to 100 characters), so it
        matches contact tags as they are stored. It may be left out (seed 003 makes
        ``trigger_config`` optional and lets PATCH set it later): until then the sequence enrolls
        nobody automatically. Raises :class:`ValidationFailed` at ``$.trigger_config.tag``."""
        config = row.get("trigger_config") or {}
        if row["trigger_type"] != "tag_added" or "tag" not in config:
            return
        tag = config["tag"]
        if not isinstance(tag, str) or not tag.strip() or len(tag.strip()) > 100:
            raise _field_error("$.trigger_config.tag", "a tag_added trigger's tag is 1 to 100 characters")
        row["trigger_config"] = {**config, "tag": tag.strip()}

    @staticmethod
    def _check_step(row: dict[str, Any]) -> None:
        action = row["action"]
        if action == StepAction.EMAIL:
            for name in ("subject", "body"):
                if not row.get(name):
                    raise _field_error(f"$.{name}", "an email step needs a subject and a body")
                try:
                    compile_template(row[name])
                except TemplateError as error:
                    raise _field_error(
                        f"$.{name}", f"template error at {error}", "invalid_template"
                    ) from None
        if action == StepAction.WEBHOOK:
            url = row.get("webhook_url") or ""
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _field_error("$.webhook_url", "a webhook step needs an http(s) URL")
        if action == StepAction.ADD_TAG and not (row.get("config") or {}).get("tag"):
            raise _field_error("$.config.tag", "an add_tag step needs config.tag")
        if action == StepAction.UPDATE_CONTACT and not (row.get("config") or {}).get("fields"):
            raise _field_error("$.config.fields", "an update_contact step needs config.fields")
