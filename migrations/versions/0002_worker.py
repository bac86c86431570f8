"""Worker state: dead letters, heartbeats, throughput, and the queue's lease columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op
from pg_mmretrieval._migrations.helpers import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(op.get_bind(), "incremental/002-worker.sql")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; use `mmr db uninstall`")
