"""What the staged stores share: the error for what they do not hold, and how a read hands a row
out."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqbridge.storage.staged import Staging

Row = dict[str, Any]


class NotStaged(Exception):
    """The staged stores do not hold this operation: run the work in a plain transaction."""


def copy_row(row: Row | None) -> Row | None:
    """What a read hands out: the caller's own dict (and attributes), never the map's."""
    if row is None:
        return None
    out = dict(row)
    if isinstance(out.get("attributes"), dict):
        out["attributes"] = dict(out["attributes"])
    return out


class Unsupported:
    """A staged store: anything it does not define raises :class:`NotStaged`."""

    def __getattr__(self, name: str):
        raise NotStaged(f"{type(self).__name__}.{name} is not staged")


def update_held(
    staging: Staging,
    row: Row,
    values: dict[str, Any],
    *,
    held: dict[str, dict[str, Any]],
    inserted: dict[str, Row],
    changed: Callable[[Row, Row], None],
    copy: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> None:
    """Change the identity map's ``row`` by ``values`` and hold the change for the flush (in
    ``held``, by id; a row ``inserted`` in this batch is written whole instead), undoably.
    ``changed(before, after)`` keeps the store's own indexes in step, both ways."""
    update_held_many(staging, [(row, values)], held=held, inserted=inserted, changed=changed, copy=copy)


def update_held_many(
    staging: Staging,
    changes: list[tuple[Row, dict[str, Any]]],
    *,
    held: dict[str, dict[str, Any]],
    inserted: dict[str, Row],
    changed: Callable[[Row, Row], None],
    copy: Callable[[dict[str, Any]], dict[str, Any]] = dict,
) -> None:
    """:func:`update_held` for each ``(row, values)``, with one undo for them all (an unenroll
    ends every enrollment of a contact at once)."""
    saved: list[tuple[Row, Row, dict[str, Any] | None]] = []
    for row, values in changes:
        key = row["id"]
        before, pending = dict(row), held.get(key)
        row.update(copy(values))
        if key not in inserted:
            held[key] = {**(pending or {}), **copy(values)}
        changed(before, row)
        saved.append((row, before, pending))
    if not saved:
        return

    def undo() -> None:
        for row, before, pending in reversed(saved):
            current = dict(row)
            row.clear()
            row.update(before)
            if row["id"] not in inserted:
                if pending is None:
                    del held[row["id"]]
                else:
                    held[row["id"]] = pending
            changed(current, row)

    staging.undo.append(undo)
