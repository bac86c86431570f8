"""Helpers for mmr schema revisions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
import sqlalchemy as sa


def run_sql(bind: sa.Connection, relative: str) -> None:
    """Run ``sql/<relative>`` on the revision's connection (as one script, no parameters)."""
    path = Path(str(resources.files("pg_mmretrieval._sql"))) / relative
    raw = bind.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    from pg_mmretrieval.install import render_sql

    raw.execute(render_sql(raw, path.read_text(encoding="utf-8")).encode())
