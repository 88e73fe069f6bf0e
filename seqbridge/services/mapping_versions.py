"""What the server runs: every process that loads the mappings (the web processes and the worker)
records each file's text as it loaded it, so that ``seqbridge mappings diff`` — another process,
often on another machine — can compare a change against the version that is live.

- A row is written only when a file changes: a new text, other hooks live from it, or the file no
  longer serving (removed, or broken with no good version to keep). The first process to see a
  version records it; the others find it already there.
- The text is the file as written, ``${ENV}`` references and all: a value from the environment is
  never stored, and a secret written in a ``source`` or ``targets`` block is blanked out
  (``"${SEQBRIDGE_REDACTED_SECRET}"``; the SHA-256 is the file's as it is).
- Recording never stands in the way of serving: a database that cannot be written is logged, and
  the next reload tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from seqbridge.clock import Clock
from seqbridge.errors import ServiceUnavailable
from seqbridge.mapping.registry import HookRegistry, LoadedFile
from seqbridge.mapping.sources import MappingFile, MappingSet, blank_secrets
from seqbridge.services.common import format_time
from seqbridge.storage.db import Database

log = logging.getLogger("seqbridge.mappings")


class NotRecorded(ServiceUnavailable):
    """The server has not recorded the mapping version it runs."""

    code = "mapping_version_unknown"


class MappingVersionService:
    """Records the mapping files a process loaded, and reads back the newest version of each."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._lock = threading.Lock()
        #: file name → (sha256, hooks) as last recorded by (or found for) this process.
        self._recorded: dict[str, tuple[str | None, dict[str, str]]] | None = None

    def watch(self, registry: HookRegistry) -> None:
        """Record what ``registry`` serves now, and again after every reload that changes it."""
        self.record(registry.loaded_files())
        registry.on_loaded(self.record)

    def record(self, files: list[LoadedFile]) -> bool:
        """Write the versions of ``files`` that are not the newest recorded yet, and a removal for
        each recorded file that no longer serves. Returns False (after logging why) if the
        database could not be written; never raises."""
        serving = {os.path.basename(f.path): f for f in files}
        wanted = {name: (f.sha256, f.hooks) for name, f in serving.items()}
        with self._lock:
            if self._recorded is not None and _live(self._recorded) == wanted:
                return True
            try:
                self._recorded = self._write(serving, wanted)
            except Exception as error:  # the database is down or not migrated yet: serve anyway
                log.warning("could not record the mapping versions loaded: %s", _reason(error))
                return False
        return True

    def _write(
        self, serving: dict[str, LoadedFile], wanted: dict[str, tuple[str, dict[str, str]]]
    ) -> dict[str, tuple[str | None, dict[str, str]]]:
        with self.db.transaction(write=False) as tx:  # usually nothing is new: no write lock taken
            newest = tx.mapping_versions.newest_per_file()
        rows: list[dict[str, Any]] = []
        for name, f in sorted(serving.items()):
            row = newest.get(name)
            if row is None or (row["sha256"], row["hooks"]) != wanted[name]:
                text = blank_secrets(f.text)  # a secret written in the file is not copied
                if text is None:
                    log.warning("mapping file %s not recorded: its secrets could not be blanked out", f.path)
                    continue
                rows.append(_version(name, f.path, f.sha256, text, f.hooks))
        for name, row in sorted(newest.items()):
            if name not in serving and row["sha256"] is not None:  # it no longer serves
                rows.append(_version(name, row["path"], None, None, {}))
        if rows:  # two processes loading the same change may both write it: harmless, the same text
            now, by = self.clock.now(), f"{socket.gethostname()}:{os.getpid()}"[:200]
            with self.db.transaction() as tx:
                tx.mapping_versions.insert_versions([{**r, "loaded_at": now, "loaded_by": by} for r in rows])
        recorded = {name: (row["sha256"], row["hooks"]) for name, row in newest.items()}
        recorded.update({row["file"]: (row["sha256"], row["hooks"]) for row in rows})
        return recorded

    def running(self, registry: HookRegistry | None = None) -> MappingSet:
        """The newest recorded version of every file that serves. With ``registry`` (a server
        process asking about itself), what it serves is recorded first if the database has
        nothing yet. Raises :class:`NotRecorded` when no version was ever recorded."""
        with self.db.transaction(write=False) as tx:
            newest = tx.mapping_versions.newest_per_file()
        if not newest and registry is not None and self.record(registry.loaded_files()):
            with self.db.transaction(write=False) as tx:
                newest = tx.mapping_versions.newest_per_file()
        if not newest:
            raise NotRecorded(
                "The server has not recorded the mapping version it runs (it has not been started "
                "against this database since mappings diff exists). Name the version to compare "
                "against with --before-rev or --before-dir.",
                headers={"Retry-After": "5"},
            )
        files = tuple(
            MappingFile(
                name,
                row["path"],
                row["source"],
                format_time(row["loaded_at"]),
                row["loaded_by"],
                row["hooks"],
                row["sha256"],
            )
            for name, row in sorted(newest.items())
            if row["sha256"] is not None
        )
        return MappingSet("running", "the running version (as the server recorded it)", files)


def _version(
    name: str, path: str, sha: str | None, text: str | None, hooks: dict[str, str]
) -> dict[str, Any]:
    return {"file": name, "path": path, "sha256": sha, "source": text, "hooks": hooks}


def _live(recorded: dict[str, tuple[str | None, dict[str, str]]]) -> dict[str, tuple[str, dict[str, str]]]:
    return {name: (sha, hooks) for name, (sha, hooks) in recorded.items() if sha is not None}


def _reason(error: Exception) -> str:
    """One line about what went wrong (a driver's message may span many)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message.splitlines()[0][:300]
