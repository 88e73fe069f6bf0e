"""Creating and upgrading the schema: ``seqbridge init``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from seqbridge.storage.db import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema up to ``revision``, then refresh the planner's statistics if a migration
    ran (new indexes are only chosen well once the planner knows the tables). Idempotent: an
    up-to-date database is left as it is."""
    config = alembic_config()
    with db.engine.connect() as conn:
        if db.is_postgresql:
            # Two `seqbridge init` at once must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_lock(7355608)")
        try:
            before = MigrationContext.configure(conn).get_current_revision()
            conn.commit()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
            if MigrationContext.configure(conn).get_current_revision() != before:
                db.analyze(conn)
        finally:
            if db.is_postgresql:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(7355608)")
                conn.commit()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
