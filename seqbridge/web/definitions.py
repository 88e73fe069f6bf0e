"""Routes both sequence-like dialects share: create, read, update and delete the definition and
its steps. Each dialect passes its kind, its path parameter and its shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint

from seqbridge.services.sequences import SequenceKind
from seqbridge.web.envelope import body, caller, no_content, ok
from seqbridge.web.pipeline import services

Shape = Callable[[dict[str, Any]], dict[str, Any]]


def add_definition_routes(
    bp: Blueprint,
    *,
    kind: SequenceKind,
    id_param: str,
    shape: Shape,
    shape_step: Shape,
    step_fields: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """Register ``POST ""``, ``GET/PATCH/DELETE /<id>``, ``POST /<id>/steps`` and
    ``PATCH/DELETE /<id>/steps/<step_id>`` on ``bp``."""
    item = f"/<{id_param}>"
    definitions = lambda: services().sequences  # noqa: E731

    @bp.post("")
    def create_definition():
        return ok(shape(definitions().create_sequence(caller(), kind, body())), 201)

    @bp.get(item)
    def get_definition(**ids: str):
        return ok(shape(definitions().get_sequence(caller(), kind, ids[id_param])))

    @bp.patch(item)
    def update_definition(**ids: str):
        return ok(shape(definitions().update_sequence(caller(), kind, ids[id_param], body())))

    @bp.delete(item)
    def delete_definition(**ids: str):
        definitions().delete_sequence(caller(), kind, ids[id_param])
        return no_content()

    @bp.post(f"{item}/steps")
    def add_step(**ids: str):
        return ok(shape_step(definitions().add_step(caller(), kind, ids[id_param], step_fields(body()))), 201)

    @bp.patch(f"{item}/steps/<step_id>")
    def update_step(step_id: str, **ids: str):
        step = definitions().update_step(caller(), kind, ids[id_param], step_id, step_fields(body()))
        return ok(shape_step(step))

    @bp.delete(f"{item}/steps/<step_id>")
    def delete_step(step_id: str, **ids: str):
        definitions().delete_step(caller(), kind, ids[id_param], step_id)
        return no_content()
