"""Install pg_mmretrieval's schema from the application's own migrations.

Revision ID: a001
Revises:
"""

from __future__ import annotations

from alembic import op

import pg_mmretrieval.alembic  # noqa: F401  (registers op.install_mmr and friends)

revision = "a001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.install_mmr(revision="head")


def downgrade() -> None:
    # The mmr schema is shared state: a downgrade leaves it (`mmr db uninstall` removes it).
    pass
