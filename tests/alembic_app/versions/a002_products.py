"""Products, registered as a collection with a text space.

Revision ID: a002
Revises: a001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pg_mmretrieval.alembic import SpaceSpec

revision = "a002"
down_revision = "a001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("caption", sa.String, nullable=True),
        sa.Column("image", sa.LargeBinary, nullable=True),
    )
    op.create_collection(
        "products",
        "products",
        image_column="image",
        text_columns=["caption"],
        spaces=[SpaceSpec("txt", "mmr-test", "caption")],
    )


def downgrade() -> None:
    op.drop_collection("products")
    op.drop_table("products")
