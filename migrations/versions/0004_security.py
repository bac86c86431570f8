"""Security hardening (issue 12): the worker's role, column privileges, schema-change guards.

Runs every ``sql/incremental/004-*.sql`` file in name order (one file per area).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    incremental = Path(str(resources.files("pg_mmretrieval._sql"))) / "incremental"
    for path in sorted(incremental.glob("004-*.sql")):
        run_sql(op.get_bind(), f"incremental/{path.name}")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
