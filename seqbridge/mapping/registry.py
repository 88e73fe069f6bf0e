"""Every hook in the mappings directory, validated at load and swapped atomically on reload.

- A file is read safely (:mod:`seqbridge.mapping.source`), checked against the JSON Schema
  shipped beside this module, then each hook is compiled.
- A hook with problems answers 503 ``hook_misconfigured``; the other hooks keep working.
- On reload (a file change seen by the watcher, or :meth:`HookRegistry.reload`), a file that now
  fails keeps its previous good version, and its problems are reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from seqbridge.mapping.hooks import Hook, Target, compile_hook, compile_targets, did_you_mean
from seqbridge.mapping.source import (
    MAX_FILE_BYTES,
    Document,
    Problem,
    ProblemsFound,
    read_document,
    read_text,
)

log = logging.getLogger("seqbridge.mappings")

SCHEMA_PATH = Path(__file__).with_name("schema.json")


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _schema_message(error) -> str:
    """A jsonschema error in the words a YAML author needs, with "did you mean" for unknown keys."""
    if error.validator == "additionalProperties":
        allowed = list((error.schema.get("properties") or {}).keys())
        extra = sorted(set(error.instance) - set(allowed))
        if extra:
            return f"unknown key {extra[0]!r}{did_you_mean(extra[0], allowed)}"
    if error.validator == "anyOf" and isinstance(error.instance, dict):
        # A condition: say which keys are possible rather than "is not valid under any schema".
        return "a condition is a field test ({field: ..., equals: ...}), all, any, not, or a list"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    return error.message


def schema_problems(doc: Document) -> list[Problem]:
    problems = []
    for error in _validator().iter_errors(doc.data):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties") or {}))
            if extra:
                path = (*path, extra[0])
        if path in doc.from_env:  # the value came from the environment: it may be a secret
            message = f"the value from the environment is not valid here ({error.validator})"
        else:
            message = _schema_message(error)
        problems.append(doc.at(path, message))
    return sorted(set(problems))


def mapping_files(directory: str) -> list[str]:
    """The mapping files of a directory: ``*.yaml`` / ``*.yml``, tests files excluded."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(
        str(p)
        for p in root.iterdir()
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.stem.endswith("_test")
    )


_HOOK_LINE = re.compile(r"^( +)([A-Za-z0-9][A-Za-z0-9_-]*)\s*:")


def guess_hook_names(path: str, text: str | None = None) -> list[str]:
    """The hook names a file that does not even parse seems to declare (so they answer 503, not 404)."""
    if text is None:
        try:
            with open(path, "rb") as handle:  # a prefix: the file may be enormous
                text = handle.read(MAX_FILE_BYTES).decode("utf-8", "replace")
        except OSError:
            return []
    lines = text[:MAX_FILE_BYTES].splitlines()[:20000]
    names, inside, indent = [], False, None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            inside = line.startswith("hooks:")
            continue
        match = _HOOK_LINE.match(line)
        if inside and match and (indent is None or len(match.group(1)) == indent):
            indent = len(match.group(1))
            names.append(match.group(2))
    return names


@dataclass
class FileResult:
    """One file's hooks (good ones compiled) and problems."""

    path: str
    hooks: dict[str, Hook] = field(default_factory=dict)
    broken: dict[str, list[Problem]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    targets: dict[str, Target] = field(default_factory=dict)
    #: The organization each hook names, where the file could be read that far.
    organizations: dict[str, str] = field(default_factory=dict)
    #: The file's text as read (``${ENV}`` references not expanded), if it could be read.
    text: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.broken

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.text.encode()).hexdigest() if self.text is not None else None


def load_file(
    path: str,
    environ: Mapping[str, str],
    shared_targets: dict[str, Target],
    allow_private: bool = False,
    text: str | None = None,
) -> FileResult:
    """Read, validate and compile one mapping file (``text``, when given, is its contents: a
    version recorded or taken from git rather than the file on disk)."""
    result = FileResult(path, text=text)
    try:
        if result.text is None:
            result.text = read_text(path)
        doc = read_document(path, result.text, environ)
    except ProblemsFound as found:
        result.problems = found.problems
        result.broken = {name: found.problems for name in guess_hook_names(path, result.text)}
        return result
    if doc.data is None:
        return result
    hooks = doc.data.get("hooks") if isinstance(doc.data, dict) else None
    for name, source in hooks.items() if isinstance(hooks, dict) else []:
        if isinstance(source, dict) and isinstance(source.get("organization"), str):
            result.organizations[name] = source["organization"]
    problems = schema_problems(doc)
    if problems:
        result.problems = problems
        hooks_data = doc.data.get("hooks") if isinstance(doc.data, dict) else None
        names = list(hooks_data) if isinstance(hooks_data, dict) else guess_hook_names(path, result.text)
        result.broken = {name: problems for name in names}
        return result
    result.targets, problems = compile_targets(doc, ("targets",), doc.data.get("targets"), allow_private)
    result.problems.extend(problems)
    targets = {**shared_targets, **result.targets}
    for name, source in (doc.data.get("hooks") or {}).items():
        hook, problems = compile_hook(doc, name, source, targets, allow_private)
        if hook is None:
            result.broken[name] = problems
        else:
            result.hooks[name] = hook
    return result


