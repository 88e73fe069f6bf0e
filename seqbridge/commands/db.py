"""``seqbridge db``: the database as a whole. ``db copy`` moves the embedded SQLite database (or
any other) into a fresh PostgreSQL one."""

from __future__ import annotations

import signal
import sys
import time

import click
from sqlalchemy.exc import ArgumentError


@click.group()
def db() -> None:
    """The database as a whole."""


@db.command("copy")
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="The empty database to copy into, e.g. postgresql://user:pass@host/seqbridge.",
)
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows read and written at a time (tables holding webhook bodies use a twentieth).",
)
def db_copy(target_url: str, batch_size: int) -> None:
    """Copy this database (SEQBRIDGE_DATABASE_URL or --database-url; the embedded SQLite by
    default) into an empty one: every table, ids unchanged, then verify the audit chain there.

    Stop the server and workers first. The target's schema is created or upgraded; a target that
    already holds data is refused. An interrupted copy keeps nothing on the target: run it again.
    """
    from seqbridge.audit import verify_chain
    from seqbridge.cli import _services
    from seqbridge.storage.copy import CopyError, copy_database, counts
    from seqbridge.storage.db import Database

    services = _services()
    source = services.db
    try:
        target = Database(target_url, services.settings)
    except (ValueError, ArgumentError) as error:  # a malformed or unsupported URL
        raise click.ClickException(f"--to: {error}") from None
    shown = target.engine.url.render_as_string(hide_password=True)
    click.echo(f"copying {source.engine.url.render_as_string(hide_password=True)} -> {shown}")
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM rolls back and reports, as Ctrl-C does
    started, last = time.monotonic(), {"at": 0.0}

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last["at"] >= 2:
            last["at"] = now
            click.echo(f"  {table}: {done}/{total} rows")

    try:
        report = copy_database(source, target, batch_size=batch_size, progress=progress)
        checked, problems = verify_chain(target)
        if problems:
            for problem in problems:
                click.echo(f"BROKEN on the target: {problem}", err=True)
            raise click.ClickException("the audit chain does not verify on the target; do not switch to it")
        mismatched = {
            t: (n, m)
            for (t, n), m in zip(counts(source).items(), counts(target).values(), strict=True)
            if n != m
        }
        if mismatched:
            raise click.ClickException(f"row counts differ (source, target): {mismatched}")
    except CopyError as error:
        raise click.ClickException(str(error)) from None
    finally:
        target.dispose()
    click.echo(
        f"copied {report.rows} rows in {len(report.tables)} tables in {time.monotonic() - started:.1f}s; "
        f"audit chain intact on the target: {checked} events verified"
    )
    click.echo(f"next: set SEQBRIDGE_DATABASE_URL={shown} for every process (see 'Moving to PostgreSQL')")


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(db())
