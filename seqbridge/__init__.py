"""Seqbridge: a webhook bridge and sequence backend.

The data flow is the architecture: webhook in → verify → store → map → act → audit.
"""

from __future__ import annotations

__version__ = "0.1.0"


def create_app(test_config=None):
    """Build the Flask application; see :func:`seqbridge.web.create_app`."""
    from seqbridge.web import create_app as _create_app

    return _create_app(test_config)
