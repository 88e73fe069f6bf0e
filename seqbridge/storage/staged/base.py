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
    key = row["id"]
    before, pending = dict(row), held.get(key)
    row.update(copy(values))
    if key not in inserted:
        held[key] = {**(pending or {}), **copy(values)}
    changed(before, row)

    def undo() -> None:
        current = dict(row)
        row.clear()
        row.update(before)
        if key not in inserted:
            if pending is None:
                del held[key]
            else:
                held[key] = pending
        changed(current, row)

    staging.undo.append(undo)
