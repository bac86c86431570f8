"""Alembic environment for the mmr schema; its version table lives in schema ``mmr``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pg_mmretrieval import db


def _run(connection: sa.Connection) -> None:
    connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS mmr")
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema="mmr",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = db.resolve_url(context.config.get_main_option("sqlalchemy.url"))
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


def run_migrations_offline() -> None:
    """Write the SQL instead of running it (``mmr db upgrade --sql``, pg_mmretrieval.upgrade_sql,
    which wraps it in one transaction with the server checks and the idempotent files)."""
    context.configure(
        dialect_name="postgresql",
        version_table="alembic_version",
        version_table_schema="mmr",
        transactional_ddl=False,
        literal_binds=True,
    )
    context.get_context().impl.static_output("CREATE SCHEMA IF NOT EXISTS mmr;")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
