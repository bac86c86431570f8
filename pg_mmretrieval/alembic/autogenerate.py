"""Keep Alembic's autogenerate away from what pg_mmretrieval manages.

In the application's ``env.py``::

    from pg_mmretrieval.alembic import include_name, include_object

    context.configure(connection=connection, target_metadata=Base.metadata,
                      include_name=include_name, include_object=include_object)

Without them, ``alembic revision --autogenerate`` with ``include_schemas=True`` proposes to
drop the mmr schema's tables (catalog, queues, embedding tables), and a view mapped in the
application's metadata would be proposed as a table.  Compose with your own filter through
:func:`combine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["SCHEMA", "combine", "include_name", "include_object"]

SCHEMA = "mmr"

IncludeName = Callable[[str | None, str, Mapping[str, str | None]], bool]
IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic ``include_name`` hook: skip schema ``mmr`` and everything in it."""
    if type_ == "schema":
        return name != SCHEMA
    return parent_names.get("schema_name") != SCHEMA


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook: skip mmr's objects and the collection views."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    if table is not None:
        if getattr(table, "schema", None) == SCHEMA:
            return False
        if table.info.get("mmr_view"):
            return False
        managed = table.metadata.info.get("mmr_managed_views", set())
        if (table.schema, table.name) in managed:
            return False
    return True


def combine(
    mine: IncludeObject | None = None, theirs: IncludeObject = include_object
) -> IncludeObject:
    """An ``include_object`` hook that keeps an object only if both hooks keep it."""

    def hook(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if not theirs(obj, name, type_, reflected, compare_to):
            return False
        return mine is None or mine(obj, name, type_, reflected, compare_to)

    return hook
