"""Operations around the worker: health check and repair, dead letters, status, switch."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..db import translate_error

__all__ = [
    "PROBLEMS",
    "backfill_queue",
    "check",
    "drop_space",
    "failed_list",
    "failed_purge",
    "failed_retry",
    "healthy",
    "repair",
    "status",
    "switch_space",
]

#: the counts of ``check`` that must be zero for a healthy collection
PROBLEMS = ("missing", "stale", "duplicate", "orphan")


def _rows(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[dict[str, Any]]:
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute(query, params).fetchall())
    except psycopg.Error as e:
        if not conn.autocommit:
            conn.rollback()
        raise translate_error(e) from e


def check(conn: psycopg.Connection[Any], collection: str) -> list[dict[str, Any]]:
    """Per space: rows, embedded, missing, stale, duplicate, orphan, queued, pending, failed."""
    return _rows(conn, "SELECT * FROM mmr.check(%s)", (collection,))


def healthy(report: list[dict[str, Any]]) -> bool:
    """True when every space has zero missing, stale, duplicate and orphan embeddings."""
    return all((r[p] or 0) == 0 for r in report for p in PROBLEMS)


def repair(conn: psycopg.Connection[Any], collection: str) -> list[dict[str, Any]]:
    """Queue missing/stale rows nothing would fix, delete orphan embeddings."""
    return _rows(conn, "SELECT * FROM mmr.repair(%s)", (collection,))


def backfill_queue(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str | None = None,
    version: int | None = None,
    force: bool = False,
) -> int:
    """Queue rows without an up-to-date embedding (all rows with ``force``); returns count."""
    rows = _rows(
        conn,
        "SELECT mmr.backfill(%s, %s, %s, %s) AS n",
        (collection, space, version, force),
    )
    return int(rows[0]["n"])


def failed_list(
    conn: psycopg.Connection[Any],
    collection: str | None = None,
    space: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead letters, newest first."""
    return _rows(
        conn,
        "SELECT f.id, c.name AS collection, s.name AS space, s.version, f.key, "
        "f.error_class, f.error, f.attempts, f.history, f.failed_at, f.worker "
        "FROM mmr._failed f JOIN mmr._space s ON s.id = f.space_id "
        "JOIN mmr._collection c ON c.id = f.collection_id "
        "WHERE (%(c)s::text IS NULL OR c.name = %(c)s) AND (%(s)s::text IS NULL OR s.name = %(s)s) "
        "ORDER BY f.failed_at DESC, f.id DESC LIMIT %(n)s",
        {"c": collection, "s": space, "n": limit},
    )


def failed_retry(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str | None = None,
    ids: list[int] | None = None,
) -> int:
    """Move dead letters back into the queue; returns how many."""
    rows = _rows(conn, "SELECT mmr.retry_failed(%s, %s, %s) AS n", (collection, space, ids or None))
    return int(rows[0]["n"])


def failed_purge(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str | None = None,
    ids: list[int] | None = None,
) -> int:
    """Delete dead letters; returns how many."""
    rows = _rows(conn, "SELECT mmr.purge_failed(%s, %s, %s) AS n", (collection, space, ids or None))
    return int(rows[0]["n"])


def status(conn: psycopg.Connection[Any], collection: str | None = None) -> list[dict[str, Any]]:
    """Per collection and space: rows, embedded, queued, failed, throughput, lag, workers."""
    return _rows(conn, "SELECT * FROM mmr.status(%s)", (collection,))


def switch_space(
    conn: psycopg.Connection[Any],
    collection: str,
    space: str,
    version: int | None = None,
    force: bool = False,
) -> None:
    """Make a shadow version the active one (atomically; searches switch with it)."""
    _rows(
        conn,
        "SELECT 1 AS ok FROM mmr.switch_space(%s, %s, %s, %s)",
        (collection, space, version, force),
    )


def drop_space(
    conn: psycopg.Connection[Any], collection: str, space: str, version: int | None = None
) -> None:
    """Drop one version of a space (or every version when ``version`` is None)."""
    _rows(conn, "SELECT 1 AS ok FROM mmr.drop_space(%s, %s, %s)", (collection, space, version))
