"""Second wave: SQL-only queries, filtered plans, bulk loads, encoder catalog (issues 13, 16-18).

Runs every ``sql/incremental/005-*.sql`` file in name order (one file per area).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    incremental = Path(str(resources.files("pg_mmretrieval._sql"))) / "incremental"
    for path in sorted(incremental.glob("005-*.sql")):
        run_sql(op.get_bind(), f"incremental/{path.name}")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
