"""Alembic environment of the mmr schema (shipped as ``pg_mmretrieval._migrations``)."""
