"""The env file: ``KEY=VALUE`` lines the CLI and ``seqbridge serve`` read before anything else.

``./scripts/up`` writes the shipped mappings' secrets to ``var/hooks.env``; every ``seqbridge``
command reads that file (or the one ``--env-file`` or ``SEQBRIDGE_ENV_FILE`` names) into its
environment, so ``seqbridge mappings validate`` sees what the server sees. A variable already in the
environment wins over the file. The file is parsed by python-dotenv: comments, ``export``, quotes
and ``${VAR}`` work as in the shell ``scripts/up`` sources it with.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from dotenv import dotenv_values

#: Read when it exists and no other file is named (relative to the working directory, as ./var is).
DEFAULT_ENV_FILE = Path("var") / "hooks.env"
ENV_VARIABLE = "SEQBRIDGE_ENV_FILE"


class EnvFileError(Exception):
    """A named env file cannot be read."""


def env_file_path(explicit: str | None, environ: MutableMapping[str, str]) -> Path | None:
    """The file to read: ``explicit``, else ``SEQBRIDGE_ENV_FILE`` (empty: none), else
    ``var/hooks.env`` if it exists. Raises :class:`EnvFileError` for a named file that is missing."""
    named = explicit if explicit is not None else environ.get(ENV_VARIABLE)
    if named is None:
        return DEFAULT_ENV_FILE if DEFAULT_ENV_FILE.is_file() else None
    if not named:
        return None
    path = Path(named)
    if not path.is_file():
        source = "--env-file" if explicit is not None else ENV_VARIABLE
        raise EnvFileError(f"{source}: no such file: {path}")
    return path


def load_env_file(explicit: str | None = None, environ: MutableMapping[str, str] = os.environ) -> Path | None:
    """Set every variable of the env file that ``environ`` does not have yet; return the file read
    (None when there is none). Raises :class:`EnvFileError` for a named file that cannot be read."""
    path = env_file_path(explicit, environ)
    if path is None:
        return None
    try:
        values = dotenv_values(path, interpolate=True)
    except (OSError, UnicodeDecodeError) as error:
        raise EnvFileError(f"cannot read {path}: {error}") from None
    for name, value in values.items():
        if value is not None and name not in environ:
            environ[name] = value
    return path
