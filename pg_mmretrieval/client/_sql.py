"""Statements the sync and async clients share: built once, run by either connection type.

Identifiers come from the catalog and go through ``psycopg.sql.Identifier``; values are
always parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ..errors import InputError
from ._types import CollectionInfo, SpaceInfo

__all__ = [
    "ACTIVE_SPACE",
    "COLLECTIONS",
    "COLUMN_TYPES",
    "HAS_FAILED_TABLE",
    "SPACES",
    "collection_info",
    "fetch_statement",
    "hashable_key",
    "insert_statement",
    "key_of_row",
    "pending_statement",
    "space_info",
    "status_statement",
]

# One row per collection with everything a client needs to build statements.
COLLECTIONS = """
SELECT c.name, c.source::text, sn.nspname::text, sc.relname::text,
       c.key_columns::text[], c.key_types::text[], c.image_column::text, c.image_kind,
       c.text_columns::text[],
       CASE WHEN c.view_name IS NULL THEN NULL
            ELSE format('%%I.%%I', c.view_schema, c.view_name) END,
       qn.nspname::text, qc.relname::text
  FROM mmr._collection c
  JOIN pg_catalog.pg_class sc ON sc.oid = c.source
  JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
  JOIN pg_catalog.pg_class qc ON qc.oid = c.queue_table
  JOIN pg_catalog.pg_namespace qn ON qn.oid = qc.relnamespace
 WHERE %(name)s::text IS NULL OR c.name = %(name)s
 ORDER BY c.name
"""

SPACES = """
SELECT c.name, s.name, s.version, s.active, s.encoder, s.source_column::text, s.modality,
       s.dimensions, s.distance, s.storage, s.model_id, en.nspname::text, ec.relname::text
  FROM mmr._space s
  JOIN mmr._collection c ON c.id = s.collection_id
  JOIN pg_catalog.pg_class ec ON ec.oid = s.embedding_table
  JOIN pg_catalog.pg_namespace en ON en.oid = ec.relnamespace
 WHERE (%(collection)s::text IS NULL OR c.name = %(collection)s)
 ORDER BY c.name, s.name, s.version
"""

# The active version of one space, and its id (what a search's guard checks).
ACTIVE_SPACE = """
SELECT c.name, s.name, s.version, s.active, s.encoder, s.source_column::text, s.modality,
       s.dimensions, s.distance, s.storage, s.model_id, en.nspname::text, ec.relname::text, s.id
  FROM mmr._space s
  JOIN mmr._collection c ON c.id = s.collection_id
  JOIN pg_catalog.pg_class ec ON ec.oid = s.embedding_table
  JOIN pg_catalog.pg_namespace en ON en.oid = ec.relnamespace
 WHERE c.name = %(collection)s AND s.name = %(space)s AND s.active
"""

# Column name -> SQL type of a table (for inserts).
COLUMN_TYPES = """
SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = %(rel)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


def collection_info(row: Sequence[Any]) -> CollectionInfo:
    return CollectionInfo(
        name=row[0],
        source=row[1],
        source_schema=row[2],
        source_table=row[3],
        key_columns=tuple(row[4]),
        key_types=tuple(row[5]),
        image_column=row[6],
        image_kind=row[7],
        text_columns=tuple(row[8] or ()),
        view=row[9],
        queue_schema=row[10],
        queue_table=row[11],
    )


def space_info(row: Sequence[Any]) -> SpaceInfo:
    return SpaceInfo(*row)


def insert_statement(
    info: CollectionInfo,
    column_types: Mapping[str, str],
    rows: Sequence[Mapping[str, Any]],
) -> tuple[sql.Composed, list[Any]]:
    """``INSERT INTO source (cols) VALUES (...), ... RETURNING key`` for rows of equal shape.

    One statement per batch: the collection's statement-level trigger queues the whole batch
    and wakes workers once.

    Raises:
        InputError: rows name different columns, or a column the table lacks.
    """
    columns = list(rows[0])
    if not columns:
        raise InputError("rows must name at least one column")
    wanted = set(columns)
    for i, row in enumerate(rows):
        if set(row) != wanted:
            raise InputError(
                f"row {i} has columns {sorted(row)}, but row 0 has {sorted(wanted)}: "
                "insert rows of one shape per call"
            )
    unknown = [c for c in columns if c not in column_types]
    if unknown:
        raise InputError(
            f"table {info.source} has no column(s) {unknown}; its columns: {sorted(column_types)}"
        )
    json_cols = {c for c in columns if column_types[c] in ("json", "jsonb")}
    params: list[Any] = []
    for row in rows:
        for c in columns:
            v = row[c]
            params.append(Jsonb(v) if c in json_cols and v is not None else v)
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES {} RETURNING {}").format(
        sql.Identifier(info.source_schema, info.source_table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join([one] * len(rows)),
        sql.SQL(", ").join(map(sql.Identifier, info.key_columns)),
    )
    return stmt, params


def _key_arrays(info: CollectionInfo, keys: Sequence[Any]) -> list[list[Any]]:
    if len(info.key_columns) == 1:
        return [list(keys)]
    arrays: list[list[Any]] = [[] for _ in info.key_columns]
    for k in keys:
        if not isinstance(k, Mapping):
            raise InputError(
                f"collection {info.name!r} has a composite key {list(info.key_columns)}: "
                f"pass keys as dicts, not {k!r}"
            )
        for i, col in enumerate(info.key_columns):
            arrays[i].append(k[col])
    return arrays


def _key_match(info: CollectionInfo, left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
        for k in info.key_columns
    )


