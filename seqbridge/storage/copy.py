"""Copying a whole database into a fresh one: the way from the embedded SQLite to PostgreSQL.

``seqbridge db copy --to postgresql://…`` brings the target's schema to the current revision, refuses
a target that already holds data, then copies every table in foreign-key order, ids unchanged, in
batches read by primary key (memory stays flat however big the database is). Values go through the
same column types that wrote them, so JSON documents and timestamps arrive exactly as stored (the
audit log's hashes cover them). Everything is written in one target transaction: an interrupted
copy leaves the target without data and can simply be run again. Serial ids (step tasks, outbox,
audit events) continue after the copied ones. The source is read in one transaction, a consistent
snapshot; stop the writers (the server and workers) first so nothing arrives after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Integer, LargeBinary, Table, func, select, text, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from seqbridge.errors import SeqbridgeError
from seqbridge.storage.bulk import bulk_insert
from seqbridge.storage.db import Database
from seqbridge.storage.migrate import current_revision, head_revision, upgrade
from seqbridge.storage.schema import metadata

DEFAULT_BATCH = 1000
#: Tables with binary columns (a webhook body may be 1 MiB) are read this many times fewer rows a batch.
BINARY_DIVISOR = 20


class CopyError(Exception):
    """The copy cannot start or did not finish; the message says what to do."""


@dataclass
class TableCopied:
    table: str
    rows: int


@dataclass
class CopyReport:
    tables: list[TableCopied] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


#: Called with (table, rows copied so far, rows in the table) after each batch.
Progress = Callable[[str, int, int], None]


def copy_database(
    source: Database, target: Database, *, batch_size: int = DEFAULT_BATCH, progress: Progress | None = None
) -> CopyReport:
    """Copy every table of ``source`` into ``target`` (see the module docstring).

    Raises :class:`CopyError` when the source is not at the current schema revision, the target
    is the source or already holds data, or the copy is interrupted (by a database error or
    Ctrl-C: the message names the table and how far it got, and says nothing was kept).
    """
    if source.engine.url == target.engine.url:
        raise CopyError("the target is the source database; give another database with --to")
    head = head_revision()
    if current_revision(source) != head:
        raise CopyError(
            f"the source schema is not current (revision {current_revision(source)}, "
            f"expected {head}): run `seqbridge init` on it first"
        )
    try:
        upgrade(target)
    except (SQLAlchemyError, SeqbridgeError) as error:
        raise CopyError(f"cannot prepare the target: {_first_line(error)}") from error
    tables = list(metadata.sorted_tables)
    report = CopyReport()
    with source.engine.connect() as reader, target.engine.connect() as writer:
        reader.begin()  # one snapshot of the source for the whole copy
        _refuse_data(writer, tables)
        writer.begin()
        table, done, total = None, 0, 0
        try:
            for table in tables:
                total = reader.execute(select(func.count()).select_from(table)).scalar_one()
                done = 0
                if progress:
                    progress(table.name, 0, total)
                for rows in _batches(reader, table, _batch_for(table, batch_size)):
                    bulk_insert(writer, table, rows)
                    done += len(rows)
                    if progress:
                        progress(table.name, done, total)
                report.tables.append(TableCopied(table.name, done))
            _continue_serials(writer, tables)
            writer.commit()
        except (KeyboardInterrupt, SQLAlchemyError) as error:
            writer.rollback()
            where = (
                f"in table {table.name} after {done} of {total} rows" if table is not None else "at the start"
            )
            raise CopyError(
                f"the copy was interrupted {where} ({type(error).__name__}: {_first_line(error)}); "
                "nothing was kept on the target, which is empty: run the same command again"
            ) from error
    return report


def counts(db: Database) -> dict[str, int]:
    """Rows per table (for comparing a source and its copy)."""
    with db.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


def _refuse_data(conn: Connection, tables: list[Table]) -> None:
    for table in tables:
        if conn.execute(select(text("1")).select_from(table).limit(1)).first() is not None:
            raise CopyError(
                f"the target already holds data (table {table.name} has rows): copy into an empty database, "
                "e.g. drop it and create it again (createdb), then run the same command"
            )
    conn.rollback()


def _batch_for(table: Table, batch_size: int) -> int:
    binary = any(isinstance(c.type, LargeBinary) for c in table.columns)
    return max(1, batch_size // BINARY_DIVISOR) if binary else batch_size


def _batches(conn: Connection, table: Table, size: int) -> Iterator[list[dict]]:
    """The table's rows, ``size`` at a time, in primary-key order (keyset pagination)."""
    key = list(table.primary_key.columns)
    after: tuple | None = None
    while True:
        query = select(table).order_by(*key).limit(size)
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after) if len(key) > 1 else key[0] > after[0])
        rows = [dict(r) for r in conn.execute(query).mappings()]
        if not rows:
            return
        yield rows
        last = rows[-1]
        after = tuple(last[c.name] for c in key)
        if len(rows) < size:
            return


def _continue_serials(conn: Connection, tables: list[Table]) -> None:
    """PostgreSQL: move each serial id's sequence past the copied ids (SQLite's rowid needs nothing)."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        column = table.autoincrement_column
        if column is None or not isinstance(column.type.dialect_impl(conn.dialect), Integer):
            continue
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
            ),
            {"table": table.name, "column": column.name},
        )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]
