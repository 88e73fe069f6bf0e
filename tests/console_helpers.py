"""Signing a Flask test client into the console, as a browser would."""

from __future__ import annotations

import re

_FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client, key: str):
    """Sign in with ``key``; return the response of the sign-in POST."""
    form = client.get("/sign-in")
    token = _FORM_TOKEN.search(form.text).group(1)
    return client.post("/sign-in", data={"form_token": token, "api_key": key})


def csrf(client, path: str = "/") -> str:
    """The session's CSRF token, read from a page's forms."""
    return _CSRF.search(client.get(path).text).group(1)
