"""The ``seqbridge`` command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from seqbridge import __version__
from seqbridge.clock import SystemClock
from seqbridge.config import ConfigError, load_settings
from seqbridge.envfile import EnvFileError, load_env_file
from seqbridge.errors import SeqbridgeError
from seqbridge.logs import configure_logging
from seqbridge.services import Services
from seqbridge.services.keys import ALL_SCOPES, SCOPES
from seqbridge.signing import var_dir
from seqbridge.storage.db import Database


def _services(*, ensure_schema: bool = True) -> Services:
    """Build the services from the environment; make sure the schema is current first.

    On SQLite (the embedded default) a missing or old schema is created or upgraded on the spot;
    on PostgreSQL the command refuses and asks for `seqbridge init`, which an operator runs.
    """
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings["LOG_LEVEL"], settings["LOG_FORMAT"])
    services = Services(Database(settings["DATABASE_URL"], settings), SystemClock(), settings)
    if ensure_schema:
        _ensure_schema(services)
    return services


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqbridge")
@click.option(
    "--database-url",
    metavar="URL",
    help="Overrides SEQBRIDGE_DATABASE_URL (sqlite:///path or postgresql://...).",
)
@click.option(
    "--env-file",
    metavar="PATH",
    help="Read KEY=VALUE lines from this file (default: SEQBRIDGE_ENV_FILE, else var/hooks.env if it "
    "exists); variables already in the environment win.",
)
def main(database_url: str | None, env_file: str | None) -> None:
    """Seqbridge: webhook bridge and sequence backend."""
    if database_url:
        # Children (gunicorn, the worker) inherit the environment.
        os.environ["SEQBRIDGE_DATABASE_URL"] = database_url
    try:
        load_env_file(env_file)  # before any setting is read; children inherit what it sets
    except EnvFileError as error:
        raise click.ClickException(str(error)) from None


@main.command()
def init() -> None:
    """Create or upgrade the database schema. Safe to run again."""
    from seqbridge.storage.migrate import current_revision, upgrade

    services = _services(ensure_schema=False)
    try:
        upgrade(services.db)
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"database ready at schema revision {current_revision(services.db)}")


# Keys ---------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--org", "org_name", required=True, help="Organization name; created if it does not exist.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([*SCOPES, ALL_SCOPES]),
    help="Repeat for several scopes. X:write implies X:read; * grants everything.",
)
@click.option("--name", default="default", show_default=True, help="A label to tell keys apart.")
def keys_create(org_name: str, scopes: tuple[str, ...], name: str) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    try:
        created = _services().keys.create_key(org_name, list(scopes), name)
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"organization: {created.org_name} ({created.org_id})", err=False)
    click.echo(f"key id:       {created.id}")
    click.echo(f"name:         {created.name}")
    click.echo(f"scopes:       {' '.join(created.scopes)}")
    click.echo("Store the key now; it is not stored and cannot be shown again:")
    click.echo(created.raw_key)


@keys.command("list")
@click.option("--org", "org_name", help="Only this organization's keys.")
def keys_list(org_name: str | None) -> None:
    """List keys (never their secrets)."""
    try:
        rows = _services().keys.list_keys(org_name)
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"{'KEY ID':36}  {'ORGANIZATION':20}  {'NAME':16}  {'PREFIX':14}  {'STATUS':8}  SCOPES")
    for row in rows:
        status = "revoked" if row["revoked_at"] else "active"
        click.echo(
            f"{row['id']:36}  {row['org_name'][:20]:20}  {row['name'][:16]:16}  {row['prefix'] + '…':14}  "
            f"{status:8}  {' '.join(row['scopes'])}"
        )


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests with it get 401 from now on."""
    try:
        key = _services().keys.revoke_key(key_id)
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"revoked {key['id']} ({key['name']}, {key['prefix']}…)")


# Audit --------------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Inspect the audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Walk every organization's hash chain; exit 1 naming the first bad event if any was altered."""
    from seqbridge.audit import verify_chain

    checked, problems = verify_chain(_services().db)
    if problems:
        for problem in problems:
            click.echo(f"BROKEN: {problem}", err=True)
        sys.exit(1)
    click.echo(f"audit chain intact: {checked} events verified")


# Deliveries and mappings ---------------------------------------------------------------------


@main.group()
def deliveries() -> None:
    """Webhook deliveries."""


@deliveries.command("replay")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    default=("dead",),
    show_default=True,
    type=click.Choice(["dead", "failed", "processed"]),
    help="Replay deliveries in this status (repeatable).",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]),
    help="Only deliveries received at or after this time (UTC).",
)
@click.option("--hook", help="Only this hook's deliveries.")
@click.option("--org", "org_name", help="Only this organization's deliveries.")
@click.option("--limit", default=10000, show_default=True, type=click.IntRange(1, 1_000_000))
def deliveries_replay(
    statuses: tuple[str, ...], since, hook: str | None, org_name: str | None, limit: int
) -> None:
    """Queue matching deliveries again; the worker processes them with the current mappings."""
    from datetime import UTC

    from seqbridge.context import Actor, ActorType, Caller

    services = _services()
    org_id = None
    if org_name:
        with services.db.transaction(write=False) as tx:
            org = tx.orgs.get_org_by_name(org_name)
        if org is None:
            raise click.ClickException(f"no organization named {org_name!r}")
        org_id = org["id"]
    queued = services.deliveries.replay_many(
        lambda org: Caller(org, Actor(ActorType.CLI, "cli")),
        statuses=list(statuses),
        since=since.replace(tzinfo=UTC) if since else None,
        hook=hook,
        org_id=org_id,
        limit=limit,
    )
    click.echo(f"queued {len(queued)} deliveries again")


