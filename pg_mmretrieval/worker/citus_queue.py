"""The worker's statements that differ on Citus (a collection whose source is a Citus table).

Citus runs ``FOR UPDATE``/``FOR SHARE`` only in a query that touches one shard (a "router"
query: equality on the distribution column), so on Citus:

* **claim**: the due entries are chosen without a lock, and the leasing ``UPDATE`` re-checks
  that each entry is still unleased; under READ COMMITTED a concurrent claim of the same entry
  waits for the first one and then finds it leased, so each entry is claimed once (no
  ``SKIP LOCKED``: a contended entry is waited for instead of skipped);
* **write**: each source row is locked ``FOR SHARE SKIP LOCKED`` by its own router query, so an
  application's ``UPDATE`` of it waits for the write (whose trigger then queues the row again),
  exactly as on one node.

docs/operations.md, "Citus".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from .catalog import CatalogCollection
    from .claiming import ClaimedItem

__all__ = ["lock_rows"]


def lock_rows(
    conn: psycopg.Connection[Any], coll: CatalogCollection, column: str, items: list[ClaimedItem]
) -> dict[int, bytes | None]:
    """``{index in items: content hash}`` of the source rows locked (skipped: locked by another
    transaction, or gone); one router query per row, in key order."""
    where = sql.SQL(" AND ").join(
        sql.SQL("{} OPERATOR(pg_catalog.=) %s::{}").format(sql.Identifier("s", k), sql.SQL(t))
        for k, t in zip(coll.key_columns, coll.key_types, strict=True)
    )
    stmt = sql.SQL(
        "SELECT mmr.content_hash({col}) FROM {src} s WHERE {where} FOR SHARE OF s SKIP LOCKED"
    ).format(col=sql.Identifier("s", column), src=coll.src, where=where)
    locked: dict[int, bytes | None] = {}
    for i in sorted(range(len(items)), key=lambda i: items[i].keys):
        row = conn.execute(stmt, list(items[i].keys)).fetchone()
        if row is not None:
            locked[i] = row[0]
    return locked
