"""``op.install_mmr()``: install or upgrade the mmr schema from an application's migration.

It runs pg_mmretrieval's own Alembic environment on the migration's connection, inside the
migration's transaction: if the application's migration fails, the mmr install rolls back
with it.  The mmr schema keeps its own version table (``mmr.alembic_version``), so the two
histories never mix.  Pin ``revision`` to the mmr revision your migration was written
against, so that re-running old migrations later installs what they expect.
"""

from __future__ import annotations

from typing import Any

from alembic import context as alembic_context
from alembic import op as alembic_op
from alembic.operations import MigrateOperation, Operations

from .. import install
from ..errors import InputError

__all__ = ["InstallMMROp"]


@Operations.register_operation("install_mmr")
class InstallMMROp(MigrateOperation):
    """Install or upgrade the mmr schema to ``revision`` on the migration's connection."""

    def __init__(self, revision: str = "head") -> None:
        self.revision = revision

    @classmethod
    def install_mmr(cls, operations: Operations, revision: str = "head") -> None:
        """Install/upgrade the mmr schema (``mmr db upgrade``) inside this migration.

        Downgrade: nothing (the mmr schema is shared state; remove it with
        ``mmr db uninstall``), so ``downgrade()`` may simply omit it.
        """
        operations.invoke(cls(revision))

    def reverse(self) -> MigrateOperation:
        raise InputError(
            "install_mmr has no reverse: the mmr schema is not downgraded (leave it out of "
            "downgrade(), or run `mmr db uninstall`)"
        )


@Operations.implementation_for(InstallMMROp)
def _install_mmr(operations: Operations, operation: InstallMMROp) -> None:
    if operations.migration_context.as_sql:
        raise InputError(
            "install_mmr cannot run in offline (--sql) mode: run it online, or install the "
            "schema with `mmr db upgrade` (or apply the script `mmr db upgrade --sql` writes) "
            "before applying the generated SQL"
        )
    # Running the mmr environment replaces Alembic's module-level `op` and `context` proxies
    # and removes them when it ends; put the application's back afterwards.
    saved: list[Any] = [
        getattr(alembic_op, "_proxy", None),
        getattr(alembic_context, "_proxy", None),
    ]
    try:
        install.upgrade(revision=operation.revision, connection=operations.get_bind())
    finally:
        for proxy in saved:
            if proxy is not None:
                proxy._install_proxy()
