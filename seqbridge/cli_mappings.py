"""``seqbridge mappings diff`` and ``seqbridge mappings test --record``: the commands' bodies
(``cli.py`` declares their options). Thin: parse, call the services, print."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta

import click

from seqbridge.errors import NotFound
from seqbridge.mapping import sources
from seqbridge.mapping.diff_text import render
from seqbridge.mapping.registry import expand, load_all
from seqbridge.services import Services
from seqbridge.services.mapping_diff import MappingInvalid, Window
from seqbridge.services.mapping_versions import NotRecorded

#: The exit code of a diff that could not be made (no version to compare against, a bad revision).
CANNOT_DIFF = 2


class CannotDiff(click.ClickException):
    exit_code = CANNOT_DIFF


def diff(
    services: Services,
    paths: list[str],
    *,
    hook: str | None,
    since: timedelta | datetime | None,
    limit: int,
    before_rev: str | None,
    before_dir: str | None,
    as_json: bool,
    fail_on_change: bool,
) -> None:
    """Run the diff and print it; exits 1 for an invalid mapping (as ``validate``) or, with
    ``fail_on_change``, for any change; 2 when no diff could be made."""
    if before_rev and before_dir:
        raise click.UsageError("name one version to compare against: --before-rev or --before-dir")
    start = services.clock.now() - since if isinstance(since, timedelta) else since
    window = Window(start, limit)
    try:
        if before_rev:
            before = sources.git_revision(before_rev, paths)
        elif before_dir:
            before = sources.directory(before_dir)
        else:
            before = services.mapping_versions.running()
    except sources.SourceError as error:
        raise CannotDiff(str(error)) from None
    except NotRecorded as error:
        raise CannotDiff(error.message) from None
    # Files named one by one: only their hooks. A directory: every hook, removed files' included.
    changed = None if any(os.path.isdir(p) for p in paths) else {os.path.basename(p) for p in expand(paths)}
    try:
        after = sources.on_disk(paths)
        report = services.mapping_diff.compare(before, after, window=window, hook=hook, changed=changed)
    except MappingInvalid as invalid:
        if as_json:
            click.echo(json.dumps(invalid.to_dict(), indent=2))
        else:  # exactly what `seqbridge mappings validate` prints
            for problem in invalid.problems:
                click.echo(str(problem))
            click.echo(f"{len(invalid.problems)} problem(s)", err=True)
        sys.exit(1)
    except NotFound as error:
        raise CannotDiff(f"{error.message} (in neither version)") from None
    click.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else render(report), nl=as_json)
    if fail_on_change and (report["changed"] or not report["complete"]):
        sys.exit(1)


def record(services: Services, paths: list[str], delivery_id: str, name: str | None) -> None:
    """Turn the stored delivery into a test case of its hook (found in ``paths``)."""
    from seqbridge.mapping.recording import RecordError
    from seqbridge.mapping.recording import record as record_case
    from seqbridge.mapping.testing import PlaceholderEnvironment

    with services.db.transaction(write=False) as tx:
        delivery = tx.deliveries.delivery_by_id(delivery_id)
        org = tx.orgs.get_org(delivery["org_id"]) if delivery else None
    if delivery is None:
        raise click.ClickException(f"no delivery with id {delivery_id}")
    loaded = load_all(expand(paths), PlaceholderEnvironment())
    hooks = {n: h for r in loaded.results for n, h in r.hooks.items() if n not in loaded.duplicates}
    hook = hooks.get(delivery["hook"])
    if hook is None:
        raise click.ClickException(f"no valid hook named {delivery['hook']!r} in {', '.join(paths)}")
    if org is None or hook.organization != org["name"]:
        raise click.ClickException(
            f"delivery {delivery_id} belongs to organization {org['name'] if org else '?'!r}, but hook "
            f"{hook.name!r} in {hook.file} names {hook.organization!r} here: run with the server's environment"
        )
    try:
        recorded = record_case(hook, delivery, name)
    except RecordError as error:
        raise click.ClickException(str(error)) from None
    expect = recorded.case["expect"]
    planned = f"rules {json.dumps(expect['rules'])} and {len(expect['actions'])} action(s)"
    click.echo(
        f"recorded {recorded.case['name']!r} in {recorded.test_file} (body: {recorded.fixture}); {planned}"
    )
    for warning in recorded.warnings:
        click.echo(f"warning: {warning}", err=True)
