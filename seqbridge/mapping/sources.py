"""The two sides of a mapping diff: sets of mapping files, wherever their text comes from.

- ``running``: the newest version of each file the server recorded as loaded (built by
  :mod:`seqbridge.services.mapping_versions` from the database);
- ``directory``: every mapping file of a directory on disk (``--before-dir``);
- ``git``: the same paths at a git revision (``--before-rev``);
- ``files``: the paths given, as they are on disk now (the CLI's "after");
- ``submitted``: the running set with one file replaced by a text sent to the API.

A file is identified by its name: the mappings directory is flat.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

import yaml

from seqbridge.audit import REDACTED, redact
from seqbridge.mapping.registry import Loaded, expand, guess_hook_names, load_all, mapping_files
from seqbridge.mapping.source import Problem, ProblemsFound, read_document

#: What a recorded version holds instead of a secret written in a file (see :func:`blank_secrets`).
REDACTED_SECRET = "SEQBRIDGE_REDACTED_SECRET"
#: What it reads as when a recorded version is compiled again: any connector takes it (it is a
#: well-formed Standard Webhooks secret, too). Nothing is verified in a diff.
_STAND_IN = "whsec_" + base64.b64encode(b"seqbridge-redacted-secret").decode()


def secret_name(name: str) -> bool:
    """The audit log's rule: a setting whose name says secret, token, password, signature, key …"""
    return redact({name: "x"})[name] == REDACTED


def blank_secrets(text: str) -> str | None:
    """``text`` with every secret written literally in a ``source`` or ``targets`` block (a
    setting :func:`secret_name` names) replaced by ``"${SEQBRIDGE_REDACTED_SECRET}"``, so a copy
    of a mapping file never holds one. ``${VAR}`` references are kept as they are. Returns None
    when the result would not read as the same hooks and rules."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    spans: dict[int, tuple[int, str]] = {}

    def visit(node: Any, in_settings: bool, depth: int) -> None:
        if depth > 60 or not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return
        pairs = node.value if isinstance(node, yaml.MappingNode) else [(None, item) for item in node.value]
        for key, value in pairs:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            settings = in_settings or name in ("source", "targets")
            if in_settings and name and secret_name(name):
                for scalar in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    if isinstance(scalar, yaml.ScalarNode) and scalar.value and "${" not in scalar.value:
                        tail = "\n" if scalar.style in ("|", ">") else ""
                        spans[scalar.start_mark.index] = (
                            scalar.end_mark.index,
                            f'"${{{REDACTED_SECRET}}}"{tail}',
                        )
            else:
                visit(value, settings, depth + 1)

    visit(root, False, 0)
    blanked = text
    for start in sorted(spans, reverse=True):
        end, replacement = spans[start]
        blanked = blanked[:start] + replacement + blanked[end:]
    return blanked if _same_rules(text, blanked) else None


class _AnyEnvironment(dict):
    """Every variable is set (to its name): for comparing two texts' structure only."""

    def __contains__(self, name: object) -> bool:
        return True

    def get(self, name: str, default: Any = None) -> str:
        return _STAND_IN if name == REDACTED_SECRET else f"value-of-{name}"


def _same_rules(text: str, blanked: str) -> bool:
    try:
        before = read_document("a", text, _AnyEnvironment()).data
        after = read_document("b", blanked, _AnyEnvironment()).data
    except ProblemsFound:
        return False
    hooks = lambda data: (data or {}).get("hooks") if isinstance(data, dict) else None  # noqa: E731
    old, new = hooks(before), hooks(after)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old == new
    return list(old) == list(new) and all(
        isinstance(old[n], dict) and isinstance(new[n], dict) and old[n].get("rules") == new[n].get("rules")
        for n in old
    )


def stand_in_environment(environ: Mapping[str, str]) -> Mapping[str, str]:
    """``environ``, where ``${SEQBRIDGE_REDACTED_SECRET}`` (a secret blanked out of a recorded
    version) reads as a stand-in value."""
    return ChainMap({REDACTED_SECRET: _STAND_IN}, environ)  # type: ignore[arg-type]


class SourceError(Exception):
    """A version that cannot be read: not a git repository, an unknown revision, no such directory."""


@dataclass(frozen=True)
class MappingFile:
    """One mapping file of a set: its name, where it was read from, and its text (None: read
    from disk when the set is loaded)."""

    name: str
    path: str
    text: str | None = None
    #: For a recorded version: when and by which process it was first loaded, and the hooks
    #: that were live from it, with the organization the server resolved for each.
    loaded_at: str | None = None
    loaded_by: str | None = None
    hooks: Mapping[str, str] | None = None
    #: For a recorded version, the SHA-256 of the file as it was (its text here has its secrets
    #: blanked out); otherwise computed from the text.
    sha256: str | None = None


