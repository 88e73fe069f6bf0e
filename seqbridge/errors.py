"""One error tree. Every error knows its HTTP status and machine code; one handler at the edge
turns any of them into the JSON envelope ``{"error": {"code", "message", "details"}}``.

The docstring of each class is its default human message.
"""

from __future__ import annotations

from typing import Any


class SeqbridgeError(Exception):
    """Something went wrong inside Seqbridge."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        if code is not None:
            self.code = code
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class BadRequest(SeqbridgeError):
    """The request is not valid."""

    status = 400
    code = "bad_request"


class MalformedJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


class ValidationFailed(BadRequest):
    """The request does not match the schema."""

    code = "validation_failed"


class MissingField(BadRequest):
    """A required field is missing."""

    code = "missing_field"


class Unauthorized(SeqbridgeError):
    """A valid API key is required: send Authorization: Bearer <key>."""

    status = 401
    code = "unauthorized"


class ScopeDenied(SeqbridgeError):
    """The API key lacks the scope this operation needs."""

    status = 403
    code = "forbidden"

    def __init__(self, scope: str) -> None:
        area, _, level = scope.partition(":")
        super().__init__(
            f"This API key lacks the {scope} scope.",
            code=f"{area}_{level}_denied",
            details={"required_scope": scope},
        )


class Forbidden(SeqbridgeError):
    """This request is not allowed."""

    status = 403
    code = "forbidden"


class NotFound(SeqbridgeError):
    """The resource was not found."""

    status = 404
    code = "not_found"


class MethodNotAllowed(SeqbridgeError):
    """This method is not allowed on this resource."""

    status = 405
    code = "method_not_allowed"


class Conflict(SeqbridgeError):
    """The request conflicts with the current state of the resource."""

    status = 409
    code = "conflict"


class PayloadTooLarge(SeqbridgeError):
    """The request body is larger than this server accepts."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(SeqbridgeError):
    """The request body must be sent as application/json."""

    status = 415
    code = "unsupported_media_type"


class Unprocessable(SeqbridgeError):
    """The request is well-formed but cannot be carried out."""

    status = 422
    code = "unprocessable"


class TooManyRequests(SeqbridgeError):
    """Too many requests; slow down and retry later."""

    status = 429
    code = "rate_limited"


class ServiceUnavailable(SeqbridgeError):
    """The service is temporarily unavailable; retry later."""

    status = 503
    code = "service_unavailable"


class SignatureRejected(Unauthorized):
    """The webhook could not be verified as coming from its configured sender."""

    code = "signature_mismatch"


class HookMisconfigured(ServiceUnavailable):
    """This hook's configuration is invalid, so it accepts nothing until it is fixed."""

    code = "hook_misconfigured"
