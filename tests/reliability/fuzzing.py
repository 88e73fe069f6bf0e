"""Shared by the property-based tests: their settings and the checks every answer must pass.

The examples are derandomized, so CI sees the same ones on every run and a failure reproduces.
To search further, run with ``SEQBRIDGE_FUZZ_EXAMPLES=<multiplier>`` and ``SEQBRIDGE_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, settings

_SCALE = float(os.environ.get("SEQBRIDGE_FUZZ_EXAMPLES", "1"))
_RANDOM = os.environ.get("SEQBRIDGE_FUZZ_RANDOM") == "1"
_CODE = re.compile(r"[a-z][a-z0-9_]*")


def fuzz(examples: int) -> settings:
    """Settings for a fuzz test of ``examples`` examples (times the multiplier)."""
    return settings(
        max_examples=max(1, int(examples * _SCALE)),
        deadline=None,  # a request's time is not the property; nothing here is timed
        derandomize=not _RANDOM,
        database=None,
        # The app, its database and its client are fixtures shared by every example on purpose.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def assert_envelope(response) -> dict:
    """A non-2xx answer: the JSON error envelope with a machine code and a human message."""
    assert response.status_code < 500, (response.status_code, response.get_data()[:500])
    assert response.mimetype == "application/json", (response.status_code, response.get_data()[:200])
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and _CODE.fullmatch(error["code"]), error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error.get("details", {}), dict), error
    return error