def expand(paths: list[str]) -> list[str]:
    """The mapping files named by ``paths``: files as given, directories' mapping files."""
    files: list[str] = []
    for path in paths:
        files.extend(mapping_files(path) if os.path.isdir(path) else [path])
    return files


@dataclass
class Loaded:
    """Every file's result, and the hooks defined in more than one file (neither copy is trusted)."""

    results: list[FileResult]
    duplicates: dict[str, Problem]

    def problems(self) -> list[Problem]:
        found = list(self.duplicates.values())
        for result in self.results:
            found.extend(result.problems)
            for hook_problems in result.broken.values():
                found.extend(hook_problems)
        return sorted(set(found))


def load_all(
    files: list[str],
    environ: Mapping[str, str],
    allow_private: bool = False,
    texts: Mapping[str, str] | None = None,
) -> Loaded:
    """Two passes: shared targets first (any file's top-level ``targets``), then the hooks.
    ``texts`` gives the contents of some of ``files`` (the others are read from disk)."""
    texts = texts or {}
    shared: dict[str, Target] = {}
    first = [load_file(f, environ, {}, allow_private, texts.get(f)) for f in files]
    for result in first:
        shared.update(result.targets)
    # The second pass compiles the same text again, never a re-read: the file may have changed.
    again = [load_file(r.path, environ, shared, allow_private, r.text) for r in first] if shared else None
    results = again or first
    duplicates: dict[str, Problem] = {}
    seen: dict[str, str] = {}
    for result in results:
        for name in [*result.hooks, *result.broken]:
            if name in seen and seen[name] != result.path:
                duplicates.setdefault(
                    name, Problem(result.path, 1, 1, f"hook {name!r} is also defined in {seen[name]}")
                )
            seen.setdefault(name, result.path)
    return Loaded(results, duplicates)