@dataclass(frozen=True)
class MappingSet:
    """The files of one side of a diff. ``label`` says, for people, which version it is."""

    source: str
    label: str
    files: tuple[MappingFile, ...]
    #: The git revision or directory named, where there is one.
    ref: str | None = None

    def load(self, environ: Mapping[str, str], allow_private: bool = False) -> Loaded:
        """Validate and compile every file (``${ENV}`` expanded from ``environ``)."""
        texts = {f.path: f.text for f in self.files if f.text is not None}
        if any(REDACTED_SECRET in text for text in texts.values()):
            environ = stand_in_environment(environ)
        return load_all([f.path for f in self.files], environ, allow_private, texts)

    def sha_of(self, path: str, loaded: Loaded | None = None) -> str | None:
        """The SHA-256 of a file of this set, as recorded or of its text (read when loaded)."""
        f = next((f for f in self.files if f.path == path), None)
        if f is not None and f.sha256 is not None:
            return f.sha256
        text = f.text if f is not None and f.text is not None else None
        if text is None and loaded is not None:
            text = next((r.text for r in loaded.results if r.path == path), None)
        return sha256(text) if text is not None else None

    def names(self) -> set[str]:
        return {f.name for f in self.files}

    def file_named(self, name: str) -> MappingFile | None:
        return next((f for f in self.files if f.name == name), None)

    def describe(self, loaded: Loaded | None = None) -> dict[str, Any]:
        """What the report says about this version: its source and each file's name and hash."""
        files = []
        for f in self.files:
            entry: dict[str, Any] = {"file": f.name, "path": f.path, "sha256": self.sha_of(f.path, loaded)}
            if f.loaded_at is not None:
                entry.update(loaded_at=f.loaded_at, loaded_by=f.loaded_by)
            files.append(entry)
        out: dict[str, Any] = {"source": self.source, "label": self.label, "files": files}
        if self.ref is not None:
            out["ref"] = self.ref
        return out


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def on_disk(paths: list[str]) -> MappingSet:
    """The mapping files named by ``paths`` (files, or directories of files) as they are now."""
    files = tuple(MappingFile(os.path.basename(p), p) for p in expand(paths))
    return MappingSet("files", "the files on disk", files, ref=", ".join(paths))


def directory(path: str) -> MappingSet:
    """Every mapping file of the directory ``path``. Raises :class:`SourceError`."""
    if not os.path.isdir(path):
        raise SourceError(f"{path} is not a directory")
    files = tuple(MappingFile(os.path.basename(p), p) for p in mapping_files(path))
    return MappingSet("directory", f"the files in {path}", files, ref=path)


def submitted(base: MappingSet, name: str, text: str) -> MappingSet:
    """``base`` with the file ``name`` replaced by (or added as) ``text``."""
    new = MappingFile(name, name, text)
    kept = tuple(f for f in base.files if f.name != name)
    return replace(
        base,
        source="submitted",
        label="the running version with the submitted file",
        files=(*kept, new),
        ref=name,
    )


def git_revision(revision: str, paths: list[str]) -> MappingSet:
    """The mapping files named by ``paths`` as they were at ``revision`` of the git repository
    that holds them: the same files (a file the revision does not have is left out, it is new),
    and for a directory every mapping file it had then. Raises :class:`SourceError`."""
    files: list[MappingFile] = []
    commit = None
    for path in paths:
        where = path if os.path.isdir(path) else os.path.dirname(path) or "."
        top = _git(where, "rev-parse", "--show-toplevel").strip()
        commit = commit or _git(top, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").strip()
        relative = PurePosixPath(os.path.relpath(os.path.realpath(path), os.path.realpath(top))).as_posix()
        if os.path.isdir(path):
            prefix = "" if relative == "." else relative.rstrip("/") + "/"
            listed = _git(top, "ls-tree", "--name-only", commit, "--", prefix or ".").splitlines()
            names = [
                n
                for n in listed
                if PurePosixPath(n).suffix in (".yaml", ".yml")
                and not PurePosixPath(n).stem.endswith("_test")
            ]
        else:
            names = [relative] if _git_has(top, commit, relative) else []
        for name in names:
            text = _git(top, "show", f"{commit}:{name}")
            files.append(MappingFile(PurePosixPath(name).name, f"{revision}:{name}", text))
    label = f"git revision {revision}" + (f" ({commit[:12]})" if commit else "")
    return MappingSet("git", label, tuple(files), ref=revision)


def _git_has(top: str, commit: str, path: str) -> bool:
    result = subprocess.run(
        ["git", "-C", top, "cat-file", "-e", f"{commit}:{path}"], capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


def _git(where: str, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", where, *args], capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise SourceError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} took longer than 30 s") from None
    if result.returncode != 0:
        if args[:2] == ("rev-parse", "--verify"):
            raise SourceError(f"{args[-1].removesuffix('^{commit}')!r} is not a revision of {where}")
        message = (
            result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        )
        raise SourceError(f"git {args[0]}: {message}")
    return result.stdout


# Mappings sent to the API ------------------------------------------------------------------------

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def declared_hooks(text: str) -> list[str]:
    """The hooks a mapping text seems to declare (it may not even parse)."""
    return guess_hook_names("submitted", text)


def environment_in_rules(name: str, text: str, environ: Mapping[str, str]) -> list[Problem]:
    """A mapping sent to the API may read the environment in its settings (organization, source,
    targets), never in its rules: the diff shows what the rules plan, and would show the value."""
    try:
        doc = read_document(name, text, environ)
    except ProblemsFound:
        return []  # the loader reports these
    settings = {"organization", "source", "targets"}
    problems = []
    for path in sorted(doc.from_env, key=str):
        if (path and path[0] == "targets") or (len(path) >= 3 and path[0] == "hooks" and path[2] in settings):
            continue
        problems.append(
            doc.at(
                path,
                "a mapping sent to the API reads the environment (${...}) only in "
                "organization, source and targets",
            )
        )
    return problems


def scrubbed(problems: list[Problem], after: MappingSet, environ: Mapping[str, str]) -> list[Problem]:
    """The problems, with any value the files read from the environment blanked out of messages."""
    values = set()
    for f in after.files:
        for name in _ENV_REFERENCE.findall(f.text or ""):
            value = environ.get(name)
            if value and len(value) >= 4:
                values.add(value)
    if not values:
        return problems
    out = []
    for problem in problems:
        message = problem.message
        for value in values:
            message = message.replace(value, "[REDACTED]")
        out.append(Problem(problem.file, problem.line, problem.col, message))
    return out
