"""Search statements: one search built once, run by a sync or an async connection.

A :class:`SearchStatement` is the SQL call of a search function (``mmr.search``,
``mmr.composed_search``, ``mmr.hybrid_search``) with its arguments and the query as a
reranker sees it; :func:`run` sends it and applies a Python reranker to what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.types.json import Jsonb

from ..bases import Hit, QueryInfo, RerankFunction
from ..collections import sql_errors
from ..errors import InputError
from .rerank import RerankArg, apply_reranker, split_rerank

__all__ = ["SearchStatement", "run", "search", "search_statement"]

Conn = psycopg.Connection[Any]
VectorLike = Sequence[float] | np.ndarray[Any, Any]


def _vec(x: VectorLike) -> Vector:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-d vector, got shape {arr.shape}")
    return Vector(arr)


def _jvec(x: VectorLike) -> list[float]:
    """A vector as a JSON array (for params)."""
    return [float(v) for v in np.asarray(x, dtype=np.float32)]


def _params(params: Mapping[str, Any] | None) -> Jsonb:
    out: dict[str, Any] = {}
    for k, v in (params or {}).items():
        out[k] = _jvec(v) if isinstance(v, np.ndarray) and v.ndim == 1 else v
        if isinstance(v, np.ndarray) and v.ndim == 2:
            out[k] = [_jvec(r) for r in v]
    return Jsonb(out)


def _filter(filter: Mapping[str, Any] | None) -> Jsonb | None:
    return Jsonb(dict(filter)) if filter is not None else None


def _rerank_depth(k: int, depth: int | None) -> int:
    return depth if depth is not None else min(1000, max(k, 100))


def _hits(rows: Sequence[Sequence[Any]]) -> list[Hit]:
    return [Hit(key=r[0], score=float(r[1])) for r in rows]


@dataclass(frozen=True)
class SearchStatement:
    """One search, built once and run by a sync or an async connection.

    ``sql`` and ``args`` are the statement without its reranker arguments (:meth:`bind` adds
    them), ``info`` the query as a Python reranker sees it.  The sync functions of this package
    and the async client (:class:`pg_mmretrieval.AsyncClient`) run the same statements.
    """

    sql: str
    args: Mapping[str, Any]
    info: QueryInfo
    k: int
    rerank_depth: int | None = None
    rerank_params: Mapping[str, Any] | None = None
    #: The same call with its optional arguments left out (defaults), and the arguments it
    #: binds: sent instead of ``sql`` when every other argument is unset and nothing reranks,
    #: so the plain search sends and binds 4 parameters instead of 10.
    short_sql: str | None = None
    short_args: tuple[str, ...] = ()

    def query(self, sql_reranker: str | None, client_side: bool) -> tuple[str, dict[str, Any]]:
        """The statement text and its arguments (see :meth:`bind`)."""
        if (
            self.short_sql is not None
            and sql_reranker is None
            and not client_side
            and self.rerank_depth is None
            and self.rerank_params is None
            and all(v is None for n, v in self.args.items() if n not in self.short_args)
        ):
            return self.short_sql, {n: self.args[n] for n in self.short_args}
        return self.sql, self.bind(sql_reranker, client_side)

    def bind(self, sql_reranker: str | None, client_side: bool) -> dict[str, Any]:
        """The statement's arguments for a SQL reranker (applied server-side) or a client-side
        one (``client_side``: fetch ``rerank_depth`` candidates for it)."""
        args = dict(self.args)
        args["rr"] = sql_reranker
        args["rd"] = self.rerank_depth
        args["rp"] = _params(self.rerank_params)
        if client_side:
            args["k"] = _rerank_depth(self.k, self.rerank_depth)
        return args

    def top(self, hits: Sequence[Hit]) -> list[Hit]:
        """The first k of a reranked list."""
        return list(hits)[: self.k]

    def hits(
        self, rows: Sequence[Sequence[Any]], reranker: RerankFunction | None = None
    ) -> list[Hit]:
        """The result rows as hits, reranked by a reranking function when one is given."""
        hits = _hits(rows)
        return hits if reranker is None else self.top(reranker(self.info, hits))


def run(conn: Conn, stmt: SearchStatement, rerank: RerankArg) -> list[Hit]:
    """Run a search statement; a SQL reranker applies in it, a Python one here."""
    sql_name, reranker = split_rerank(conn, rerank)
    with sql_errors():
        rows = conn.execute(*stmt.query(sql_name, reranker is not None)).fetchall()
    hits = stmt.hits(rows)
    return hits if reranker is None else stmt.top(apply_reranker(conn, reranker, stmt.info, hits))


_SEARCH_SQL = (
    "SELECT key, score FROM mmr.search(%(c)s, %(s)s, %(q)s::vector, %(k)s, %(f)s, %(ef)s, "
    "%(mst)s, %(rr)s, %(rd)s, %(rp)s)"
)
_SEARCH_SQL_SHORT = "SELECT key, score FROM mmr.search(%(c)s, %(s)s, %(q)s::vector, %(k)s)"


def search_statement(
    collection: str,
    space: str,
    query: VectorLike,
    k: int = 10,
    *,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    query_item: str | bytes | None = None,
) -> SearchStatement:
    """The statement :func:`search` runs (arguments as there)."""
    args = {
        "c": collection,
        "s": space,
        "q": _vec(query),
        "k": k,
        "f": _filter(filter),
        "ef": ef_search,
        "mst": max_scan_tuples,
    }
    info = QueryInfo(
        collection,
        space,
        "search",
        np.asarray(query, dtype=np.float32),
        text=query_item if isinstance(query_item, str) else None,
        params=dict(rerank_params or {}),
        item=query_item,
    )
    return SearchStatement(
        _SEARCH_SQL,
        args,
        info,
        k,
        rerank_depth,
        rerank_params,
        short_sql=_SEARCH_SQL_SHORT,
        short_args=("c", "s", "q", "k"),
    )


def search(
    conn: Conn,
    collection: str,
    space: str,
    query: VectorLike,
    k: int = 10,
    *,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    rerank: RerankArg = None,
    rerank_depth: int | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    query_item: str | bytes | None = None,
) -> list[Hit]:
    """``mmr.search`` with a reranker (``rerank=``: see :mod:`pg_mmretrieval.search.rerank`).

    ``query_item``: the query's text or image bytes, for rerankers that score content.
    (``pg_mmretrieval.retrieval.search`` and ``pg_mmretrieval.search.reranked_search``.)"""
    stmt = search_statement(
        collection,
        space,
        query,
        k,
        filter=filter,
        ef_search=ef_search,
        max_scan_tuples=max_scan_tuples,
        rerank_depth=rerank_depth,
        rerank_params=rerank_params,
        query_item=query_item,
    )
    return run(conn, stmt, rerank)
