"""Fast multi-row INSERT for the hot bulk paths (enroll_bulk, task planning, audit batches).

SQLAlchemy's executemany builds a full parameter set per row through its generic machinery,
which costs more than the insert itself at 1000 rows. Here the INSERT is compiled once per
table, column set and dialect by SQLAlchemy itself, each column's own bind processor (the same
conversion SQLAlchemy would apply) is looked up once, and rows go to the driver's executemany.
Values repeated from the previous row (the same ``now`` in every row) are converted once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Dialect


class RawJSON(str):
    """JSON text already serialised by the caller; stored as it is in a JSON column."""


_MISSING = object()


@lru_cache(maxsize=256)
def _plan(table: Table, columns: tuple[str, ...], dialect: Dialect):
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order = tuple(compiled.positiontup) if compiled.positional else columns
    processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order)
    return str(compiled), order, processors, compiled.positional


def _converter(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if processor is None:
        return None
    last_in: Any = _MISSING
    last_out: Any = None

    def convert(value: Any) -> Any:
        nonlocal last_in, last_out
        if value is None or isinstance(value, RawJSON):
            return value if value is None else str(value)
        if value is last_in:
            return last_out
        last_in, last_out = value, processor(value)
        return last_out

    return convert


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` with one driver executemany."""
    if not rows:
        return
    sql, order, processors, positional = _plan(table, tuple(rows[0]), conn.dialect)
    converters = [(index, _converter(proc)) for index, proc in enumerate(processors) if proc is not None]
    values_of = itemgetter(*order) if len(order) > 1 else (lambda row: (row[order[0]],))
    params: list[Any] = []
    for row in rows:
        values = list(values_of(row))
        for index, convert in converters:
            values[index] = convert(values[index])
        params.append(tuple(values) if positional else dict(zip(order, values, strict=True)))
    conn.exec_driver_sql(sql, params)
