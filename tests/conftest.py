"""Fixtures: every storage-backed test runs on real SQLite and on a real PostgreSQL server that
this session starts itself. Each test gets a fresh database cloned from a migrated template."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_postgresql.janitor import DatabaseJanitor

from seqbridge import create_app
from seqbridge.clock import ManualClock
from seqbridge.services import Services
from seqbridge.storage.db import Database
from seqbridge.storage.migrate import upgrade
from tests import pg_server

# Commands the tests start read no developer's var/hooks.env (tests of the env file name theirs).
os.environ["SEQBRIDGE_ENV_FILE"] = ""

BACKENDS = [
    b.strip() for b in os.environ.get("SEQBRIDGE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()
]
PG_TEMPLATE = "seqbridge_template"
_counter = itertools.count()


def pytest_report_header(config):
    return f"seqbridge storage backends: {', '.join(BACKENDS)}"


def pytest_terminal_summary(terminalreporter):
    if "postgresql" not in BACKENDS:
        terminalreporter.write_line(
            "WARNING: PostgreSQL was excluded by SEQBRIDGE_TEST_BACKENDS; this is not a full run.", red=True
        )


# Servers and templates --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> Iterator[pg_server.PgServer]:
    """A real PostgreSQL server. If it cannot start, every PostgreSQL test errors (never skips)."""
    if os.environ.get("SEQBRIDGE_TEST_PG_URL"):
        yield pg_server.from_url(os.environ["SEQBRIDGE_TEST_PG_URL"])
        return
    # Not under pytest's tmp dir: as root that is 0700 and the postgres user could not enter it.
    base = Path(tempfile.mkdtemp(prefix="seqbridge-pg-"))
    server = pg_server.start(base)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_template(pg) -> Iterator[str]:
    """A migrated database that every PostgreSQL test clones."""
    janitor = DatabaseJanitor(
        user=pg.user, host=pg.host, port=pg.port, password=pg.password, dbname=PG_TEMPLATE, as_template=True
    )
    janitor.drop()
    janitor.init()
    db = Database(pg.url(PG_TEMPLATE))
    upgrade(db)
    db.dispose()
    yield PG_TEMPLATE
    janitor.drop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(request, backend, tmp_path) -> Iterator[str]:
    """A fresh, migrated database for this test, on the parametrised backend."""
    yield from fresh_database(request, backend, tmp_path)


@pytest.fixture
def postgresql_url(request) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, for tests that only make sense on it (many workers)."""
    yield from fresh_postgresql(request)


def fresh_database(request, backend: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh, migrated database on ``backend`` (a copy of the SQLite template in
    ``directory``, or a PostgreSQL clone dropped when this generator is closed). For fixtures of any
    scope; the function-scoped ones above use it."""
    if backend == "sqlite":
        path = directory / "seqbridge.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    yield from fresh_postgresql(request)


def fresh_postgresql(request) -> Iterator[str]:
    server = request.getfixturevalue("pg")
    template = request.getfixturevalue("pg_template")
    name = f"t{os.getpid()}_{next(_counter)}"
    janitor = DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        password=server.password,
        dbname=name,
        template_dbname=template,
    )
    janitor.init()
    try:
        yield server.url(name)
    finally:
        janitor.drop()


# The app --------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app_config(database_url, tmp_path, clock) -> dict[str, Any]:
    mappings = tmp_path / "mappings"
    mappings.mkdir(exist_ok=True)
    # Mapping files written during a test are seen at the next request (the server checks every 2 s).
    return {
        "DATABASE_URL": database_url,
        "MAPPINGS_DIR": str(mappings),
        "MAPPINGS_WATCH_SECONDS": 0.001,
        "CLOCK": clock,
        "TESTING": True,
    }


@pytest.fixture
def app(app_config) -> Iterator[Flask]:
    application = create_app(app_config)
    yield application
    application.extensions["seqbridge"].db.dispose()


@pytest.fixture
def services(app) -> Services:
    return app.extensions["seqbridge"]


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_key(services):
    """Factory: ``make_key(org="acme", scopes=("*",))`` returns a raw API key."""

    def _make(org: str = "acme", scopes: tuple[str, ...] | list[str] = ("*",), name: str = "test") -> str:
        return services.keys.create_key(org, list(scopes), name).raw_key

    return _make


class Api:
    """The test client with a bearer key: ``api.post(path, json=...)``."""

    def __init__(self, client: FlaskClient, key: str) -> None:
        self.client, self.key = client, key

    def with_key(self, key: str) -> Api:
        return Api(self.client, key)

    def _call(self, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self._call("GET", path, **kw)

    def post(self, path, **kw):
        return self._call("POST", path, **kw)

    def patch(self, path, **kw):
        return self._call("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self._call("DELETE", path, **kw)


@pytest.fixture
def api(client, make_key) -> Api:
    """An API client for organization ``acme`` with every scope."""
    return Api(client, make_key("acme", ["*"]))


@pytest.fixture
def other_api(client, make_key) -> Api:
    """An API client for a second organization, ``globex``, with every scope."""
    return Api(client, make_key("globex", ["*"]))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (``item.rep_call``), so a fixture can tell whether its
    test failed (the browser tests save a screenshot then)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
