"""Multi-vector spaces (several vectors per row) and their MaxSim search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from ..bases import Hit
from ..collections import sql_errors
from .statements import Conn, VectorLike, _filter, _hits, _vec

__all__ = ["add_multivector_space", "multivector_search", "put_multivectors"]


def add_multivector_space(
    conn: Conn,
    collection: str,
    space: str,
    dimensions: int,
    *,
    distance: str = "cosine",
    storage: str = "vector",
) -> str:
    """Create a multi-vector space (several vectors per row); return its table."""
    with sql_errors(), conn.transaction():
        row = conn.execute(
            "SELECT mmr.add_multivector_space(%s, %s, %s, %s, %s)::text",
            (collection, space, dimensions, distance, storage),
        ).fetchone()
    return str(row[0]) if row else ""


def put_multivectors(
    conn: Conn,
    collection: str,
    space: str,
    key: Any,
    vectors: Sequence[VectorLike] | np.ndarray[Any, Any],
) -> int:
    """Replace the vectors of one row."""
    with sql_errors(), conn.transaction():
        row = conn.execute(
            "SELECT mmr.put_multivectors(%s, %s, %s, %b::vector[])",
            (collection, space, Jsonb(key), [_vec(v) for v in vectors]),
        ).fetchone()
    return int(row[0]) if row else 0


def multivector_search(
    conn: Conn,
    collection: str,
    space: str,
    queries: Sequence[VectorLike] | np.ndarray[Any, Any],
    k: int = 10,
    *,
    candidates: int | None = None,
    filter: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """MaxSim search over a multi-vector space: Σ_q max_part sim(q, part)."""
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.multivector_search(%s, %s, %b::vector[], %s, %s, %s)",
            (
                collection,
                space,
                [_vec(q) for q in queries],
                k,
                Jsonb({} if candidates is None else {"candidates": candidates}),
                _filter(filter),
            ),
        ).fetchall()
    return _hits(rows)
