"""Sequences, their steps and companies, staged: read-only, read once per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seqbridge.storage.contacts import CompanyStore
from seqbridge.storage.sequences import SequenceStore
from seqbridge.storage.staged.base import NotStaged, Row, Unsupported

if TYPE_CHECKING:
    from seqbridge.storage.staged import Staging


@dataclass
class _SequenceCache:
    by_id: dict[tuple[str, str, str], Row | None] = field(default_factory=dict)
    by_name: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    steps: dict[str, list[Row]] = field(default_factory=dict)
    triggered: dict[tuple[str, str, str], list[Row]] = field(default_factory=dict)


class StagedSequences(Unsupported):
    """Sequences and their steps, read-only, read once per batch."""

    def __init__(self, staging: Staging) -> None:
        self.store = SequenceStore(staging.conn)
        self.cache = _SequenceCache()

    def prefetch(self, org_id: str, refs: list[str], triggers: tuple[str, ...] = ()) -> None:
        """Read the sequences and queues named (by id or name), the active sequences that the
        ``triggers`` start, and all of their steps: at most three queries."""
        refs = [
            r
            for r in refs
            if not any((org_id, r, k) in self.cache.by_id for k in ("sequence", "event_queue"))
        ]
        rows = self.store.find_sequences(org_id, refs) if refs else []
        for ref in refs:
            for kind in ("sequence", "event_queue"):
                self.cache.by_id[(org_id, ref, kind)] = next(
                    (r for r in rows if r["id"] == ref and r["kind"] == kind), None
                )
                self.cache.by_name[(org_id, ref, kind)] = [
                    r["id"] for r in rows if r["name"] == ref and r["kind"] == kind
                ]
        for row in rows:
            self.cache.by_id[(org_id, row["id"], row["kind"])] = row
        triggers = tuple(t for t in triggers if (org_id, "sequence", t) not in self.cache.triggered)
        if triggers:
            started = self.store.find_triggered_sequences_of(org_id, "sequence", triggers)
            for trigger in triggers:
                self.cache.triggered[(org_id, "sequence", trigger)] = [
                    r for r in started if r["trigger_type"] == trigger
                ]
            rows = [*rows, *started]
        self._load_steps([r["id"] for r in rows])

    def _load_steps(self, sequence_ids: list[str]) -> None:
        missing = [s for s in sequence_ids if s not in self.cache.steps]
        if missing:
            for sequence_id in missing:
                self.cache.steps[sequence_id] = []
            for step in self.store.list_steps(missing):
                self.cache.steps[step["sequence_id"]].append(step)

    def get_sequence(
        self, org_id: str, sequence_id: str, kind: str, *, for_update: bool = False
    ) -> Row | None:
        if for_update:
            raise NotStaged("a locked sequence read is not staged")
        key = (org_id, sequence_id, kind)
        if key not in self.cache.by_id:
            self.cache.by_id[key] = self.store.get_sequence(org_id, sequence_id, kind)
        row = self.cache.by_id[key]
        return dict(row) if row is not None else None

    def find_sequence_ids_by_name(self, org_id: str, name: str, kind: str) -> list[str]:
        key = (org_id, name, kind)
        if key not in self.cache.by_name:
            self.cache.by_name[key] = self.store.find_sequence_ids_by_name(org_id, name, kind)
        return list(self.cache.by_name[key])

    def list_steps(self, sequence_ids: list[str]) -> list[Row]:
        self._load_steps(sequence_ids)
        return [dict(s) for sequence_id in sequence_ids for s in self.cache.steps[sequence_id]]

    def count_steps(self, sequence_id: str) -> int:
        self._load_steps([sequence_id])
        return len(self.cache.steps[sequence_id])

    def find_triggered_sequences(self, org_id: str, kind: str, trigger_type: str) -> list[Row]:
        key = (org_id, kind, trigger_type)
        if key not in self.cache.triggered:
            self.cache.triggered[key] = self.store.find_triggered_sequences(org_id, kind, trigger_type)
        return [dict(r) for r in self.cache.triggered[key]]


class StagedCompanies(Unsupported):
    """Companies, read-only (a contact's company reference is checked against them)."""

    def __init__(self, staging: Staging) -> None:
        self.store = CompanyStore(staging.conn)
        self.cache: dict[tuple[str, str], Row | None] = {}

    def get_company(self, org_id: str, company_id: str) -> Row | None:
        key = (org_id, company_id)
        if key not in self.cache:
            self.cache[key] = self.store.get_company(org_id, company_id)
        row = self.cache[key]
        return dict(row) if row is not None else None
