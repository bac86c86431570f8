"""Nearest-neighbour constructs that compose with ``select()``.

:func:`nearest` returns an ordinary ``Select`` of ``(entity, score)`` ordered by distance with
a ``LIMIT``: add your own ``where()``, joins, ``offset()`` and options, then run it with a
sync or async session.  The statement joins the entity to the collection's view and orders
by ``<embedding> <op> :query LIMIT k``, the one shape pgvector's HNSW index serves; iterative
index scans (set by an execution option) keep returning rows under selective filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal,
    literal_column,
    null,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import Label

from ..client._query import ImageInput, QueryVector
from ..errors import InputError
from ..spec import SpaceSpec
from .collection import collection_of
from .hnsw import OPTION, hnsw_options

__all__ = ["distance", "embed", "nearest", "ranked", "score", "search"]


def embed(
    entity: type[Any],
    space: str,
    *,
    text: str | None = None,
    image: ImageInput | None = None,
) -> list[float]:
    """Encode a text or an image with the encoder a declared space uses.

    Raises:
        InputError: not exactly one of text/image, or an external space.
        NotFoundError: the encoder is not registered in this process.
    """
    from ..client._query import encode_query
    from ..client._types import SpaceInfo

    spec = collection_of(entity).space(space)
    info = SpaceInfo(
        collection=collection_of(entity).name,
        name=spec.name,
        version=0,
        active=True,
        encoder=spec.encoder,
        source_column=spec.source_column,
        modality="external" if spec.encoder == "external" else "",
        dimensions=spec.dimensions or 0,
        distance=spec.distance,
        storage=spec.storage,
        model_id=spec.model_id,
        embedding_schema="",
        embedding_table="",
    )
    return [float(x) for x in encode_query(info, None, text, image)]


def _query_vector(
    entity: type[Any],
    space: str,
    vector: QueryVector | None,
    text: str | None,
    image: ImageInput | None,
) -> list[float]:
    if sum(x is not None for x in (vector, text, image)) != 1:
        raise InputError("pass exactly one of a query vector, text= or image=")
    if vector is not None:
        arr = np.asarray(vector, dtype=np.float32)
        if arr.ndim != 1:
            raise InputError(f"the query vector must be one-dimensional, not shape {arr.shape}")
        return [float(x) for x in arr]
    return embed(entity, space, text=text, image=image)


def _column(entity: type[Any], space: str) -> tuple[SpaceSpec, Any, type[Any]]:
    coll = collection_of(entity)
    spec = coll.space(space)
    emb = coll.embeddings_class
    if emb is None:
        raise InputError(f"{entity.__name__} is not mapped yet")
    return spec, emb.__table__.c[space], emb


def distance(
    entity: type[Any],
    space: str,
    vector: QueryVector | None = None,
    *,
    text: str | None = None,
    image: ImageInput | None = None,
) -> ColumnElement[float]:
    """The distance expression (``<=>``, ``<->`` or ``<#>`` per the space) between the
    space's embedding (a column of ``entity``'s embeddings class) and a query."""
    spec, col, _ = _column(entity, space)
    q = _query_vector(entity, space, vector, text, image)
    if spec.distance == "cosine":
        expr = col.cosine_distance(q)
    elif spec.distance == "l2":
        expr = col.l2_distance(q)
    else:
        expr = col.max_inner_product(q)
    return expr  # type: ignore[no-any-return]


def score(dist: ColumnElement[float], metric: str) -> ColumnElement[float]:
    """Higher-is-better score of a distance, as ``mmr.search`` reports it."""
    if metric == "cosine":
        return (literal(1.0, Float) - dist).cast(Float)
    return (-dist).cast(Float)


def nearest(
    entity: type[Any],
    space: str,
    vector: QueryVector | None = None,
    *,
    text: str | None = None,
    image: ImageInput | None = None,
    k: int = 10,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
    score_label: str = "score",
) -> Select[tuple[Any, float]]:
    """``SELECT entity, score ... ORDER BY distance LIMIT k`` for a query vector/text/image.

    Args:
        entity: a mapped class declaring a :class:`~pg_mmretrieval.sqlalchemy.Collection`.
        space: one of its declared spaces.
        vector: the query vector; or ``text=``/``image=`` (bytes or a path) to encode with the
            space's encoder.
        k: the ``LIMIT`` (change it, or add ``offset()``, on the returned statement).
        ef_search, max_scan_tuples: HNSW scan settings for this statement.

    Example::

        stmt = nearest(Product, "clip_text", text="red circle", k=5).where(Product.price < 50)
        for product, score in session.execute(stmt):
            ...
    """
    if k < 1:
        raise InputError(f"k must be positive, not {k}")
    coll = collection_of(entity)
    table = coll._table()
    spec, col, emb = _column(entity, space)
    dist = distance(entity, space, vector, text=text, image=image)
    label: Label[float] = score(dist, spec.distance).label(score_label)
    view = emb.__table__
    on = and_(*(table.c[c.name] == view.c[c.name] for c in table.primary_key))
    stmt: Select[tuple[Any, float]] = (
        select(entity, label)
        .join(emb, on)
        # NOT NULL turns the view's LEFT JOIN to the embedding table into an inner join,
        # which lets the planner drive the query from the HNSW index.
        .where(col.is_not(None))
        .order_by(dist)
        .limit(k)
        .execution_options(
            **{OPTION: hnsw_options(ef_search=ef_search, max_scan_tuples=max_scan_tuples)}
        )
    )
    return stmt


def ranked(
    entity: type[Any], results: Any, *, score_label: str = "score"
) -> Select[tuple[Any, float]]:
    """Join the rows of a ranking SQL function (columns ``key jsonb, score float8``, like
    ``mmr.search``) to ``entity``: ``SELECT entity, score ... ORDER BY score DESC``.

    Any search the SQL API offers as such a function composes this way, e.g.::

        hits = func.mmr.search("products", "clip", Vector(q), 10).table_valued("key", "score")
        stmt = ranked(Product, hits).where(Product.in_stock)

    The function ranks and limits by itself (its own ``filter`` argument applies before its
    ``k``); a ``where()`` added here filters its top k afterwards.
    """
    table = collection_of(entity)._table()
    pk = list(table.primary_key)
    key = results.c.key
    if len(pk) == 1:
        text_key = key.op("#>>")(literal_column("'{}'::text[]"))
        conds = [table.c[pk[0].name] == cast(text_key, pk[0].type)]
    else:
        conds = [
            table.c[c.name] == cast(func.jsonb_extract_path_text(key, c.name), c.type) for c in pk
        ]
    label: Label[float] = results.c.score.cast(Float).label(score_label)
    return select(entity, label).join(results, and_(*conds)).order_by(label.desc())


def search(
    entity: type[Any],
    space: str,
    vector: QueryVector | None = None,
    *,
    text: str | None = None,
    image: ImageInput | None = None,
    k: int = 10,
    filter: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    max_scan_tuples: int | None = None,
) -> Select[tuple[Any, float]]:
    """``mmr.search(...)`` (the SQL API's search, with its jsonb ``filter``) as a
    :func:`ranked` statement over ``entity``; see :func:`nearest` for the composable form."""
    coll = collection_of(entity)
    coll.space(space)  # a declared space (clear error otherwise)
    q = _query_vector(entity, space, vector, text, image)
    vtype = VECTOR(len(q))
    fn = func.mmr.search(
        coll.name,
        space,
        bindparam(None, q, type_=vtype),
        k,
        bindparam(None, dict(filter), type_=JSONB) if filter is not None else null(),
        ef_search,
        max_scan_tuples,
    ).table_valued(column("key", JSONB), column("score", Float))
    return ranked(entity, fn)
