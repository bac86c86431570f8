"""Base schema: catalog of collections and spaces, queue, embedding tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(op.get_bind(), "incremental/001-base.sql")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
