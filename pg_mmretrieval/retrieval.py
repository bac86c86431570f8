"""Retrieval beyond plain vector search, from Python: thin typed wrappers over the SQL API.

Composed queries (``mmr.composed_search``), hybrid lexical + vector search
(``mmr.hybrid_search``), score fusion (``mmr.fuse``), Rocchio feedback, MMR diversification,
dialog queries, multi-vector MaxSim, BASIC projections, and rerankers (SQL ones by name, or
Python callables applied here to the same candidate lists).  See docs/retrieval.md.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.types.json import Jsonb

from .collections import sql_errors
from .errors import InputError, MMRError
from .search import Hit

__all__ = [
    "COMPOSED_METHODS",
    "ContentScorer",
    "QueryInfo",
    "Reranker",
    "SearchStatement",
    "add_multivector_space",
    "basic_projection",
    "composed_search",
    "composed_statement",
    "create_text_index",
    "dialog_search",
    "drop_text_index",
    "explain_composed",
    "explain_hybrid",
    "fuse",
    "hybrid_search",
    "hybrid_statement",
    "mmr_search",
    "multivector_search",
    "plugin_reranker",
    "put_multivectors",
    "register_python_reranker",
    "register_reranker",
    "rocchio_search",
    "search",
    "search_statement",
    "store_basic_projection",
]

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


# ---------------------------------------------------------------------------------------------
# Rerankers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryInfo:
    """What a Python reranker learns about the query."""

    collection: str
    space: str
    method: str
    vector: np.ndarray[Any, Any] | None = None
    text: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    item: str | bytes | None = None


class Reranker(Protocol):
    """A client-side reranker: takes the query and the candidates (best first), returns them
    in a new order (it may drop candidates or change scores)."""

    def __call__(self, query: QueryInfo, candidates: list[Hit]) -> list[Hit]: ...


_PY_RERANKERS: dict[str, Reranker] = {}


def register_python_reranker(name: str, fn: Reranker) -> None:
    """Register a client-side reranker under ``name``.

    Plugins do this through their ``register_rerankers`` hook."""
    _PY_RERANKERS[name] = fn


def _python_reranker(name: str) -> Reranker | ContentScorer | None:
    """A registered Python reranker, or a plugin's (``pg_mmretrieval.rerankers``), not adapted."""
    if name in _PY_RERANKERS:
        return _PY_RERANKERS[name]
    try:
        registry: Any = importlib.import_module("pg_mmretrieval.rerankers")
    except ImportError:
        return None
    try:
        plugin: ContentScorer = registry.get_reranker(name)
    except MMRError:
        return None
    return plugin


class ContentScorer(Protocol):
    """A plugin reranker: scores candidate contents (text or image bytes) against the query."""

    name: str

    def score(self, query: Any, candidates: Sequence[Any]) -> list[float]: ...


_CONTENT_COLUMN_SQL = (
    "SELECT c.image_column, c.image_kind, c.text_columns, s.source_column "
    "FROM mmr._collection c LEFT JOIN mmr._space s ON s.collection_id = c.id "
    "AND s.name = %s AND s.active WHERE c.name = %s"
)
_ROW_CONTENTS_SQL = "SELECT key, content, content_bytes FROM mmr.row_contents(%s, %s::jsonb[], %s)"


def _content_column_of(
    row: Sequence[Any] | None, collection: str, column: str | None
) -> tuple[str, str]:
    """(column, image_kind or '') of the content to hand to a content reranker, from the row
    of ``_CONTENT_COLUMN_SQL``."""
    if row is None:
        raise InputError(f"collection {collection!r} does not exist")
    image_col, kind, text_cols, source_col = row
    col = column or source_col or image_col or (text_cols[0] if text_cols else None)
    if col is None:
        raise InputError(
            f"collection {collection!r} has no content column to rerank on: pass "
            'rerank_params={"content_column": ...}'
        )
    return str(col), (str(kind) if col == image_col and kind else "")