class OlderThan(click.ParamType):
    """``30d``, ``12h``, ``90m``, ``2w`` (before now), or a date / time (``2026-01-01``,
    ``2026-01-01T12:00:00Z``; UTC when no offset is given). Converts to a timedelta or a datetime."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        from seqbridge.services.common import parse_moment

        try:
            return parse_moment(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


@deliveries.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    type=OlderThan(),
    help="Delete what is older than this: 30d, 12h, 90m, 2w, or a date such as 2026-01-01 (UTC).",
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows per transaction; each batch holds the write lock only briefly.",
)
def deliveries_prune(older_than, batch_size: int) -> None:
    """Delete finished webhook deliveries (processed, failed, dead, rejected, ignored) older than
    DURATION, with their dedupe keys; expired idempotency keys; old outbox rows and sent REST hook notifications. Queued and
    processing deliveries are never deleted, and deliveries that own dedupe keys are kept for the
    7-day dedupe window whatever DURATION says. Audited per organization."""
    from datetime import timedelta

    from seqbridge.context import Actor, ActorType, Caller
    from seqbridge.services.retention import DEDUPE_WINDOW

    services = _services()
    now = services.clock.now()
    cutoff = now - older_than if isinstance(older_than, timedelta) else older_than
    try:
        pruned = services.retention.prune(
            cutoff, lambda org: Caller(org, Actor(ActorType.CLI, "cli")), batch_size=batch_size
        )
    except SeqbridgeError as error:
        raise click.BadParameter(error.message, param_hint="--older-than") from None
    totals = pruned.totals
    click.echo(
        f"older than {cutoff.isoformat()} (deliveries with dedupe keys: older than "
        f"{pruned.keyed_cutoff.isoformat()}, the {DEDUPE_WINDOW.days}-day dedupe window)"
    )
    click.echo(
        f"deleted {totals['deliveries']} deliveries, {totals['delivery_keys']} dedupe keys, "
        f"{totals['idempotency_keys']} idempotency keys, {totals['outbox']} outbox rows, "
        f"{totals['rest_hook_notifications']} REST hook notifications"
    )


@main.group()
def mappings() -> None:
    """Mapping files: validate them before they go live."""


@mappings.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
def mappings_validate(paths: tuple[str, ...]) -> None:
    """Check mapping files (default: the mappings directory); print file:line:col: message per problem."""
    from seqbridge.mapping.registry import validate_paths

    settings = load_settings()
    problems = validate_paths(list(paths) or [settings["MAPPINGS_DIR"]])
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo("mappings are valid")


@mappings.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--record",
    "record_id",
    metavar="DELIVERY_ID",
    help="First turn this stored delivery into a test case of its hook in the hook's *_test.yaml "
    "(its body in a fixture file, what is planned now as expect).",
)
@click.option("--name", help="The recorded case's name (default: the delivery and its day).")
def mappings_test(paths: tuple[str, ...], record_id: str | None, name: str | None) -> None:
    """Run the tests written in mapping files (and *_test.yaml beside them) without touching any
    backend; exit 1 on a failure or an invalid mapping."""
    from seqbridge.mapping.testing import run_tests

    settings = load_settings()
    if record_id:
        from seqbridge import cli_mappings

        cli_mappings.record(_services(), list(paths) or [settings["MAPPINGS_DIR"]], record_id, name)
    outcomes, problems = run_tests(list(paths) or [settings["MAPPINGS_DIR"]])
    for problem in problems:
        click.echo(str(problem))
    for outcome in outcomes:
        if outcome.passed:
            click.echo(f"PASS {outcome.hook}: {outcome.name}")
        else:
            click.echo(f"FAIL {outcome.file}:{outcome.line}: {outcome.hook}: {outcome.name}")
            for failure in outcome.failures:
                click.echo("  " + failure.replace("\n", "\n  "))
    failed = sum(1 for o in outcomes if not o.passed)
    click.echo(
        f"{len(outcomes) - failed} passed, {failed} failed, {len(problems)} problem(s)",
        err=bool(failed or problems),
    )
    if failed or problems:
        sys.exit(1)


@mappings.command("diff")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--hook", help="Only this hook.")
@click.option(
    "--since",
    default="7d",
    show_default=True,
    type=OlderThan(),
    help="Deliveries received since: 30d, 12h, 90m, 2w, or a date such as 2026-01-01 (UTC).",
)
@click.option(
    "--limit",
    default=100_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="At most this many deliveries per hook, the newest.",
)
@click.option("--before-rev", metavar="REV", help="Compare against the files at this git revision.")
@click.option("--before-dir", metavar="DIR", help="Compare against the mapping files of this directory.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (the API's shape).")
@click.option("--fail-on-change", is_flag=True, help="Exit 1 when anything differs (for CI).")
def mappings_diff(paths: tuple[str, ...], **options) -> None:
    """What the mapping files on disk (default: the mappings directory) would have done to the
    deliveries stored in the window, against the running version (the one the server last
    loaded) or --before-rev / --before-dir. Plans both; executes nothing, writes nothing.
    Exit 1 for an invalid mapping (its problems as validate prints them) or, with
    --fail-on-change, any change; 2 when there is nothing to compare against."""
    from seqbridge import cli_mappings

    settings = load_settings()
    cli_mappings.diff(_services(), list(paths) or [settings["MAPPINGS_DIR"]], **options)


# Processes ----------------------------------------------------------------------------------


@main.command()
def worker() -> None:
    """Run the background worker alone (any number may run against PostgreSQL)."""
    from seqbridge.storage.wakeup import Listener
    from seqbridge.worker import Worker
    from seqbridge.worker.deliveries import DeliveryProcessor
    from seqbridge.worker.maintenance import Statistics
    from seqbridge.worker.notifications import HookNotifier
    from seqbridge.worker.processor import StepProcessor
    from seqbridge.worker.replay_jobs import ReplayJobRunner

    services = _services()
    poll = services.settings["PROCESSOR_POLL_SECONDS"]
    runner = Worker(jobs=[], poll_interval=poll, clock=services.clock, wakeup=Listener(services.db))
    try:
        processor = StepProcessor(services, stopping=runner.stopping)
    except ValueError as error:  # e.g. a malformed SEQBRIDGE_SMTP_URL
        raise click.ClickException(str(error)) from None
    # Webhook deliveries first: they are what a sender is waiting on (a STOP must land in a second).
    stopping = runner.stopping
    runner.jobs.extend(
        [
            DeliveryProcessor(services, stopping=stopping),
            processor,
            HookNotifier(services, stopping=stopping),
            ReplayJobRunner(services, stopping=stopping),  # replay by filter (console, API)
            Statistics(services.db),
        ]
    )
    runner.on_reload.append(lambda: services.inbox.registry.reload())
    services.mapping_versions.watch(services.inbox.registry)  # what `mappings diff` compares against
    runner.install_signal_handlers()
    try:
        runner.run()
    finally:
        processor.stopped(runner.id)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    "web_workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Gunicorn worker processes.",
)
@click.option(
    "--no-worker", is_flag=True, help="Do not start the background worker alongside the web server."
)
def serve(host: str, port: int, web_workers: int, no_worker: bool) -> None:
    """Serve the API under gunicorn, with the background worker beside it.

    This process supervises both: SIGTERM or Ctrl-C stops both gracefully, SIGHUP is passed on,
    and a worker that dies is restarted.
    """
    services = _services()
    # One metrics directory for gunicorn's workers and the background worker: /metrics adds them up.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(var_dir(services.settings) / "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters start at zero with the server
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the children inherit it
    gunicorn_cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:seqbridge.gunicorn_conf",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(web_workers),
        "seqbridge:create_app()",
    ]
    worker_cmd = [sys.executable, "-m", "seqbridge", "worker"]
    sys.exit(_supervise(gunicorn_cmd, None if no_worker else worker_cmd))


def _ensure_schema(services: Services) -> None:
    from seqbridge.storage.migrate import current_revision, head_revision, upgrade

    try:
        if current_revision(services.db) == head_revision():
            return
    except SeqbridgeError as error:
        raise click.ClickException(error.message) from None
    except Exception as error:  # the driver's own connection errors
        raise click.ClickException(f"cannot reach the database: {error}") from None
    if services.db.is_sqlite:
        upgrade(services.db)  # the embedded default just works
        return
    raise click.ClickException("the database schema is not current: run `seqbridge init` first")


def _supervise(web_cmd: list[str], worker_cmd: list[str] | None) -> int:
    stopping = False
    web = subprocess.Popen(web_cmd)
    background = subprocess.Popen(worker_cmd) if worker_cmd else None

    def forward(signum, _frame):
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM
        for child in (web, background):
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)

    while True:
        code = web.poll()
        if code is not None:
            stopping = True
            if background is not None and background.poll() is None:
                background.terminate()
                try:
                    background.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    background.kill()
            return code
        if background is not None and background.poll() is not None and not stopping:
            click.echo(f"seqbridge: worker exited with {background.returncode}; restarting", err=True)
            time.sleep(1)
            background = subprocess.Popen(worker_cmd)
        time.sleep(0.2)


if __name__ == "__main__":
    main()


def _add_commands() -> None:
    """The commands that live in seqbridge/commands/ (one module each)."""
    from seqbridge.commands.db import db
    from seqbridge.commands.demo import demo

    main.add_command(db)
    main.add_command(demo)


_add_commands()
