"""The sample application's Alembic environment (no alembic.ini: see tests/test_alembic_ops.py)."""

from __future__ import annotations

from alembic import context

import pg_mmretrieval.alembic as mmr_alembic
from tests.alembic_app.models import Base

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_schemas=True,
    include_name=mmr_alembic.include_name,
    include_object=mmr_alembic.include_object,
)
with context.begin_transaction():
    context.run_migrations()
