"""Typeform: ``Typeform-Signature: sha256=<base64 HMAC-SHA256>``; answers flattened by field ref."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from connectors.base import (
    InboundEvent,
    InboundRequest,
    MalformedPayload,
    VerificationError,
    dict_at,
    dicts_at,
    parse_json_body,
    require,
    same,
)


def answer_value(answer: dict[str, Any]) -> Any:
    """The plain value of one Typeform answer, whatever its type."""
    kind = answer.get("type")
    if kind == "choice":
        choice = dict_at(answer.get("choice"), "a choice answer")
        return choice.get("label") or choice.get("other")
    if kind == "choices":
        choices = dict_at(answer.get("choices"), "a choices answer")
        labels = choices.get("labels") if isinstance(choices.get("labels"), list) else []
        return [*labels, *([choices["other"]] if choices.get("other") else [])]
    if kind == "payment":
        return answer.get("payment")
    return answer.get(kind) if kind and isinstance(kind, str) else None


class Typeform:
    name = "typeform"
    #: The body types this sender posts; anything else is answered 415.
    content_types = ("application/json",)

    def __init__(self, config: dict[str, Any]) -> None:
        require(config, "secret")
        self.secret = str(config["secret"]).encode()

    def verify(self, request: InboundRequest, now: datetime) -> None:
        given = request.header("Typeform-Signature")
        if not given:
            raise VerificationError("missing_signature", "Typeform-Signature is missing")
        expected = (
            "sha256="
            + base64.b64encode(hmac.new(self.secret, request.body, hashlib.sha256).digest()).decode()
        )
        if not same(given.strip(), expected):
            raise VerificationError("signature_mismatch", "Typeform-Signature does not match the body")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        body = parse_json_body(request)
        if (
            not isinstance(body, dict)
            or not body.get("event_id")
            or not isinstance(body.get("form_response"), dict)
        ):
            raise MalformedPayload("not a Typeform form_response")
        response = body["form_response"]
        answers: dict[str, Any] = {}
        for answer in dicts_at(response.get("answers"), "form_response.answers"):
            field = dict_at(answer.get("field"), "answers[].field")
            name = field.get("ref") or field.get("id")
            answers[name if name and isinstance(name, str) else f"field_{len(answers)}"] = answer_value(
                answer
            )
        variables = {
            v["key"]: v.get(v["type"]) if isinstance(v.get("type"), str) else None
            for v in dicts_at(response.get("variables"), "form_response.variables")
            if isinstance(v.get("key"), str)
        }
        return [
            InboundEvent(
                dedupe_key=str(body["event_id"]),
                kind=str(body.get("event_type") or "form_response"),
                data={
                    "form_id": response.get("form_id"),
                    "token": response.get("token"),
                    "submitted_at": response.get("submitted_at"),
                    "answers": answers,
                    "hidden": response.get("hidden") or {},
                    "variables": variables,
                },
            )
        ]
