"""Searches that refine a query: Rocchio relevance feedback, diversification by Maximal
Marginal Relevance, and dialog (multi-turn) queries."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from ..bases import Hit
from ..collections import sql_errors
from .statements import Conn, VectorLike, _filter, _hits, _params, _vec

__all__ = ["dialog_search", "diversify_search", "mmr_search", "rocchio_search"]


def rocchio_search(
    conn: Conn,
    collection: str,
    space: str,
    query: VectorLike,
    k: int = 10,
    *,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """Rocchio (pseudo-)relevance feedback (``mmr.rocchio_search``): params alpha, beta, gamma,
    fb_docs, relevant / nonrelevant (lists of keys)."""
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.rocchio_search(%s, %s, %s::vector, %s, %s, %s)",
            (
                collection,
                space,
                _vec(query),
                k,
                _params(params),
                _filter(filter),
            ),
        ).fetchall()
    return _hits(rows)


def diversify_search(
    conn: Conn,
    collection: str,
    space: str,
    query: VectorLike,
    k: int = 10,
    *,
    lambda_: float = 0.5,
    candidates: int = 50,
    filter: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """Search diversified by Maximal Marginal Relevance (Carbonell and Goldstein 1998): of
    ``candidates`` nearest rows, ``k`` picked greedily by ``lambda_`` x similarity to the query
    minus (1 - ``lambda_``) x the highest similarity to a row already picked."""
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.diversify_search(%s, %s, %s::vector, %s, %s, %s, %s)",
            (
                collection,
                space,
                _vec(query),
                k,
                lambda_,
                candidates,
                _filter(filter),
            ),
        ).fetchall()
    return _hits(rows)


def mmr_search(
    conn: Conn,
    collection: str,
    space: str,
    query: VectorLike,
    k: int = 10,
    *,
    lambda_: float = 0.5,
    candidates: int = 50,
    filter: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """Deprecated name of :func:`diversify_search` (``mmr`` is also the schema and the CLI)."""
    warnings.warn(
        "mmr_search is deprecated; use diversify_search (the same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return diversify_search(
        conn, collection, space, query, k, lambda_=lambda_, candidates=candidates, filter=filter
    )


def dialog_search(
    conn: Conn,
    collection: str,
    space: str,
    turns: Sequence[VectorLike],
    k: int = 10,
    *,
    weighting: str = "mean",
    decay: float = 0.5,
    filter: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """Multi-turn query from the turns' embeddings (``mmr.dialog_search``)."""
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.dialog_search(%s, %s, %b::vector[], %s, %s, %s)",
            (
                collection,
                space,
                [_vec(t) for t in turns],
                k,
                Jsonb({"weighting": weighting, "decay": decay}),
                _filter(filter),
            ),
        ).fetchall()
    return _hits(rows)
