"""The webhook lane: ``POST /hooks/<name>`` answered in front of Flask.

A webhook is the one request Seqbridge gets thousands of a second, and Flask's machinery for
it (the request and app contexts, URL matching, the before- and after-request functions, the
response object and its finalising) cost about as much Python as everything Seqbridge itself
does for it (BENCHMARKS.md, issue 18). This WSGI middleware takes the common webhook, a POST
with a Content-Length and no query string to ``/hooks/<name>``, and runs exactly what Flask's
view runs (:func:`seqbridge.web.hooks.admit`, :func:`~seqbridge.web.hooks.take`: the same
checks, the same inbox), then answers with the same envelope, headers, metrics and access-log
line (:func:`seqbridge.web.pipeline.account`) straight through WSGI.

Everything else goes to Flask untouched: GET handshakes, PUT, a query string (``?token=``, the
contract's query checks), a chunked body, a path Flask's router might read differently (not
ASCII, a slash or NUL in the name), and every request when ``SEQBRIDGE_HOOKS_LANE`` is false.
``tests/test_hook_lane.py`` sends the same requests both ways and compares the answers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import uuid_utils
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header
from werkzeug.wrappers import Request

from seqbridge.errors import SeqbridgeError
from seqbridge.logs import REQUEST_ID
from seqbridge.web import hooks
from seqbridge.web.errors import seqbridge_error, unexpected_error
from seqbridge.web.pipeline import HOOK_ROUTE, account

_PREFIX = "/hooks/"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
_JSON = ("Content-Type", "application/json")

StartResponse = Callable[..., Any]


class HookLane:
    """``app.wsgi_app``, with the common webhook taken before Flask sees it."""

    def __init__(self, app, wsgi_app: Callable[[dict, StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.flask = wsgi_app
        self.inbox = app.extensions["seqbridge"].inbox
        self._status_lines: dict[int, str] = {}

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if (
            not path.startswith(_PREFIX)
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or not environ.get("CONTENT_LENGTH", "").isdigit()
            or environ.get("HTTP_TRANSFER_ENCODING")
        ):
            return self.flask(environ, start_response)
        name = path[len(_PREFIX) :]
        if not name or not name.isascii() or "/" in name or "\x00" in name:
            return self.flask(environ, start_response)
        return self._receive(environ, start_response, name, path)

    def _receive(self, environ: dict, start_response: StartResponse, name: str, path: str) -> Iterable[bytes]:
        started = time.perf_counter()
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid_utils.uuid4().hex
        token = REQUEST_ID.set(request_id)  # for every log line written on the way
        code = None
        try:
            try:
                hook = hooks.admit(self.inbox, name)
                received = hooks.take(self.app, LaneRequest(environ), hook, request_id)
            except SeqbridgeError as error:
                status, headers, payload = seqbridge_error(error, request_id)
                code = error.code
                body = _json(payload)
            except Exception:
                status, payload = unexpected_error(request_id, "POST", path)
                headers, code = {}, "internal_error"
                body = _json(payload)
            else:
                if getattr(hook.connector, "redirect_to", None):  # a browser form: Flask's redirect
                    response = hooks.respond(self.app, hook, received)
                    response.headers["X-Request-Id"] = request_id
                    account(HOOK_ROUTE, "POST", path, response.status_code, started=started, hook=name)
                    return response(environ, start_response)
                status, headers, body = received.http_status, {}, hooks.answer_body(received)
            account(HOOK_ROUTE, "POST", path, status, started=started, hook=name, error_code=code)
        finally:
            REQUEST_ID.reset(token)
        start_response(
            self._status_line(status),
            [
                _JSON,
                ("Content-Length", str(len(body))),
                *headers.items(),
                ("X-Request-Id", request_id),
            ],
        )
        return [body]

    def _status_line(self, status: int) -> str:
        line = self._status_lines.get(status)
        if line is None:
            line = self._status_lines[status] = f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"
        return line


class LaneRequest:
    """What :func:`seqbridge.web.hooks.take` reads of a request, straight from the WSGI environ
    of a request the lane took (ASCII path, a Content-Length, no query string, no
    Transfer-Encoding): werkzeug's ``Request`` parses its headers, path and URL up front, and
    costs more than the rest of the view. Each value is what werkzeug's would be for such a
    request; the URL (needed only by senders that sign it) is werkzeug's own."""

    __slots__ = ("content_length", "environ", "method", "path")
    query_string = b""
    args: dict = {}

    def __init__(self, environ: dict) -> None:
        self.environ = environ
        self.method = "POST"
        self.path = environ["PATH_INFO"]
        self.content_length = int(environ["CONTENT_LENGTH"])

    @property
    def mimetype(self) -> str:
        return parse_options_header(self.environ.get("CONTENT_TYPE", ""))[0].lower()

    @property
    def url(self) -> str:
        return Request(self.environ).url


def _json(payload: dict) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()