def _content_column(conn: Conn, collection: str, space: str, column: str | None) -> tuple[str, str]:
    """(column, image_kind or '') of the content to hand to a content reranker."""
    row = conn.execute(_CONTENT_COLUMN_SQL, (space, collection)).fetchone()
    return _content_column_of(row, collection, column)


def _content_query(reranker: ContentScorer, query: QueryInfo) -> Any:
    """The query item a content reranker scores against (``query_item``, else the text)."""
    item = query.item if query.item is not None else query.text
    if item is None:
        raise InputError(
            f"reranker {reranker.name!r} scores content: give the query's text or image "
            "(query_item=...)"
        )
    return item


def _row_contents_args(query: QueryInfo, candidates: Sequence[Hit], column: str) -> tuple[Any, ...]:
    return (query.collection, [Jsonb(h.key) for h in candidates], column)


def _score_contents(
    reranker: ContentScorer,
    item: Any,
    candidates: Sequence[Hit],
    rows: Sequence[Sequence[Any]],
    kind: str,
) -> list[Hit]:
    """Score the candidates' contents (rows of ``_ROW_CONTENTS_SQL``) and sort by the scores;
    candidates without a visible row are left out."""
    found = {json.dumps(r[0], sort_keys=True): (r[2] if r[2] is not None else r[1]) for r in rows}
    kept = [h for h in candidates if json.dumps(h.key, sort_keys=True) in found]
    contents: list[Any] = []
    for h in kept:
        c = found[json.dumps(h.key, sort_keys=True)]
        contents.append(Path(c).read_bytes() if kind == "path" and isinstance(c, str) else c)
    scores = reranker.score(item, contents)
    if len(scores) != len(kept):
        raise InputError(
            f"reranker {reranker.name!r} returned {len(scores)} scores for {len(kept)} candidates"
        )
    return sorted(
        (Hit(h.key, float(s)) for h, s in zip(kept, scores, strict=True)),
        key=lambda h: -h.score,
    )


