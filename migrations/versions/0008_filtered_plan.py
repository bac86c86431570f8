"""The filtered fast path of mmr.search (issue 18): the plan type ``mmr._exec_plan`` gains the
fields ``iterative`` (hnsw.iterative_scan for the call) and ``planning`` (how an executor plans
the statement: kept in the HNSW shape, or per call).

Runs every ``sql/incremental/008-*.sql`` file in name order (one file per area).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    incremental = Path(str(resources.files("pg_mmretrieval._sql"))) / "incremental"
    for path in sorted(incremental.glob("008-*.sql")):
        run_sql(op.get_bind(), f"incremental/{path.name}")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
