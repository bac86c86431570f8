"""Helpers for mmr schema revisions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
import sqlalchemy as sa
from alembic import context, op


def run_sql(bind: sa.Connection | None, relative: str) -> None:
    """Run ``sql/<relative>`` on the revision's connection (as one script, no parameters).

    In Alembic's offline mode (``mmr db upgrade --sql``) the file is written to the script
    instead, templated with the schema given as ``vector_schema`` in the config's attributes.
    """
    path = Path(str(resources.files("pg_mmretrieval._sql"))) / relative
    text = path.read_text(encoding="utf-8")
    from pg_mmretrieval.install import render_sql, render_text

    if context.is_offline_mode():
        schema = context.config.attributes.get("vector_schema", "public")
        op.get_context().impl.static_output(f"-- sql/{relative}\n" + render_text(text, schema))
        return
    assert bind is not None
    raw = bind.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    raw.execute(render_sql(raw, text).encode())
