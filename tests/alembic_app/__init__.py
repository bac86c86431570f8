"""A sample application with its own Alembic environment that uses pg_mmretrieval's ops."""
