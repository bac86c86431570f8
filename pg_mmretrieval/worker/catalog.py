"""What a worker serves: collections, their spaces, and the SQL identifiers they need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["CatalogCollection", "CatalogSpace", "load_catalog", "vector_schema"]


@dataclass(frozen=True)
class CatalogSpace:
    """One space (any version) filled by an encoder."""

    id: int
    name: str
    version: int
    active: bool
    encoder: str
    source_column: str
    modality: str
    dimensions: int
    storage: str
    embedding_table: str  # regclass text, already quoted and qualified

    @property
    def table(self) -> sql.Composable:
        return sql.SQL(self.embedding_table)

    @property
    def vector_type(self) -> sql.Composable:
        return sql.SQL("{}.{}({})").format(
            sql.Identifier(_VECTOR_SCHEMA[0]),
            # 'bit' spaces store full-precision vectors (only their index is binary)
            sql.SQL("vector" if self.storage == "bit" else self.storage),
            sql.Literal(self.dimensions),
        )


_VECTOR_SCHEMA = ["public"]


def vector_schema() -> str:
    """The schema of pgvector's types (read with the catalog)."""
    return _VECTOR_SCHEMA[0]


@dataclass(frozen=True)
class CatalogCollection:
    """A collection with the spaces a worker can fill."""

    id: int
    name: str
    source: str  # regclass text
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]
    image_kind: str | None
    queue_table: str  # regclass text
    spaces: tuple[CatalogSpace, ...]
    citus: bool = False  # the source is a Citus table (worker/citus_queue.py)

    @property
    def src(self) -> sql.Composable:
        return sql.SQL(self.source)

    @property
    def queue(self) -> sql.Composable:
        return sql.SQL(self.queue_table)

    def keys(self, alias: str) -> sql.Composable:
        """``alias.k1, alias.k2``."""
        return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.key_columns)

    def key_join(self, left: str, right: str) -> sql.Composable:
        """``left.k1 = right.k1 AND ...`` (pg_catalog's operator, never one on the path)."""
        return sql.SQL(" AND ").join(
            sql.SQL("{} OPERATOR(pg_catalog.=) {}").format(
                sql.Identifier(left, k), sql.Identifier(right, k)
            )
            for k in self.key_columns
        )

    def key_cols(self) -> sql.Composable:
        """``"k1", "k2"``."""
        return sql.SQL(", ").join(sql.Identifier(k) for k in self.key_columns)

    def text_arrays(self) -> sql.Composable:
        """``%s::text[], ...``: one parameter per key column (keys travel as text)."""
        return sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in self.key_columns)

    def typed(self, alias: str) -> sql.Composable:
        """``u.k1::type1, ...`` for text-typed key columns of ``alias``.

        ``key_types`` are base types (a domain resolved to the type under it, see
        :func:`load_catalog`): a cast to a domain would run its CHECK, user code, as the worker.
        """
        return sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Identifier(alias, k), sql.SQL(t))
            for k, t in zip(self.key_columns, self.key_types, strict=True)
        )

    def typed_join(self, table_alias: str, text_alias: str) -> sql.Composable:
        """``t.k1 = u.k1::type AND ...`` where ``u`` holds keys as text.

        The source's column may be a domain: it is compared as its base type, with the built-in
        operator (``OPERATOR(pg_catalog.=)``), so no operator of the application is chosen.
        """
        return sql.SQL(" AND ").join(
            sql.SQL("{} OPERATOR(pg_catalog.=) {}::{}").format(
                sql.Identifier(table_alias, k), sql.Identifier(text_alias, k), sql.SQL(t)
            )
            for k, t in zip(self.key_columns, self.key_types, strict=True)
        )

    def key_json(self, text_alias: str) -> sql.Composable:
        """The key as jsonb (as mmr._key_json builds it) from text-typed columns."""
        typed = [
            sql.SQL("{}::{}").format(sql.Identifier(text_alias, k), sql.SQL(t))
            for k, t in zip(self.key_columns, self.key_types, strict=True)
        ]
        if len(typed) == 1:
            return sql.SQL("pg_catalog.to_jsonb({})").format(typed[0])
        pairs = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), t)
            for k, t in zip(self.key_columns, typed, strict=True)
        )
        return sql.SQL("pg_catalog.jsonb_build_object({})").format(pairs)


def load_catalog(conn: psycopg.Connection[Any], names: list[str] | None) -> list[CatalogCollection]:
    """Collections (all, or those named) with their encoder-filled spaces."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    if row:
        _VECTOR_SCHEMA[0] = str(row[0])
    # Key types resolved to their base types here too (catalogs written before revision 0004
    # may still name a domain): the worker never casts to a domain.
    cols = conn.execute(
        "SELECT c.id, c.name, c.source::text, c.key_columns::text[], "
        "       ARRAY(SELECT (WITH RECURSIVE d(oid, under) AS ( "
        "                       SELECT y.oid, y.typbasetype FROM pg_catalog.pg_type y "
        "                        WHERE y.oid = u.t "
        "                       UNION ALL SELECT y.oid, y.typbasetype FROM d "
        "                         JOIN pg_catalog.pg_type y ON y.oid = d.under "
        "                        WHERE d.under <> 0) "
        "                     SELECT d.oid::regtype::text FROM d WHERE d.under = 0) "
        "               FROM unnest(c.key_types) WITH ORDINALITY AS u(t, i) ORDER BY u.i), "
        "       c.image_kind, c.queue_table::text, "
        "       mmr._citus_kind(c.source) IS NOT NULL FROM mmr._collection c "
        "WHERE (%(names)s::text[] IS NULL OR c.name = ANY (%(names)s)) ORDER BY c.id",
        {"names": names},
    ).fetchall()
    spaces = conn.execute(
        "SELECT id, collection_id, name, version, active, encoder, source_column::text, modality, "
        "dimensions, storage, embedding_table::text FROM mmr._space "
        "WHERE modality <> 'external' ORDER BY id"
    ).fetchall()
    out = []
    for cid, name, source, keys, types, image_kind, queue, on_citus in cols:
        mine = tuple(
            CatalogSpace(s[0], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10])
            for s in spaces
            if s[1] == cid
        )
        out.append(
            CatalogCollection(
                cid, name, source, tuple(keys), tuple(types), image_kind, queue, mine, on_citus
            )
        )
    return out
