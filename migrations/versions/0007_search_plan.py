"""The search planner's plan types (issue 14, item 1): ``mmr._search_plan`` (created by the
idempotent ``010-core.sql`` until now) and the named-field plan ``mmr._exec_plan``.

Runs every ``sql/incremental/007-*.sql`` file in name order (one file per area).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    incremental = Path(str(resources.files("pg_mmretrieval._sql"))) / "incremental"
    for path in sorted(incremental.glob("007-*.sql")):
        run_sql(op.get_bind(), f"incremental/{path.name}")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