def fetch_statement(
    info: CollectionInfo, keys: Sequence[Any]
) -> tuple[sql.Composed, dict[str, Any]]:
    """``SELECT * FROM source WHERE key IN (keys)`` (rows come back in any order)."""
    params: dict[str, Any] = {}
    for i, arr in enumerate(_key_arrays(info, keys)):
        params[f"k{i}"] = arr
    unnest = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Placeholder(f"k{i}"), sql.SQL(t))
        for i, t in enumerate(info.key_types)
    )
    stmt = sql.SQL("SELECT * FROM {} s WHERE ({}) IN (SELECT * FROM unnest({}))").format(
        sql.Identifier(info.source_schema, info.source_table),
        sql.SQL(", ").join(sql.Identifier("s", k) for k in info.key_columns),
        unnest,
    )
    return stmt, params


def key_of_row(info: CollectionInfo, row: Mapping[str, Any]) -> Any:
    """The API form of a row's key (hashable: a tuple for a composite key)."""
    if len(info.key_columns) == 1:
        return row[info.key_columns[0]]
    return tuple(row[k] for k in info.key_columns)


def hashable_key(info: CollectionInfo, key: Any) -> Any:
    if len(info.key_columns) == 1:
        return key
    return tuple(key[k] for k in info.key_columns)


def pending_statement(
    info: CollectionInfo,
    space: SpaceInfo,
    keys: Sequence[Any] | None,
    *,
    with_failures: bool = False,
) -> tuple[sql.Composed, dict[str, Any]]:
    """Rows (all, or those with ``keys``) not yet searchable in ``space``: ``(pending, failed,
    an error message of a failed one)``.

    A row is pending when it has content for the space but no embedding, or a queued
    re-embedding (its content changed).  External spaces have no content column: every row
    waits for its vector.  With ``with_failures`` (the worker's dead-letter table
    ``mmr._failed`` exists), a row without embedding that is dead-lettered and not queued
    again counts as failed instead of pending.
    """
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {"space_name": space.name, "version": space.version}
    if keys is not None:
        arrays = _key_arrays(info, keys)
        unnest = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(f"k{i}"), sql.SQL(t))
            for i, t in enumerate(info.key_types)
        )
        for i, arr in enumerate(arrays):
            params[f"k{i}"] = arr
        conds.append(
            sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
                sql.SQL(", ").join(sql.Identifier("s", k) for k in info.key_columns), unnest
            )
        )
    if space.modality != "external" and space.source_column is not None:
        conds.append(sql.SQL("{} IS NOT NULL").format(sql.Identifier("s", space.source_column)))
    space_id = sql.SQL(
        "(SELECT x.id FROM mmr._space x JOIN mmr._collection y ON y.id = x.collection_id "
        "WHERE y.name = {} AND x.name = %(space_name)s AND x.version = %(version)s)"
    ).format(sql.Literal(info.name))
    queued = sql.SQL(
        "EXISTS (SELECT 1 FROM {queue} q WHERE q.mmr_space_id = {sid} AND {m})"
    ).format(
        queue=sql.Identifier(info.queue_schema, info.queue_table),
        sid=space_id,
        m=_key_match(info, "q", "s"),
    )
    conds.append(
        sql.SQL("(NOT EXISTS (SELECT 1 FROM {emb} e WHERE {ematch}) OR {queued})").format(
            emb=sql.Identifier(space.embedding_schema, space.embedding_table),
            ematch=_key_match(info, "e", "s"),
            queued=queued,
        )
    )
    failed: sql.Composable = sql.SQL("")
    if with_failures:
        failed = sql.SQL(
            " LEFT JOIN LATERAL (SELECT x.error FROM mmr._failed x WHERE x.space_id = {sid} "
            "AND x.key = {key} AND NOT {queued} LIMIT 1) f ON true"
        ).format(sid=space_id, key=_key_json(info, "s"), queued=queued)
    stmt = sql.SQL(
        "SELECT count(*) FILTER (WHERE {err} IS NULL), count(*) FILTER (WHERE {err} IS NOT NULL), "
        "min({err}) FROM {src} s{failed} WHERE {conds}"
    ).format(
        err=sql.SQL("f.error" if with_failures else "NULL::text"),
        src=sql.Identifier(info.source_schema, info.source_table),
        failed=failed,
        conds=sql.SQL(" AND ").join(conds),
    )
    return stmt, params


def _key_json(info: CollectionInfo, alias: str) -> sql.Composable:
    # the API form of a key as jsonb, as mmr._key_json builds it
    if len(info.key_columns) == 1:
        return sql.SQL("to_jsonb({})").format(sql.Identifier(alias, info.key_columns[0]))
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier(alias, k))
            for k in info.key_columns
        )
    )


HAS_FAILED_TABLE = "SELECT to_regclass('mmr._failed') IS NOT NULL"


def status_statement(info: CollectionInfo, space: SpaceInfo) -> tuple[sql.Composed, dict[str, Any]]:
    """Embedded rows and queued items of one space version."""
    stmt = sql.SQL(
        "SELECT (SELECT count(*) FROM {emb}), "
        "(SELECT count(*) FROM {queue} q WHERE q.mmr_space_id = "
        "(SELECT x.id FROM mmr._space x JOIN mmr._collection y ON y.id = x.collection_id "
        "WHERE y.name = %(c)s AND x.name = %(s)s AND x.version = %(v)s))"
    ).format(
        emb=sql.Identifier(space.embedding_schema, space.embedding_table),
        queue=sql.Identifier(info.queue_schema, info.queue_table),
    )
    return stmt, {"c": info.name, "s": space.name, "v": space.version}
