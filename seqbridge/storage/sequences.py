"""Sequences (and event queues, the same table with another ``kind``) and their steps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import enrollments, sequence_steps, sequences


class SequenceStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_sequence(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(sequences).values(**row))

    def get_sequence(self, org_id: str, sequence_id: str, kind: str, *, for_update: bool = False):
        query = select(sequences).where(
            sequences.c.org_id == org_id,
            sequences.c.id == sequence_id,
            sequences.c.kind == kind,
            sequences.c.deleted_at.is_(None),
        )
        if for_update:
            query = query.with_for_update()
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def names(self, org_id: str, sequence_ids: list[str]) -> dict[str, str]:
        """Each sequence's (or event queue's) name by id, deleted ones included."""
        query = select(sequences.c.id, sequences.c.name).where(
            sequences.c.org_id == org_id, sequences.c.id.in_(sequence_ids)
        )
        return {r.id: r.name for r in self.conn.execute(query)}

    def find_sequences(self, org_id: str, refs: list[str]) -> list[dict[str, Any]]:
        """The organization's live sequences and queues whose id or name is one of ``refs``,
        oldest first (one query: a batch's references)."""
        if not refs:
            return []
        query = select(sequences).where(
            sequences.c.org_id == org_id,
            or_(sequences.c.id.in_(refs), sequences.c.name.in_(refs)),
            sequences.c.deleted_at.is_(None),
        )
        return [
            dict(r)
            for r in self.conn.execute(query.order_by(sequences.c.created_at, sequences.c.id)).mappings()
        ]

    def find_sequence_ids_by_name(self, org_id: str, name: str, kind: str) -> list[str]:
        """Ids of the live sequences of this kind called ``name`` (names need not be unique)."""
        query = select(sequences.c.id).where(
            sequences.c.org_id == org_id,
            sequences.c.name == name,
            sequences.c.kind == kind,
            sequences.c.deleted_at.is_(None),
        )
        return list(self.conn.execute(query.order_by(sequences.c.created_at, sequences.c.id)).scalars())

    def list_sequences(
        self, org_id: str, kind: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        query = select(sequences).where(
            sequences.c.org_id == org_id, sequences.c.kind == kind, sequences.c.deleted_at.is_(None)
        )
        if status is not None:
            query = query.where(sequences.c.status == status)
        total = self.conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = self.conn.execute(
            query.order_by(sequences.c.created_at, sequences.c.id).limit(limit).offset(offset)
        ).mappings()
        return [dict(r) for r in rows], total

    def update_sequence(self, org_id: str, sequence_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(
            update(sequences)
            .where(sequences.c.org_id == org_id, sequences.c.id == sequence_id)
            .values(**values)
        )

    def delete_sequence(self, org_id: str, sequence_id: str) -> None:
        self.conn.execute(
            delete(sequences).where(sequences.c.org_id == org_id, sequences.c.id == sequence_id)
        )

    def find_triggered_sequences(self, org_id: str, kind: str, trigger_type: str) -> list[dict[str, Any]]:
        """Active sequences of ``kind`` that start on ``trigger_type``."""
        return self.find_triggered_sequences_of(org_id, kind, (trigger_type,))

    def find_triggered_sequences_of(
        self, org_id: str, kind: str, trigger_types: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """Active sequences of ``kind`` that start on any of ``trigger_types``, oldest first."""
        query = (
            select(sequences)
            .where(
                sequences.c.org_id == org_id,
                sequences.c.kind == kind,
                sequences.c.status == "active",
                sequences.c.trigger_type.in_(trigger_types),
                sequences.c.deleted_at.is_(None),
            )
            .order_by(sequences.c.created_at, sequences.c.id)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def enrollment_counters(self, sequence_ids: list[str]) -> dict[str, dict[str, int]]:
        """``total_enrolled``, ``total_completed`` and ``total_unsubscribed`` per sequence, in one query.

        Derived from the enrollments themselves, so they can never drift.
        """
        counters = {
            sid: {"total_enrolled": 0, "total_completed": 0, "total_unsubscribed": 0} for sid in sequence_ids
        }
        if not sequence_ids:
            return counters
        query = (
            select(
                enrollments.c.sequence_id,
                func.count().label("enrolled"),
                func.sum(case((enrollments.c.status == "completed", 1), else_=0)).label("completed"),
                func.sum(
                    case(
                        (
                            and_(
                                enrollments.c.status == "exited", enrollments.c.exit_reason == "unsubscribed"
                            ),
                            1,
                        ),
                        else_=0,
                    )
                ).label("unsubscribed"),
            )
            .where(enrollments.c.sequence_id.in_(sequence_ids))
            .group_by(enrollments.c.sequence_id)
        )
        for sid, enrolled, completed, unsubscribed in self.conn.execute(query):
            counters[sid] = {
                "total_enrolled": int(enrolled),
                "total_completed": int(completed or 0),
                "total_unsubscribed": int(unsubscribed or 0),
            }
        return counters

    # Steps ------------------------------------------------------------------------------

    def list_steps(self, sequence_ids: list[str]) -> list[dict[str, Any]]:
        """Steps of the given sequences, ordered by sequence then position."""
        if not sequence_ids:
            return []
        query = (
            select(sequence_steps)
            .where(sequence_steps.c.sequence_id.in_(sequence_ids))
            .order_by(sequence_steps.c.sequence_id, sequence_steps.c.position)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def get_step(self, sequence_id: str, step_id: str) -> dict[str, Any] | None:
        query = select(sequence_steps).where(
            sequence_steps.c.sequence_id == sequence_id, sequence_steps.c.id == step_id
        )
        row = self.conn.execute(query).mappings().first()
        return dict(row) if row else None

    def count_steps(self, sequence_id: str) -> int:
        query = select(func.count()).where(sequence_steps.c.sequence_id == sequence_id)
        return self.conn.execute(query).scalar_one()

    def insert_step(self, row: dict[str, Any]) -> None:
        self.conn.execute(insert(sequence_steps).values(**row))

    def update_step(self, step_id: str, values: dict[str, Any]) -> None:
        self.conn.execute(update(sequence_steps).where(sequence_steps.c.id == step_id).values(**values))

    def delete_step(self, step_id: str) -> None:
        self.conn.execute(delete(sequence_steps).where(sequence_steps.c.id == step_id))

    def shift_positions(self, sequence_id: str, first: int, last: int | None, delta: int) -> None:
        """Add ``delta`` to the position of every step with ``first <= position <= last``."""
        condition = [sequence_steps.c.sequence_id == sequence_id, sequence_steps.c.position >= first]
        if last is not None:
            condition.append(sequence_steps.c.position <= last)
        self.conn.execute(
            update(sequence_steps).where(*condition).values(position=sequence_steps.c.position + delta)
        )
