"""Alembic environment: run migrations on the connection that :mod:`seqbridge.storage.migrate` passes."""

from __future__ import annotations

from alembic import context

from seqbridge.storage.schema import metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `seqbridge init`, which supplies the connection")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
