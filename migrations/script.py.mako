"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from alembic import op

from pg_mmretrieval._migrations.helpers import run_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(op.get_bind(), "incremental/NNN-name.sql")


def downgrade() -> None:
    raise NotImplementedError("the mmr schema is not downgraded; restore a backup instead")
