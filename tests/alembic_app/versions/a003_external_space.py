"""An external space for vectors the application computes.

Revision ID: a003
Revises: a002
"""

from __future__ import annotations

from alembic import op

revision = "a003"
down_revision = "a002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_space("products", "ext", "external", dimensions=8)


def downgrade() -> None:
    op.drop_space("products", "ext")
