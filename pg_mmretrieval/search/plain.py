"""Plain vector search from Python: ``mmr.search``, ``mmr.search_batch``, ``explain_search``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.types.json import Jsonb

from ..bases import Hit
from ..collections import sql_errors
from .statements import run, search_statement

__all__ = ["Hit", "batch_hits", "explain_search", "search", "search_batch"]


def _vector(query: Sequence[float] | np.ndarray[Any, Any]) -> Vector:
    return Vector(np.asarray(query, dtype=np.float32))


def search(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    query: Sequence[float] | np.ndarray[Any, Any],
    k: int = 10,
    *,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
) -> list[Hit]:
    """The ``k`` rows nearest to ``query`` in a space (``mmr.search``), best first.

    The statement of :func:`pg_mmretrieval.search.reranked_search` without a reranker: one
    Python path for every plain search (the async client sends the same statement).

    Args:
        filter: conditions on the source table's columns, e.g. ``{"price": {"<": 50}}``.
        ef_search: HNSW candidate list size (default 40, at least k).
        max_scan_tuples: bound on tuples an iterative scan visits under a filter.
    """
    stmt = search_statement(
        collection,
        space,
        query,
        k,
        filter=filter,
        ef_search=ef_search,
        max_scan_tuples=max_scan_tuples,
    )
    return run(conn, stmt, None)


#: the statement of :func:`search_batch` (``mmr.search_batch``)
SEARCH_BATCH_SQL = (
    "SELECT query_index, key, score FROM mmr.search_batch(%(c)s, %(s)s, %(q)s::vector[], %(k)s, "
    "%(ef)s)"
)


def batch_params(
    collection: str,
    space: str,
    queries: Sequence[Sequence[float] | np.ndarray[Any, Any]],
    k: int,
    ef_search: int | None,
) -> dict[str, Any]:
    """The parameters of :data:`SEARCH_BATCH_SQL`."""
    return {
        "c": collection,
        "s": space,
        "q": [_vector(q) for q in queries],
        "k": k,
        "ef": ef_search,
    }


def batch_hits(n: int, rows: Sequence[Sequence[Any]]) -> list[list[Hit]]:
    """Rows (query_index, key, score) of ``mmr.search_batch`` as one list of hits per query."""
    out: list[list[Hit]] = [[] for _ in range(n)]
    for i, key, score in rows:
        out[int(i) - 1].append(Hit(key=key, score=float(score)))
    return out


def search_batch(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    queries: Sequence[Sequence[float] | np.ndarray[Any, Any]],
    k: int = 10,
    *,
    ef_search: int | None = None,
) -> list[list[Hit]]:
    """The ``k`` nearest rows of each query vector in one round trip (``mmr.search_batch``):
    one list of hits per query, in the order of ``queries``, each best first.

    Example::

        hits = search_batch(conn, "products", "image", [v1, v2, v3], k=5)
        hits[1][0].key  # the best row for v2
    """
    with sql_errors():
        rows = conn.execute(
            SEARCH_BATCH_SQL, batch_params(collection, space, queries, k, ef_search)
        ).fetchall()
    return batch_hits(len(queries), rows)


def explain_search(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    query: Sequence[float] | np.ndarray[Any, Any],
    k: int = 10,
    *,
    filter: Mapping[str, Any] | None = None,
    analyze: bool = False,
) -> Any:
    """The JSON plan of the statement ``mmr.search`` runs (see ``mmr.explain_search``)."""
    with sql_errors():
        row = conn.execute(
            "SELECT mmr.explain_search(%(c)s, %(s)s, %(q)s::vector, %(k)s, %(f)s, "
            "run_analyze => %(a)s)",
            {
                "c": collection,
                "s": space,
                "q": _vector(query),
                "k": k,
                "f": Jsonb(dict(filter)) if filter is not None else None,
                "a": analyze,
            },
        ).fetchone()
    return row[0] if row else None


def filter_advice(
    conn: psycopg.Connection[Any], collection: str, filter: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Per column of ``filter``: its index (or None), the plan the filter gets (``exact`` or
    ``index``), the estimated rows that pass, the threshold, and advice (a ``CREATE INDEX``)
    when the exact plan has to read the whole table (see ``mmr.filter_advice``).

    Example::

        mmr.filter_advice(conn, "products", {"category": 7})
    """
    with sql_errors():
        cur = conn.execute(
            "SELECT column_name, index_name::text, plan, estimated_rows, threshold, advice "
            "FROM mmr.filter_advice(%s, %s)",
            (collection, Jsonb(dict(filter))),
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
