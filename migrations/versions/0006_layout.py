"""The redesign and scale-out (issues 14, 15): tables and types that idempotent files held.

Runs every ``sql/incremental/006-*.sql`` file in name order (one file per area).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    incremental = Path(str(resources.files("pg_mmretrieval._sql"))) / "incremental"
    for path in sorted(incremental.glob("006-*.sql")):
        run_sql(op.get_bind(), f"incremental/{path.name}")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
