"""Collections and spaces from Python: thin, typed wrappers over the SQL API."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import calls
from .db import translate_error
from .errors import InputError

__all__ = [
    "add_space",
    "create_collection",
    "drop_collection",
    "drop_space",
    "list_collections",
    "list_spaces",
    "put_embeddings",
    "stored_vectors",
    "switch_space",
]

Conn = psycopg.Connection[Any]


@contextmanager
def sql_errors() -> Iterator[None]:
    """Re-raise psycopg errors as pg_mmretrieval errors with PostgreSQL's message and hint."""
    try:
        yield
    except psycopg.Error as e:
        raise translate_error(e) from e


def _call(conn: Conn, sql: str, params: dict[str, Any]) -> Any:
    with sql_errors(), conn.transaction():
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def create_collection(
    conn: Conn,
    name: str,
    source: str,
    *,
    image_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    image_kind: str | None = None,
    view_name: str | None = None,
    create_view: bool = True,
) -> int:
    """Register table ``source`` as collection ``name``; return its id.

    Args:
        source: the table (``schema.table`` or a name on the search path); needs a primary key.
        image_column: bytea (image file bytes) or text (file path or URL) column.
        text_columns: text columns that spaces may embed.
        image_kind: ``bytea``, ``path``, ``url`` or ``auto`` (default from the column type).
        view_name: name of the view joining rows and embeddings (default ``<table>_mmr``).

    Raises:
        InputError: no primary key, unknown or unsupported column, duplicate name.
    """
    return int(
        _call(
            conn,
            calls.CREATE_COLLECTION.psycopg(),
            {
                "name": name,
                "source": source,
                "image_column": image_column,
                "text_columns": list(text_columns) if text_columns is not None else None,
                "image_kind": image_kind,
                "view_name": view_name,
                "create_view": create_view,
            },
        )
    )


def add_space(
    conn: Conn,
    collection: str,
    space: str,
    encoder: str,
    source_column: str | None,
    dimensions: int,
    *,
    distance: str = "cosine",
    storage: str = "vector",
    model_id: str | None = None,
    new_version: bool = False,
    backfill: bool = True,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 64,
) -> str:
    """Add a space (an encoder over one content column); return its embedding table's name."""
    return str(
        _call(
            conn,
            calls.ADD_SPACE.psycopg(),
            {
                "collection": collection,
                "space": space,
                "encoder": encoder,
                "source_column": source_column,
                "dimensions": dimensions,
                "distance": distance,
                "storage": storage,
                "model_id": model_id,
                "new_version": new_version,
                "backfill": backfill,
                "hnsw_m": hnsw_m,
                "hnsw_ef_construction": hnsw_ef_construction,
            },
        )
    )


def switch_space(
    conn: Conn, collection: str, space: str, version: int | None = None, *, force: bool = False
) -> None:
    """Make a shadow version of a space the active one, atomically."""
    _call(
        conn,
        calls.SWITCH_SPACE.psycopg(),
        {"collection": collection, "space": space, "version": version, "force": force},
    )


def drop_space(conn: Conn, collection: str, space: str, version: int | None = None) -> None:
    """Drop one version of a space, or all of them (version None)."""
    _call(
        conn,
        calls.DROP_SPACE.psycopg(),
        {"collection": collection, "space": space, "version": version},
    )


def drop_collection(conn: Conn, name: str) -> None:
    """Drop a collection: its triggers, queue, embedding tables and view (not the source table)."""
    _call(conn, calls.DROP_COLLECTION.psycopg(), {"name": name})


def list_collections(conn: Conn) -> list[dict[str, Any]]:
    """Rows of ``mmr.collections``."""
    with sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT collection, source::text AS source, key_columns::text[] AS key_columns, "
            "image_column::text AS image_column, image_kind, text_columns::text[] AS text_columns,"
            " view::text AS view, owner::text AS owner, created_at FROM mmr.collections "
            "ORDER BY collection"
        )
        return list(cur.fetchall())


def list_spaces(conn: Conn, collection: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``mmr.spaces`` (all collections, or one)."""
    with sql_errors(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT collection, space, version, active, encoder, source_column::text AS "
            "source_column, modality, dimensions, distance, storage, embedding_table::text AS "
            "embedding_table, model_id FROM mmr.spaces "
            "WHERE %(c)s::text IS NULL OR collection = %(c)s ORDER BY collection, space, version",
            {"c": collection},
        )
        return list(cur.fetchall())


def put_embeddings(
    conn: Conn,
    collection: str,
    space: str,
    keys: Sequence[Any],
    embeddings: Sequence[Sequence[float]] | Sequence[np.ndarray[Any, Any]] | np.ndarray[Any, Any],
) -> int:
    """Store vectors your application computed (spaces with encoder ``'external'``).

    Args:
        keys: primary-key values (a dict of column -> value for a composite key).
        embeddings: one vector per key.

    Returns:
        The number of rows written.
    """
    vectors = stored_vectors(keys, embeddings)
    return int(
        _call(
            conn,
            calls.PUT_EMBEDDINGS.psycopg(),
            put_embeddings_args(collection, space, keys, vectors),
        )
    )


def put_embeddings_args(
    collection: str, space: str, keys: Sequence[Any], vectors: Sequence[Vector]
) -> dict[str, Any]:
    """The arguments of :data:`pg_mmretrieval.calls.PUT_EMBEDDINGS`."""
    return {
        "collection": collection,
        "space": space,
        "keys": [Jsonb(k) for k in keys],
        "embeddings": vectors,
    }


def stored_vectors(
    keys: Sequence[Any], embeddings: Sequence[Any] | np.ndarray[Any, Any]
) -> list[Vector]:
    """The embeddings as float32 vectors to store, each checked before it is sent: finite (a
    value beyond float32's range becomes infinite) and not zero, in every space.

    Raises:
        InputError: naming the key of the first vector that is not.
    """
    out: list[Vector] = []
    for i, e in enumerate(embeddings):
        with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, refused below
            a = np.asarray(e, dtype=np.float32)
        what = f"the embedding of key {keys[i]!r}" if i < len(keys) else f"embedding {i + 1}"
        if a.ndim != 1 or a.size == 0:
            raise InputError(f"{what} must be a one-dimensional vector, not shape {a.shape}")
        if not np.isfinite(a).all():
            raise InputError(
                f"{what} is not finite (NaN or infinite elements): store only finite vectors"
            )
        if not a.any():
            raise InputError(
                f"{what} is a zero vector, which has no direction: store a non-zero one"
            )
        out.append(Vector(a))
    return out