def plugin_reranker(conn: Conn, reranker: ContentScorer) -> Reranker:
    """Adapt a content-scoring reranker (plugins' ``register_rerankers``) to :class:`Reranker`.

    The candidates' content is read with ``mmr.row_contents`` (caller's rights); the query is
    ``QueryInfo.item`` (text or image bytes), else ``QueryInfo.text``."""

    def apply(query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
        item = _content_query(reranker, query)
        if not candidates:
            return []
        col, kind = _content_column(
            conn, query.collection, query.space, query.params.get("content_column")
        )
        with sql_errors():
            rows = conn.execute(
                _ROW_CONTENTS_SQL, _row_contents_args(query, candidates, col)
            ).fetchall()
        return _score_contents(reranker, item, candidates, rows, kind)

    return apply


_RERANKER_EXISTS_SQL = "SELECT 1 FROM mmr._reranker WHERE name = %s"


def _sql_reranker_exists(conn: Conn, name: str) -> bool:
    row = conn.execute(_RERANKER_EXISTS_SQL, (name,)).fetchone()
    return row is not None


def register_reranker(conn: Conn, name: str, function: str, description: str | None = None) -> None:
    """Register a SQL reranker: ``function`` is a regprocedure, e.g.
    ``'myschema.my_rerank(text,text,vector,jsonb[],float8[],jsonb)'``."""
    with sql_errors(), conn.transaction():
        conn.execute(
            "SELECT mmr.register_reranker(%s, %s::regprocedure, %s)", (name, function, description)
        )


RerankArg = str | Reranker | None


def _resolve_rerank(
    rerank: RerankArg, sql_registered: bool
) -> tuple[str | None, Reranker | None, ContentScorer | None]:
    """What a rerank argument names: (SQL reranker, Python callable, content-scoring plugin),
    at most one of them.  ``sql_registered``: whether ``rerank`` is a name in ``mmr.rerankers``
    (the caller looks it up with ``_RERANKER_EXISTS_SQL`` on its connection).

    Raises:
        InputError: a name that is neither a SQL, a Python nor a plugin reranker.
    """
    if rerank is None:
        return None, None, None
    if callable(rerank):
        return None, rerank, None
    if sql_registered:
        return rerank, None, None
    fn = _python_reranker(rerank)
    if fn is None:
        raise InputError(
            f"no reranker named {rerank!r}: neither registered in SQL (mmr.rerankers) nor by a "
            "plugin (register_rerankers)"
        )
    if callable(fn):
        return None, fn, None
    return None, None, fn


def _split_rerank(conn: Conn, rerank: RerankArg) -> tuple[str | None, Reranker | None]:
    """(SQL reranker name, Python reranker) for a rerank argument."""
    registered = False
    if isinstance(rerank, str):
        with sql_errors():
            registered = _sql_reranker_exists(conn, rerank)
    sql_name, fn, plugin = _resolve_rerank(rerank, registered)
    if plugin is not None:
        fn = plugin_reranker(conn, plugin)
    return sql_name, fn


def _rerank_depth(k: int, depth: int | None) -> int:
    return depth if depth is not None else min(1000, max(k, 100))


def _hits(rows: Sequence[Sequence[Any]]) -> list[Hit]:
    return [Hit(key=r[0], score=float(r[1])) for r in rows]


@dataclass(frozen=True)
class SearchStatement:
    """One search, built once and run by a sync or an async connection.

    ``sql`` and ``args`` are the statement without its reranker arguments (:meth:`bind` adds
    them), ``info`` the query as a Python reranker sees it.  The sync functions of this module
    and the async client (:class:`pg_mmretrieval.AsyncCollection`) run the same statements.
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

    def hits(self, rows: Sequence[Sequence[Any]], reranker: Reranker | None = None) -> list[Hit]:
        """The result rows as hits, reranked by a Python reranker when one is given."""
        hits = _hits(rows)
        return hits if reranker is None else self.top(reranker(self.info, hits))


def _run(conn: Conn, stmt: SearchStatement, rerank: RerankArg) -> list[Hit]:
    """Run a search statement; apply a SQL reranker server-side, a Python one here."""
    sql_name, py_fn = _split_rerank(conn, rerank)
    with sql_errors():
        rows = conn.execute(*stmt.query(sql_name, py_fn is not None)).fetchall()
    return stmt.hits(rows, py_fn)


# ---------------------------------------------------------------------------------------------
# Composed queries
# ---------------------------------------------------------------------------------------------


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
        "f": Jsonb(dict(filter)) if filter is not None else None,
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
    return _run(conn, stmt, rerank)


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
                Jsonb(dict(filter)) if filter is not None else None,
                analyze,
            ),
        ).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------------
# BASIC projection (FUSION.md §1.4)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Hybrid search and fusion
# ---------------------------------------------------------------------------------------------

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
        "f": Jsonb(dict(filter)) if filter is not None else None,
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
    return _run(conn, stmt, rerank)


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
                Jsonb(dict(filter)) if filter is not None else None,
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


# ---------------------------------------------------------------------------------------------
# Feedback, diversification, dialog, multi-vector, plain search with reranking
# ---------------------------------------------------------------------------------------------


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
        "f": Jsonb(dict(filter)) if filter is not None else None,
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
    """``mmr.search`` with a reranker (SQL by name, or a Python callable / plugin name).

    ``query_item``: the query's text or image bytes, for rerankers that score content."""
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
    return _run(conn, stmt, rerank)


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
                Jsonb(dict(filter)) if filter is not None else None,
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
    """MMR-diversified search (``mmr.mmr_search``)."""
    with sql_errors():
        rows = conn.execute(
            "SELECT key, score FROM mmr.mmr_search(%s, %s, %s::vector, %s, %s, %s, %s)",
            (
                collection,
                space,
                _vec(query),
                k,
                lambda_,
                candidates,
                Jsonb(dict(filter)) if filter is not None else None,
            ),
        ).fetchall()
    return _hits(rows)


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
                Jsonb(dict(filter)) if filter is not None else None,
            ),
        ).fetchall()
    return _hits(rows)


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
                Jsonb(dict(filter)) if filter is not None else None,
            ),
        ).fetchall()
    return _hits(rows)
