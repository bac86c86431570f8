"""A model change without downtime: a shadow version of txt, filled, then switched to.

Revision ID: a004
Revises: a003
"""

from __future__ import annotations

from alembic import op

revision = "a004"
down_revision = "a003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_space("products", "txt", "mmr-test", "caption", new_version=True, model_id="v2")
    # force: switch before the worker has filled it (a real migration would switch in a
    # later revision, once `mmr status` shows the shadow version filled)
    op.switch_space("products", "txt", force=True)


def downgrade() -> None:
    op.switch_space("products", "txt", 1, force=True)
    op.drop_space("products", "txt", 2)
