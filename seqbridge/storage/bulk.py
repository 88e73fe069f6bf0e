"""Fast multi-row INSERT for the hot bulk paths (enroll_bulk, task planning, audit batches).

SQLAlchemy's executemany builds a full parameter set per row through its generic machinery, and
the driver then runs one INSERT per row. Here each column's own bind processor (the same
conversion SQLAlchemy would apply) is looked up once per table and dialect, values equal to the
previous row's (the same ``now`` in every row) are converted once, and rows go to the database
as multi-row ``INSERT … VALUES (…), (…)`` statements chunked under the bind-parameter limit
(SQLite) or through ``COPY … FROM STDIN`` (PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

#: Bind parameters per statement: SQLite allows 32766, PostgreSQL 65535; stay well below.
MAX_PARAMS = 30000
MAX_ROWS = 1000


class RawJSON(str):
    """JSON text already serialised by the caller; stored as it is in a JSON column."""


_MISSING = object()


@lru_cache(maxsize=256)
def _plan(table: Table, columns: tuple[str, ...], dialect: Dialect):
    quote = dialect.identifier_preparer.quote
    placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
    row_marks = "(" + ", ".join([placeholder] * len(columns)) + ")"
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "
    processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns)
    return head, row_marks, processors


def _converter(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if processor is None:
        return None
    last_in: Any = _MISSING
    last_out: Any = None

    def convert(value: Any) -> Any:
        nonlocal last_in, last_out
        if value is None or isinstance(value, RawJSON):
            return value if value is None else str(value)
        # Rows of one bulk call share most values (the same now, the same first send time),
        # often as equal but distinct objects.
        if value is last_in or (type(value) is type(last_in) and value == last_in):
            return last_out
        last_in, last_out = value, processor(value)
        return last_out

    return convert


def execute_raw(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement on the transaction's DBAPI connection and return its rows.

    For the few statements that run for every webhook: SQLAlchemy's per-statement bookkeeping
    costs several times the statement itself there. Errors come out as SQLAlchemy's would
    (``OperationalError`` and so on), so callers handle them the same way.
    """
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()
    params = tuple(params)
    if conn.dispatch.before_cursor_execute:  # listeners (statement counters, tracing) still see it
        conn.dispatch.before_cursor_execute(conn, cursor, sql, params, None, False)
    try:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    except dbapi_error as error:
        raise DBAPIError.instance(sql, params, error, dbapi_error) from error
    finally:
        cursor.close()


def execute_count(conn: Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one statement that returns no rows on the transaction's DBAPI connection, as
    :func:`execute_raw` does; return the number of rows it changed."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.driver_connection.cursor()
    params = tuple(params)
    if conn.dispatch.before_cursor_execute:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, params, None, False)
    try:
        cursor.execute(sql, params)
        return cursor.rowcount
    except dbapi_error as error:
        raise DBAPIError.instance(sql, params, error, dbapi_error) from error
    finally:
        cursor.close()


