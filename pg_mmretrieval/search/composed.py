"""Composed queries (``mmr.composed_search``): a reference image modified by a text, fused by a
method; and BASIC's contrastive projection (the ``basic`` method's stored projection).

:data:`COMPOSED_METHODS` is the one Python list of the methods (the CLI's ``--method`` uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from ..bases import Hit, QueryInfo
from ..collections import sql_errors
from ..errors import InputError
from .rerank import RerankArg
from .statements import Conn, SearchStatement, VectorLike, _filter, _params, _vec, run

__all__ = [
    "COMPOSED_METHODS",
    "basic_projection",
    "composed_search",
    "composed_statement",
    "explain_composed",
    "store_basic_projection",
]

#: the composed-search methods (docs/retrieval.md describes each and its params)
COMPOSED_METHODS = (
    "image_only",
    "text_only",
    "weighted",
    "slerp",
    "score_sum",
    "product",
    "weimocir",
    "pdv",
    "basic",
    "gqr",
)

_COMPOSED_SQL_VEC = (
    "SELECT key, score FROM mmr.composed_search(%(c)s, %(s)s, %(r)s::vector, %(m)s::vector, "
    "%(meth)s, %(k)s, %(p)s, %(f)s, %(ef)s, %(mst)s, %(rr)s, %(rd)s, %(rp)s)"
)
_COMPOSED_SQL_KEY = _COMPOSED_SQL_VEC.replace("%(r)s::vector", "%(r)s::jsonb")
_COMPOSED_SHORT_VEC = (
    "SELECT key, score FROM mmr.composed_search(%(c)s, %(s)s, %(r)s::vector, %(m)s::vector, "
    "%(meth)s, %(k)s, %(p)s)"
)
_COMPOSED_SHORT_KEY = _COMPOSED_SHORT_VEC.replace("%(r)s::vector", "%(r)s::jsonb")


def composed_statement(
    collection: str,
    space: str,
    reference: VectorLike | None,
    modifier: VectorLike | None,
    *,
    reference_key: Any = None,
    method: str = "weighted",
    k: int = 10,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    query_item: str | bytes | None = None,
) -> SearchStatement:
    """The statement :func:`composed_search` runs (arguments as there)."""
    if method not in COMPOSED_METHODS:
        raise InputError(f"unknown method {method!r}; methods: {', '.join(COMPOSED_METHODS)}")
    if (reference is None) == (reference_key is None):
        raise InputError("give exactly one of reference (a vector) or reference_key")
    mod = _vec(modifier) if modifier is not None else None
    args: dict[str, Any] = {
        "c": collection,
        "s": space,
        "r": _vec(reference) if reference is not None else Jsonb(reference_key),
        "m": mod,
        "meth": method,
        "k": k,
        "p": _params(params),
        "f": _filter(filter),
        "ef": ef_search,
        "mst": max_scan_tuples,
    }
    sql = _COMPOSED_SQL_VEC if reference is not None else _COMPOSED_SQL_KEY
    info = QueryInfo(
        collection,
        space,
        method,
        None if mod is None else mod.to_numpy(),
        text=query_item if isinstance(query_item, str) else None,
        params={**dict(params or {}), **dict(rerank_params or {})},
        item=query_item,
    )
    return SearchStatement(
        sql,
        args,
        info,
        k,
        rerank_depth,
        rerank_params,
        short_sql=_COMPOSED_SHORT_VEC if reference is not None else _COMPOSED_SHORT_KEY,
        short_args=("c", "s", "r", "m", "meth", "k", "p"),
    )


def composed_search(
    conn: Conn,
    collection: str,
    space: str,
    reference: VectorLike | None,
    modifier: VectorLike | None,
    *,
    reference_key: Any = None,
    method: str = "weighted",
    k: int = 10,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank: RerankArg = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    query_item: str | bytes | None = None,
) -> list[Hit]:
    """Composed-query search (``mmr.composed_search``): a reference image (vector, or a stored
    row by ``reference_key``) modified by a text embedding, fused by ``method``.

    Methods and their ``params`` are listed in docs/retrieval.md (e.g. ``weighted`` with
    ``alpha``, ``weimocir`` with ``alpha``, ``beta``, ``caption_spaces``; ``basic`` with a stored
    projection).  A stored reference is excluded from the results unless
    ``params={"exclude_reference": False}``.
    """
    stmt = composed_statement(
        collection,
        space,
        reference,
        modifier,
        reference_key=reference_key,
        method=method,
        k=k,
        params=params,
        filter=filter,
        ef_search=ef_search,
        max_scan_tuples=max_scan_tuples,
        rerank_depth=rerank_depth,
        rerank_params=rerank_params,
        query_item=query_item,
    )
    return run(conn, stmt, rerank)


def explain_composed(
    conn: Conn,
    collection: str,
    space: str,
    reference: VectorLike,
    modifier: VectorLike,
    *,
    method: str = "weighted",
    k: int = 10,
    params: Mapping[str, Any] | None = None,
    filter: Mapping[str, Any] | None = None,
    analyze: bool = False,
) -> Any:
    """The JSON plan of the statement a composed search runs."""
    with sql_errors():
        row = conn.execute(
            "SELECT mmr.explain_composed(%s, %s, %s::vector, %s::vector, %s, %s, %s, %s, %s)",
            (
                collection,
                space,
                _vec(reference),
                _vec(modifier),
                method,
                k,
                _params(params),
                _filter(filter),
                analyze,
            ),
        ).fetchone()
    return row[0] if row else None


# -- BASIC projection (its stored basis is what the basic method projects with) ---------------


def basic_projection(
    positives: np.ndarray[Any, Any],
    negatives: np.ndarray[Any, Any],
    *,
    a: float = 0.2,
    k: int = 250,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """BASIC's contrastive projection from positive (subject) and negative (style) text
    embeddings.  Returns (basis U as rows, k' x d; mu_text), with P = Uᵀ... = U.T @ U.

    Embeddings are L2-normalised, centred by the positive mean; ``S_a = AᵀA/(|A|−1)``,
    ``S_b = BᵀB/(|B|−1)``, ``C = (1−a)S_a − a·S_b + 1e−5``; the top min(k, #λ>0)
    eigenvectors of C span the projection.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise InputError("positives and negatives must be 2-d arrays with the same width")
    if len(pos) < 2 or len(neg) < 2:
        raise InputError("need at least 2 positive and 2 negative embeddings")
    pos = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    neg = neg / np.linalg.norm(neg, axis=1, keepdims=True)
    mu_t = pos.mean(axis=0)
    a_c, b_c = pos - mu_t, neg - mu_t
    s_a = a_c.T @ a_c / (len(a_c) - 1)
    s_b = b_c.T @ b_c / (len(b_c) - 1)
    c = (1 - a) * s_a - a * s_b + 1e-5
    lam, vecs = np.linalg.eigh(c)
    order = np.argsort(lam)[::-1]
    keep = min(k, int(np.sum(lam > 0)))
    if keep == 0:
        raise InputError("the contrast matrix has no positive eigenvalue: check the corpora")
    basis = vecs[:, order[:keep]].T
    return basis, mu_t


def store_basic_projection(
    conn: Conn,
    collection: str,
    space: str,
    basis: np.ndarray[Any, Any],
    mu_text: VectorLike,
    *,
    mu_image: VectorLike | None = None,
    s_v_min: float | None = None,
    s_t_min: float | None = None,
    name: str = "basic",
) -> None:
    """Store a projection (``mmr.set_projection``); ``mu_image=None`` uses the space's mean."""
    with sql_errors(), conn.transaction():
        conn.execute(
            "SELECT mmr.set_projection(%s, %s, %b::vector[], %s::vector, %s::vector, %s, %s, %s)",
            (
                collection,
                space,
                [_vec(b) for b in np.asarray(basis)],
                _vec(mu_text),
                None if mu_image is None else _vec(mu_image),
                s_v_min,
                s_t_min,
                name,
            ),
        )