def validate_paths(paths: list[str], environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem in these files (or directories of files), shared targets taken into account."""
    return load_all(expand(paths), os.environ if environ is None else environ).problems()


@dataclass(frozen=True)
class LoadedFile:
    """A mapping file as a registry serves it: its text (``${ENV}`` unexpanded: never a secret
    from the environment), that text's SHA-256, and the hooks live from it with the organization
    each names."""

    path: str
    text: str
    sha256: str
    hooks: dict[str, str]


class UnknownHook(LookupError):
    pass


class BrokenHook(Exception):
    def __init__(self, name: str, problems: list[Problem]) -> None:
        super().__init__(name)
        self.name = name
        self.problems = problems


class HookRegistry:
    """The loaded hooks. :meth:`get` is what a request calls; it is cheap and thread-safe."""

    def __init__(
        self,
        directory: str,
        environ: Mapping[str, str] | None = None,
        *,
        watch_seconds: float = 2.0,
        allow_private: bool = False,
    ) -> None:
        self.directory = directory
        self.allow_private = allow_private
        self.environ = os.environ if environ is None else environ
        self.watch_seconds = watch_seconds
        self._lock = threading.Lock()
        self._files: dict[str, FileResult] = {}
        self._hooks: dict[str, Hook] = {}
        self._broken: dict[str, list[Problem]] = {}
        self._stale: dict[str, list[Problem]] = {}
        self._organizations: dict[str, str] = {}
        self._signature: tuple = ()
        self._checked = 0.0
        self._listeners: list[Callable[[list[LoadedFile]], None]] = []
        self.reload()

    # Lookup ----------------------------------------------------------------------------------

    def get(self, name: str) -> Hook:
        """The hook called ``name``. Raises :class:`UnknownHook` or :class:`BrokenHook`."""
        self._maybe_reload()
        hook = self._hooks.get(name)
        if hook is not None:
            return hook
        problems = self._broken.get(name)
        if problems is not None:
            raise BrokenHook(name, problems)
        raise UnknownHook(name)

    def hooks(self) -> list[Hook]:
        self._maybe_reload()
        return list(self._hooks.values())

    def statuses(self, organization: str | None = None) -> list[dict[str, Any]]:
        """Each hook with its status (ok, invalid, or ok but with a newer version that failed);
        with ``organization``, only the hooks that name it."""
        self._maybe_reload()
        out = []
        for _name, hook in sorted(self._hooks.items()):
            if organization is not None and hook.organization != organization:
                continue
            stale = self._stale.get(hook.file)
            out.append(
                {
                    **hook.describe(),
                    "status": "stale" if stale else "ok",
                    "problems": [p.to_api() for p in stale or []],
                }
            )
        for name, problems in sorted(self._broken.items()):
            if name in self._hooks:
                continue
            named = self._organizations.get(name)
            if organization is not None and named != organization:
                continue  # an unreadable file's hooks are shown by `seqbridge mappings validate`
            out.append(
                {
                    "name": name,
                    "organization": named,
                    "status": "invalid",
                    "problems": [p.to_api() for p in problems],
                }
            )
        return out

    def loaded_files(self) -> list[LoadedFile]:
        """The files serving now (a file that broke on reload: its last good version), each with
        the hooks live from it; a file that serves no hook and declares no shared target is left out."""
        with self._lock:
            files, hooks = self._files, self._hooks
        out = []
        for path, result in sorted(files.items()):
            live = {n: h.organization for n, h in result.hooks.items() if hooks.get(n) is h}
            if (live or result.targets) and result.text is not None:
                out.append(LoadedFile(path, result.text, result.sha256 or "", live))
        return out

    def on_loaded(self, listener: Callable[[list[LoadedFile]], None]) -> None:
        """Call ``listener(loaded_files())`` after every reload that swapped in new files (outside
        the registry's lock; an exception from it is logged, never raised to the caller)."""
        self._listeners.append(listener)

    def _notify(self, swapped: bool) -> None:
        if not swapped or not self._listeners:
            return
        files = self.loaded_files()
        for listener in list(self._listeners):
            try:
                listener(files)
            except Exception:
                log.exception("a mapping load listener failed")

    # Loading ---------------------------------------------------------------------------------

    def _current_signature(self) -> tuple:
        entries = []
        for path in mapping_files(self.directory):
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append((path, st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def _maybe_reload(self) -> None:
        if self.watch_seconds <= 0 or time.monotonic() - self._checked < self.watch_seconds:
            return
        swapped = False
        with self._lock:  # a request that arrives during a reload waits for the new set
            if time.monotonic() - self._checked < self.watch_seconds:
                return  # another thread has just checked
            signature = self._current_signature()
            if signature != self._signature:
                self._reload_locked(signature)
                swapped = True
            self._checked = time.monotonic()
        self._notify(swapped)

    def reload(self) -> list[Problem]:
        """Load the directory again and swap atomically; return every problem found.

        A file that fails keeps its previous good version (if it had one).
        """
        with self._lock:
            problems = self._reload_locked(self._current_signature())
        self._notify(True)
        return problems

    def _reload_locked(self, signature: tuple) -> list[Problem]:
        """Load ``signature``'s files and swap; the caller holds the lock."""
        loaded = load_all([p for p, _, _ in signature], self.environ, self.allow_private)
        files: dict[str, FileResult] = {}
        stale: dict[str, list[Problem]] = {}
        for result in loaded.results:
            previous = self._files.get(result.path)
            if not result.ok and previous is not None and previous.ok:
                files[result.path] = previous
                stale[result.path] = sorted(
                    {*result.problems, *(p for ps in result.broken.values() for p in ps)}
                )
            else:
                files[result.path] = result
        hooks: dict[str, Hook] = {}
        broken: dict[str, list[Problem]] = {}
        organizations: dict[str, str] = {}
        for result in files.values():
            for name, org in result.organizations.items():
                organizations.setdefault(name, org)
            for name, hook in result.hooks.items():
                hooks.setdefault(name, hook)
            for name, hook_problems in result.broken.items():
                broken.setdefault(name, hook_problems)
        for name, problem in loaded.duplicates.items():  # a hook defined twice: neither copy is trusted
            hooks.pop(name, None)
            broken[name] = [problem]
        self._files, self._hooks, self._broken, self._stale = files, hooks, broken, stale
        self._organizations = organizations
        self._signature = signature
        self._checked = time.monotonic()
        everything = loaded.problems()
        for problem in everything:
            log.error("mapping problem: %s", problem)
        return everything
