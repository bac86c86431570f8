"""Hybrid search: a lexical leg (full text over the collection's text columns) and vector legs,
fused (``mmr.hybrid_search``); fusion of ranked lists (``mmr.fuse``); the lexical GIN index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from ..bases import Hit, QueryInfo
from ..collections import sql_errors
from .rerank import RerankArg
from .statements import Conn, SearchStatement, VectorLike, _filter, _hits, _params, _vec, run

__all__ = [
    "create_text_index",
    "drop_text_index",
    "explain_hybrid",
    "fuse",
    "hybrid_search",
    "hybrid_statement",
]

_HYBRID_SQL = (
    "SELECT key, score FROM mmr.hybrid_search(%(c)s, %(qt)s, %(sp)s::text[], %(v)b::vector[], "
    "%(k)s, %(fu)s, %(w)s::float8[], %(p)s, %(f)s, %(ef)s, %(mst)s, %(rr)s, %(rd)s, %(rp)s)"
)


def hybrid_statement(
    collection: str,
    query_text: str | None,
    legs: Sequence[tuple[str, VectorLike]] = (),
    *,
    k: int = 10,
    fusion: str = "rrf",
    weights: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
) -> SearchStatement:
    """The statement :func:`hybrid_search` runs (arguments as there)."""
    info = QueryInfo(
        collection,
        legs[0][0] if legs else "",
        "hybrid",
        np.asarray(legs[0][1], dtype=np.float32) if legs else None,
        query_text,
        {**dict(params or {}), **dict(rerank_params or {})},
    )
    args = {
        "c": collection,
        "qt": query_text,
        "sp": [s for s, _ in legs],
        "v": [_vec(v) for _, v in legs],
        "k": k,
        "fu": fusion,
        "w": list(weights) if weights is not None else None,
        "p": _params(params),
        "f": _filter(filter),
        "ef": ef_search,
        "mst": max_scan_tuples,
    }
    return SearchStatement(_HYBRID_SQL, args, info, k, rerank_depth, rerank_params)


def hybrid_search(
    conn: Conn,
    collection: str,
    query_text: str | None,
    legs: Sequence[tuple[str, VectorLike]] = (),
    *,
    k: int = 10,
    fusion: str = "rrf",
    weights: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank: RerankArg = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """Lexical (full-text over the collection's text columns) + vector legs, fused.

    Args:
        query_text: the lexical leg's query (websearch syntax); None for vector legs only.
        legs: (space, query vector) pairs, e.g. a text→image leg and a text→caption leg, or an
            image leg for multimodal hybrid.
        fusion: ``rrf`` (params ``rrf_k``, default 60), ``combsum``, ``combmnz`` (params
            ``norm``: ``minmax`` or ``zscore``) or ``avgrank``.
        weights: one per leg, the lexical leg first when there is one.
    """
    stmt = hybrid_statement(
        collection,
        query_text,
        legs,
        k=k,
        fusion=fusion,
        weights=weights,
        params=params,
        filter=filter,
        ef_search=ef_search,
        max_scan_tuples=max_scan_tuples,
        rerank_depth=rerank_depth,
        rerank_params=rerank_params,
    )
    return run(conn, stmt, rerank)


def explain_hybrid(
    conn: Conn,
    collection: str,
    query_text: str | None,
    legs: Sequence[tuple[str, VectorLike]] = (),
    *,
    k: int = 10,
    fusion: str = "rrf",
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
) -> Any:
    """The JSON plan of the statement a hybrid search runs."""
    with sql_errors():
        row = conn.execute(
            "SELECT mmr.explain_hybrid(%s, %s, %s::text[], %b::vector[], %s, %s, NULL, %s, %s)",
            (
                collection,
                query_text,
                [s for s, _ in legs],
                [_vec(v) for _, v in legs],
                k,
                fusion,
                _params(params),
                _filter(filter),
            ),
        ).fetchone()
    return row[0] if row else None


def create_text_index(conn: Conn, collection: str, config: str = "english") -> str:
    """Create the GIN full-text index the lexical leg uses; return its name."""
    with sql_errors(), conn.transaction():
        row = conn.execute(
            "SELECT mmr.create_text_index(%s, %s::regconfig)::text", (collection, config)
        ).fetchone()
    return str(row[0]) if row else ""


def drop_text_index(conn: Conn, collection: str) -> None:
    """Drop the lexical GIN index of a collection (the lexical leg then scans the table)."""
    with sql_errors(), conn.transaction():
        conn.execute("SELECT mmr.drop_text_index(%s)", (collection,))


def fuse(
    conn: Conn,
    runs: Sequence[Sequence[Hit]] | Sequence[Sequence[tuple[Any, float]]],
    *,
    method: str = "rrf",
    weights: Sequence[float] | None = None,
    rrf_k: float = 60,
    norm: str = "minmax",
) -> list[Hit]:
    """Fuse ranked lists (best first) with ``mmr.fuse`` (the SQL hybrid search uses the same)."""
    data = [
        [
            {"key": h.key, "score": h.score} if isinstance(h, Hit) else {"key": h[0], "score": h[1]}
            for h in run
        ]
        for run in runs
    ]
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.fuse(%s, %s, %s::float8[], %s, %s)",
            (Jsonb(data), method, list(weights) if weights is not None else None, rrf_k, norm),
        ).fetchall()
    return _hits(rows)