def _prepare(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]):
    columns = tuple(rows[0])
    head, row_marks, processors = _plan(table, columns, conn.dialect)
    converters = [(index, _converter(proc)) for index, proc in enumerate(processors) if proc is not None]
    values_of = itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
    prepared = []
    for row in rows:
        values = list(values_of(row))
        for index, convert in converters:
            values[index] = convert(values[index])
        prepared.append(values)
    return columns, head, row_marks, prepared


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in as few statements as the
    parameter limit allows."""
    if not rows:
        return
    columns, head, row_marks, prepared = _prepare(conn, table, rows)
    if conn.dialect.name == "postgresql" and len(prepared) > 1:
        _copy(conn, table, columns, prepared)
        return
    per_statement = max(1, min(MAX_ROWS, MAX_PARAMS // len(columns)))
    for start in range(0, len(prepared), per_statement):
        chunk = prepared[start : start + per_statement]
        sql = head + ", ".join([row_marks] * len(chunk))
        execute_raw(conn, sql, tuple(chain.from_iterable(chunk)))


def insert_returning(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: tuple[str, ...],
    *,
    skip_conflicts: bool = False,
) -> list[tuple]:
    """Insert ``rows`` (one statement per chunk) and return ``returning`` of each row inserted.
    With ``skip_conflicts``, rows that hit a unique constraint (also one with an earlier row of
    the same call) are left out, and so are missing from the result."""
    if not rows:
        return []
    columns, head, row_marks, prepared = _prepare(conn, table, rows)
    quote = conn.dialect.identifier_preparer.quote
    tail = (
        (" ON CONFLICT DO NOTHING" if skip_conflicts else "")
        + " RETURNING "
        + ", ".join(quote(c) for c in returning)
    )
    per_statement = max(1, min(MAX_ROWS, MAX_PARAMS // len(columns)))
    out: list[tuple] = []
    for start in range(0, len(prepared), per_statement):
        chunk = prepared[start : start + per_statement]
        sql = head + ", ".join([row_marks] * len(chunk)) + tail
        out.extend(tuple(r) for r in execute_raw(conn, sql, tuple(chain.from_iterable(chunk))))
    return out


def _copy(conn: Connection, table: Table, columns: tuple[str, ...], rows: list[list[Any]]) -> None:
    """PostgreSQL: COPY FROM STDIN on the transaction's own connection (psycopg's copy API)."""
    quote = conn.dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    driver_connection = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for values in rows:
                copy.write_row(values)
    except dbapi_error as error:
        # Raise what SQLAlchemy would have: IntegrityError for a unique violation, and so on.
        raise DBAPIError.instance(statement, None, error, dbapi_error) from error


def bulk_update(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str = "id",
    where: str = "",
    where_params: Sequence[Any] = (),
    returning: bool = False,
) -> list[Any]:
    """Update many rows, each with its own values, in one statement per chunk:
    ``UPDATE t SET c = v.c, … FROM (VALUES …) v WHERE t.key = v.key`` (PostgreSQL casts each
    value to its column's type; SQLite names the columns in a CTE). ``rows`` are dicts with the
    same keys, ``key`` among them; ``where`` adds a condition on the table (``t.col = ?`` with
    ``?`` placeholders, values in ``where_params``). Returns the keys updated when ``returning``."""
    if not rows:
        return []
    columns, _head, _row_marks, prepared = _prepare(conn, table, rows)
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    postgresql = dialect.name == "postgresql"
    mark = "%s" if dialect.paramstyle != "qmark" else "?"
    if postgresql:
        types = [table.c[c].type.dialect_impl(dialect).compile(dialect=dialect) for c in columns]
        row_marks = "(" + ", ".join(f"{mark}::{t}" for t in types) + ")"
    else:
        row_marks = "(" + ", ".join([mark] * len(columns)) + ")"
    names = ", ".join(quote(c) for c in columns)
    assignments = ", ".join(f"{quote(c)} = v.{quote(c)}" for c in columns if c != key)
    condition = f"t.{quote(key)} = v.{quote(key)}" + (f" AND ({where})" if where else "")
    if dialect.paramstyle != "qmark":
        condition = condition.replace("?", "%s")
    # SQLite's RETURNING sees the table by its name, not its alias.
    tail = f" RETURNING {'t.' if postgresql else ''}{quote(key)}" if returning else ""
    per_statement = max(1, min(MAX_ROWS, (MAX_PARAMS - len(where_params)) // len(columns)))
    out: list[Any] = []
    for start in range(0, len(prepared), per_statement):
        chunk = prepared[start : start + per_statement]
        values = ", ".join([row_marks] * len(chunk))
        if postgresql:
            sql = f"UPDATE {quote(table.name)} AS t SET {assignments} FROM (VALUES {values}) AS v ({names}) WHERE {condition}"
        else:
            sql = f"WITH v ({names}) AS (VALUES {values}) UPDATE {quote(table.name)} AS t SET {assignments} FROM v WHERE {condition}"
        params = (*chain.from_iterable(chunk), *where_params)
        out.extend(r[0] for r in execute_raw(conn, sql + tail, params))
    return out


def update_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """Write each row's values (dicts holding ``key`` and the columns to set) in as few
    statements as the values allow: rows setting the same columns to the same values share one
    ``UPDATE … WHERE key IN (…)``; the others go together through :func:`bulk_update`."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(sorted(c for c in row if c != key)), []).append(row)
    for columns, group in by_columns.items():
        if not columns:
            continue
        by_values: dict[Any, list[dict[str, Any]]] = {}
        for row in group:
            by_values.setdefault(_frozen([row[c] for c in columns]), []).append(row)
        if len(by_values) == 1:
            values = {c: group[0][c] for c in columns}
            for start in range(0, len(group), MAX_ROWS):
                ids = [row[key] for row in group[start : start + MAX_ROWS]]
                conn.execute(table.update().where(table.c[key].in_(ids)).values(**values))
        else:
            bulk_update(
                conn, table, [{key: row[key], **{c: row[c] for c in columns}} for row in group], key=key
            )


def _frozen(values: list[Any]) -> Any:
    """A key equal for equal values only: each value with its type (1, 1.0 and True stay apart),
    or their JSON text when one is not hashable (a JSON document)."""
    key = tuple((type(v), v) for v in values)
    try:
        hash(key)
    except TypeError:
        return json.dumps(values, sort_keys=True, default=repr)
    return key
