"""Signing secrets for what Seqbridge sends (webhook steps, REST hooks).

One master secret: ``SEQBRIDGE_WEBHOOK_SECRET``, or one generated once into ``var/webhook-secret``
(the embedded default; set it explicitly when several hosts sign). Each REST hook subscription's
secret is derived from it (HMAC-SHA256 over the subscription id), so no signing secret is ever
stored in the database; rotating the master rotates them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

PREFIX = "whsec_"


def var_dir(settings: dict[str, Any]) -> Path:
    return Path(settings.get("VAR_DIR") or Path.cwd() / "var")


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def webhook_secret(configured: str, directory: Path) -> str:
    """The master secret: the configured one, else the one generated once into ``directory``
    (created atomically: processes starting together all read the same one)."""
    if configured:
        return configured
    path = directory / "webhook-secret"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        scratch = directory / f".webhook-secret.{os.getpid()}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_secret())
        try:
            os.link(scratch, path)  # fails if another process got there first: theirs wins
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return path.read_text().strip()


def master_secret(settings: dict[str, Any]) -> str:
    return webhook_secret(settings["WEBHOOK_SECRET"], var_dir(settings))


def derived_secret(master: str, purpose: str) -> str:
    """A Standard Webhooks secret for ``purpose`` (e.g. ``rest-hook:<id>``), from the master."""
    key = master.removeprefix(PREFIX).encode()
    return PREFIX + base64.b64encode(hmac.new(key, purpose.encode(), hashlib.sha256).digest()).decode()
