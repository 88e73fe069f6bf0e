"""The mapping files the server loaded: one row per change of a file (``mapping_versions``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from seqbridge.storage.schema import mapping_versions


class MappingVersionStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def newest_per_file(self) -> dict[str, dict[str, Any]]:
        """The newest row of every file ever recorded, removed ones included (``sha256`` None)."""
        newest = select(func.max(mapping_versions.c.id)).group_by(mapping_versions.c.file)
        rows = self.conn.execute(select(mapping_versions).where(mapping_versions.c.id.in_(newest))).mappings()
        return {row["file"]: dict(row) for row in rows}

    def insert_versions(self, rows: list[dict[str, Any]]) -> None:
        """Record new versions (or removals) of files, in order."""
        if rows:
            self.conn.execute(insert(mapping_versions), rows)
