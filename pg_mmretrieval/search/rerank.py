"""Reranking a search's candidates: the one resolver of ``rerank=`` and how each kind applies.

A ``rerank=`` argument is one of:

* the name of a SQL reranker (``mmr.register_reranker``, listed in ``mmr.rerankers``): the
  database applies it inside the search statement;
* the name of a Python reranker (:func:`pg_mmretrieval.registry.register_reranker`, or a
  plugin's ``register_rerankers``): applied here to ``rerank_depth`` candidates;
* a :class:`~pg_mmretrieval.bases.Reranker` or a function ``(QueryInfo, hits) -> hits``.

:func:`resolve_rerank` decides which; the SQL registry stays on the SQL side.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..bases import FunctionReranker, Hit, QueryInfo, Reranker, RerankFunction
from ..collections import sql_errors
from ..errors import InputError, NotFoundError
from ..registry import get_reranker, register_reranker

__all__ = [
    "RERANKER_EXISTS_SQL",
    "ContentScorer",
    "RerankArg",
    "apply_reranker",
    "plugin_reranker",
    "register_python_reranker",
    "register_sql_reranker",
    "resolve_rerank",
    "split_rerank",
]

Conn = psycopg.Connection[Any]

#: what a search's ``rerank=`` takes (see the module's docstring)
RerankArg = str | Reranker | RerankFunction | None
#: the content-scoring rerankers' type: :class:`Reranker` (kept for compatibility)
ContentScorer = Reranker

#: whether a name is a SQL reranker (argument: the name)
RERANKER_EXISTS_SQL = "SELECT 1 FROM mmr._reranker WHERE name = %s"
CONTENT_COLUMN_SQL = (
    "SELECT c.image_column, c.image_kind, c.text_columns, s.source_column "
    "FROM mmr._collection c LEFT JOIN mmr._space s ON s.collection_id = c.id "
    "AND s.name = %s AND s.active WHERE c.name = %s"
)
ROW_CONTENTS_SQL = "SELECT key, content, content_bytes FROM mmr.row_contents(%s, %s::jsonb[], %s)"


def resolve_rerank(rerank: RerankArg, sql_registered: bool) -> tuple[str | None, Reranker | None]:
    """What a ``rerank=`` argument names: (a SQL reranker's name, a Python reranker), at most
    one of them.  ``sql_registered``: whether ``rerank`` is a SQL reranker's name (the caller
    asks its own connection with :data:`RERANKER_EXISTS_SQL`).

    Raises:
        InputError: a name that is neither a SQL nor a Python (or plugin) reranker.
    """
    if rerank is None:
        return None, None
    if isinstance(rerank, Reranker):
        return None, rerank
    if not isinstance(rerank, str):
        return None, FunctionReranker(rerank)
    if sql_registered:
        return rerank, None
    try:
        return None, get_reranker(rerank)
    except NotFoundError:
        raise InputError(
            f"no reranker named {rerank!r}: neither registered in SQL (mmr.rerankers) nor by a "
            "plugin (register_rerankers)"
        ) from None


def split_rerank(conn: Conn, rerank: RerankArg) -> tuple[str | None, Reranker | None]:
    """:func:`resolve_rerank` with the SQL registry looked up on ``conn``."""
    registered = False
    if isinstance(rerank, str):
        with sql_errors():
            registered = conn.execute(RERANKER_EXISTS_SQL, (rerank,)).fetchone() is not None
    return resolve_rerank(rerank, registered)


def apply_reranker(
    conn: Conn, reranker: Reranker, query: QueryInfo, candidates: list[Hit]
) -> list[Hit]:
    """Rerank the candidates (best first): a content reranker scores their contents, read on
    ``conn``; another reranker reorders them itself."""
    if reranker.scores_content:
        return plugin_reranker(conn, reranker)(query, candidates)
    return reranker.rerank(query, candidates)


# -- content rerankers: the candidates' contents, read with the caller's rights ---------------


def content_column_of(
    row: Sequence[Any] | None, collection: str, column: str | None
) -> tuple[str, str]:
    """(column, image_kind or '') of the content to hand to a content reranker, from the row
    of ``CONTENT_COLUMN_SQL``."""
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
    row = conn.execute(CONTENT_COLUMN_SQL, (space, collection)).fetchone()
    return content_column_of(row, collection, column)


def content_query(reranker: Reranker, query: QueryInfo) -> Any:
    """The query item a content reranker scores against (``query_item``, else the text)."""
    item = query.item if query.item is not None else query.text
    if item is None:
        raise InputError(
            f"reranker {reranker.name!r} scores content: give the query's text or image "
            "(query_item=...)"
        )
    return item


def row_contents_args(query: QueryInfo, candidates: Sequence[Hit], column: str) -> tuple[Any, ...]:
    return (query.collection, [Jsonb(h.key) for h in candidates], column)


def score_contents(
    reranker: Reranker,
    item: Any,
    candidates: Sequence[Hit],
    rows: Sequence[Sequence[Any]],
    kind: str,
) -> list[Hit]:
    """Score the candidates' contents (rows of ``ROW_CONTENTS_SQL``) and sort by the scores;
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


def plugin_reranker(conn: Conn, reranker: Reranker) -> RerankFunction:
    """A content reranker (``score(query_item, contents)``) as a function ``(QueryInfo, hits)
    -> hits`` on ``conn``.

    The candidates' content is read with ``mmr.row_contents`` (caller's rights); the query is
    ``QueryInfo.item`` (text or image bytes), else ``QueryInfo.text``."""

    def apply(query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
        item = content_query(reranker, query)
        if not candidates:
            return []
        col, kind = _content_column(
            conn, query.collection, query.space, query.params.get("content_column")
        )
        with sql_errors():
            rows = conn.execute(
                ROW_CONTENTS_SQL, row_contents_args(query, candidates, col)
            ).fetchall()
        return score_contents(reranker, item, candidates, rows, kind)

    return apply


# -- registration ------------------------------------------------------------------------------


def register_sql_reranker(
    conn: Conn, name: str, function: str, description: str | None = None
) -> None:
    """Register a SQL reranker (``mmr.register_reranker``): ``function`` is a regprocedure,
    e.g. ``'myschema.my_rerank(text,text,vector,jsonb[],float8[],jsonb)'``."""
    with sql_errors(), conn.transaction():
        conn.execute(
            "SELECT mmr.register_reranker(%s, %s::regprocedure, %s)", (name, function, description)
        )


def register_python_reranker(name: str, fn: RerankFunction) -> None:
    """Deprecated: ``registry.register_reranker(FunctionReranker(fn, name))``."""
    warnings.warn(
        "register_python_reranker(name, fn) is deprecated; use "
        "pg_mmretrieval.rerankers.register_reranker(FunctionReranker(fn, name))",
        DeprecationWarning,
        stacklevel=2,
    )
    register_reranker(FunctionReranker(fn, name))
