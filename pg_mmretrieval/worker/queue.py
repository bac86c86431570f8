"""The worker's statements on one collection's queue: claim, write, fail, release.

Protocol (see docs/worker.md):

* **claim** (one short transaction): entries that are due and not leased are taken with
  ``FOR UPDATE SKIP LOCKED`` and leased (``mmr_claimed_until = now() + lease``); the current
  content and its hash, and the stored embedding's hash, are read in the same transaction.
* the worker loads and encodes **outside** any transaction.
* **write** (one short transaction): the source rows are locked ``FOR SHARE SKIP LOCKED``
  (never waiting on an application's transaction, so never deadlocking with it); an
  embedding is written only when the row's *current* content hash equals the hash of what
  was embedded, then every queue entry of that key is deleted.  Rows whose content changed
  or that are locked are released back to the queue.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from . import citus_queue
from .catalog import CollectionSpec, SpaceSpec, vector_schema

__all__ = ["Item", "claim", "fail", "release", "release_mine", "renew", "write"]


@dataclass
class Item:
    """One (space, key) taken from the queue, with every queue entry of it in the batch."""

    space: SpaceSpec
    keys: tuple[str, ...]
    ids: list[int]
    attempts: int
    claims: int
    errors: list[Any]
    enqueued_at: datetime | None
    content: object = None
    hash: bytes | None = None
    emb_hash: bytes | None = None
    vector: npt.NDArray[np.float32] | None = None
    error: BaseException | None = None
    error_class: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unchanged(self) -> bool:
        """The stored embedding already matches the content: nothing to encode."""
        return self.hash is not None and self.hash == self.emb_hash

    @property
    def gone(self) -> bool:
        """The row was deleted or its content is NULL."""
        return self.hash is None


def _vector_array(conn: psycopg.Connection[Any]) -> sql.Composable:
    """``<schema>.vector[]``, after making sure ``conn`` sends numpy vectors in binary.

    :func:`pg_mmretrieval.db.connect` registers pgvector's adapters when ``vector`` is on
    the search path; otherwise they are registered here from the qualified type name.
    """
    schema = vector_schema()
    try:
        conn.adapters.get_dumper(np.ndarray, PyFormat.BINARY)
    except psycopg.ProgrammingError:
        register_vector_info(conn, TypeInfo.fetch(conn, f"{schema}.vector"))
    return sql.SQL("{}.vector[]").format(sql.Identifier(schema))


def claim(
    conn: psycopg.Connection[Any],
    coll: CollectionSpec,
    worker: str,
    limit: int,
    lease_s: float,
    space_ids: list[int],
) -> list[Item]:
    """Lease up to ``limit`` due entries and read their content; one transaction."""
    spaces = {s.id: s for s in coll.spaces}
    nk = len(coll.key_columns)
    stmt = sql.SQL(
        "WITH c AS (SELECT q.mmr_id FROM {q} q "
        " WHERE q.mmr_space_id = ANY (%s) AND q.mmr_not_before <= now() "
        "   AND (q.mmr_claimed_until IS NULL OR q.mmr_claimed_until < now()) "
        "   AND NOT EXISTS (SELECT 1 FROM {q} o WHERE o.mmr_space_id = q.mmr_space_id "
        "                     AND {oq} AND o.mmr_id <> q.mmr_id AND o.mmr_claimed_until >= now()) "
        " ORDER BY q.mmr_id LIMIT %s {lock}) "
        "UPDATE {q} q SET mmr_claimed_by = %s, "
        "       mmr_claimed_until = now() + %s * interval '1 second', "
        "       mmr_claims = q.mmr_claims + 1 "
        "  FROM c WHERE q.mmr_id = c.mmr_id {recheck}"
        "RETURNING q.mmr_id, q.mmr_space_id, q.mmr_attempts, q.mmr_claims, q.mmr_errors, "
        "          q.mmr_enqueued_at, {keys}"
    ).format(
        q=coll.queue,
        # Citus: no row locks outside router queries; the UPDATE re-checks the lease instead
        # (worker/citus_queue.py)
        lock=sql.SQL("" if coll.citus else "FOR UPDATE SKIP LOCKED"),
        recheck=sql.SQL(
            "AND (q.mmr_claimed_until IS NULL OR q.mmr_claimed_until < now()) "
            if coll.citus
            else ""
        ),
        oq=coll.key_join("o", "q"),
        keys=sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier("q", k)) for k in coll.key_columns
        ),
    )
    items: dict[tuple[int, tuple[str, ...]], Item] = {}
    with conn.transaction():
        rows = conn.execute(stmt, (space_ids, limit, worker, lease_s)).fetchall()
        for r in sorted(rows, key=lambda r: r[0]):
            keys = tuple(r[6 : 6 + nk])
            it = items.get((r[1], keys))
            if it is None:
                items[(r[1], keys)] = Item(
                    spaces[r[1]], keys, [r[0]], r[2], r[3], list(r[4] or []), r[5]
                )
            else:
                it.ids.append(r[0])
                it.attempts = max(it.attempts, r[2])
                it.claims = max(it.claims, r[3])
                if len(r[4] or []) > len(it.errors):
                    it.errors = list(r[4])
        by_space: dict[int, list[Item]] = defaultdict(list)
        for it in items.values():
            by_space[it.space.id].append(it)
        for sid, group in by_space.items():
            _read_content(conn, coll, spaces[sid], group)
    return list(items.values())


def _key_arrays(coll: CollectionSpec, items: list[Item]) -> list[list[str]]:
    return [[it.keys[j] for it in items] for j in range(len(coll.key_columns))]


def _read_content(
    conn: psycopg.Connection[Any], coll: CollectionSpec, space: SpaceSpec, items: list[Item]
) -> None:
    col = sql.Identifier("s", space.source_column)
    stmt = sql.SQL(
        "SELECT u.mmr_i, {col}, mmr.content_hash({col}), e.content_hash "
        "  FROM unnest(%s::int[], {arrays}) AS u(mmr_i, {cols}) "
        "  LEFT JOIN {src} s ON {sj} LEFT JOIN {emb} e ON {ej}"
    ).format(
        col=col,
        arrays=coll.text_arrays(),
        cols=coll.key_cols(),
        src=coll.src,
        sj=coll.typed_join("s", "u"),
        emb=space.table,
        ej=coll.typed_join("e", "u"),
    )
    params: list[Any] = [list(range(len(items))), *_key_arrays(coll, items)]
    for i, content, h, eh in conn.execute(stmt, params).fetchall():
        it = items[i]
        it.content, it.hash, it.emb_hash = content, h, eh


@dataclass
class WriteResult:
    """What a write transaction did."""

    written: int = 0
    unchanged: int = 0
    removed: int = 0
    released: int = 0


def write(
    conn: psycopg.Connection[Any],
    coll: CollectionSpec,
    items: list[Item],
    worker: str,
    model_ids: dict[int, str],
    before_commit: Any = None,
) -> WriteResult:
    """Write the embeddings of ``items`` that still match their row; one transaction.

    Items with a ``vector`` are upserted, ``unchanged`` and ``gone`` ones only verified;
    matches lose every queue entry of their key, mismatches are released.
    """
    res = WriteResult()
    by_space: dict[int, list[Item]] = defaultdict(list)
    for it in items:
        by_space[it.space.id].append(it)
    with conn.transaction():
        for sid in sorted(by_space):
            _write_space(conn, coll, by_space[sid], worker, model_ids[sid], res)
        if before_commit is not None:
            before_commit()
    return res


def _write_space(
    conn: psycopg.Connection[Any],
    coll: CollectionSpec,
    items: list[Item],
    worker: str,
    model_id: str,
    res: WriteResult,
) -> None:
    space = items[0].space
    col = sql.Identifier("s", space.source_column)
    base = sql.SQL(
        "FROM unnest(%s::int[], {arrays}) AS u(mmr_i, {cols}) JOIN {src} s ON {sj}"
    ).format(
        arrays=coll.text_arrays(), cols=coll.key_cols(), src=coll.src, sj=coll.typed_join("s", "u")
    )
    params: list[Any] = [list(range(len(items))), *_key_arrays(coll, items)]
    # Lock the rows (in key order; SKIP LOCKED never waits on an application's transaction).
    if coll.citus:  # one router query per row (worker/citus_queue.py)
        locked = citus_queue.lock_rows(conn, coll, space.source_column, items)
    else:
        locked = dict(
            conn.execute(
                sql.SQL(
                    "SELECT u.mmr_i, mmr.content_hash({col}) {base} ORDER BY {keys} "
                    "FOR SHARE OF s SKIP LOCKED"
                ).format(col=col, base=base, keys=coll.keys("s")),
                params,
            ).fetchall()
        )
    busy: set[int] = set()
    if len(locked) < len(items):
        busy = {
            r[0] for r in conn.execute(sql.SQL("SELECT u.mmr_i {base}").format(base=base), params)
        }
        busy -= set(locked)
    matched: list[Item] = []
    release_ids: list[int] = []
    for i, it in enumerate(items):
        if i in busy:
            release_ids.extend(it.ids)
            continue
        current = locked.get(i)  # None: the row is gone or its content is NULL
        if current == it.hash and (it.vector is not None or it.unchanged or it.gone):
            matched.append(it)
        else:
            release_ids.extend(it.ids)
    upserts = [it for it in matched if it.vector is not None and not it.unchanged]
    if upserts:
        vals = sql.SQL(
            "INSERT INTO {emb} AS x ({cols}, embedding, content_hash, model_id, updated_at) "
            "SELECT {typed}, u.mmr_e::{vt}, u.mmr_h, %s, now() "
            "  FROM unnest({arrays}, %s::bytea[], %b::{va}) AS u({cols}, mmr_h, mmr_e) "
            " ORDER BY {ord} "
            "ON CONFLICT ({cols}) DO UPDATE SET embedding = EXCLUDED.embedding, "
            "  content_hash = EXCLUDED.content_hash, model_id = EXCLUDED.model_id, "
            "  updated_at = EXCLUDED.updated_at"
        ).format(
            emb=space.table,
            cols=coll.key_cols(),
            typed=coll.typed("u"),
            vt=space.vector_type,
            va=_vector_array(conn),
            arrays=coll.text_arrays(),
            ord=sql.SQL(", ").join(sql.SQL(str(j + 1)) for j in range(len(coll.key_columns))),
        )
        # Vectors travel in pgvector's binary format (no float formatting and parsing).
        vectors = [np.asarray(it.vector, dtype=np.float32) for it in upserts]
        conn.execute(
            vals,
            [model_id, *_key_arrays(coll, upserts), [it.hash for it in upserts], vectors],
        )
        res.written += len(upserts)
    gone = [it for it in matched if it.gone]
    if gone:
        conn.execute(
            sql.SQL("DELETE FROM {emb} e USING unnest({arrays}) AS u({cols}) WHERE {ej}").format(
                emb=space.table,
                arrays=coll.text_arrays(),
                cols=coll.key_cols(),
                ej=coll.typed_join("e", "u"),
            ),
            _key_arrays(coll, gone),
        )
        res.removed += len(gone)
    res.unchanged += sum(1 for it in matched if it.unchanged)
    if matched:
        keyed = sql.SQL("unnest({arrays}) AS u({cols})").format(
            arrays=coll.text_arrays(), cols=coll.key_cols()
        )
        conn.execute(
            sql.SQL(
                "DELETE FROM {q} WHERE mmr_id IN (SELECT q.mmr_id FROM {q} q JOIN {keyed} "
                "ON {qj} WHERE q.mmr_space_id = %s ORDER BY q.mmr_id {lock})"
            ).format(
                q=coll.queue,
                keyed=keyed,
                qj=coll.typed_join("q", "u"),
                lock=sql.SQL("" if coll.citus else "FOR UPDATE OF q"),  # Citus: router only
            ),
            [*_key_arrays(coll, matched), space.id],
        )
        conn.execute(
            sql.SQL(
                "DELETE FROM mmr._failed f WHERE f.space_id = %s "
                "AND f.key IN (SELECT {kj} FROM {keyed})"
            ).format(kj=coll.key_json("u"), keyed=keyed),
            [space.id, *_key_arrays(coll, matched)],
        )
        conn.execute(
            "INSERT INTO mmr._throughput (space_id, items) VALUES (%s, %s)",
            (space.id, len(matched)),
        )
    if release_ids:
        res.released += _release(conn, coll, release_ids, worker, 1.0)


def _release(
    conn: psycopg.Connection[Any], coll: CollectionSpec, ids: list[int], worker: str, delay: float
) -> int:
    cur = conn.execute(
        sql.SQL(
            "UPDATE {q} SET mmr_claimed_by = NULL, mmr_claimed_until = NULL, "
            "mmr_claims = greatest(mmr_claims - 1, 0), "
            "mmr_not_before = now() + %s * interval '1 second' "
            "WHERE mmr_id = ANY (%s) AND mmr_claimed_by = %s"
        ).format(q=coll.queue),
        (delay, ids, worker),
    )
    return cur.rowcount


def release(
    conn: psycopg.Connection[Any], coll: CollectionSpec, items: list[Item], worker: str
) -> int:
    """Give entries back to the queue at once (shutdown, or a batch that could not finish)."""
    ids = [i for it in items for i in it.ids]
    if not ids:
        return 0
    with conn.transaction():
        return _release(conn, coll, ids, worker, 0.0)


def release_mine(conn: psycopg.Connection[Any], colls: list[CollectionSpec], worker: str) -> int:
    """Release every entry ``worker`` still holds (after a reconnect or at exit)."""
    n = 0
    with conn.transaction():
        for coll in colls:
            n += conn.execute(
                sql.SQL(
                    "UPDATE {q} SET mmr_claimed_by = NULL, mmr_claimed_until = NULL, "
                    "mmr_claims = greatest(mmr_claims - 1, 0) WHERE mmr_claimed_by = %s"
                ).format(q=coll.queue),
                (worker,),
            ).rowcount
    return n


def renew(conn: psycopg.Connection[Any], coll: CollectionSpec, worker: str, lease_s: float) -> int:
    """Extend the lease of the entries ``worker`` holds in ``coll``."""
    return conn.execute(
        sql.SQL(
            "UPDATE {q} SET mmr_claimed_until = now() + %s * interval '1 second' "
            "WHERE mmr_claimed_by = %s AND mmr_claimed_until IS NOT NULL"
        ).format(q=coll.queue),
        (lease_s, worker),
    ).rowcount


def fail(
    conn: psycopg.Connection[Any],
    coll: CollectionSpec,
    items: list[Item],
    worker: str,
    max_attempts: int,
    delay_for: Any,
) -> tuple[int, int]:
    """Record failed items: back to the queue with a backoff, or into the dead letters.

    Returns (retried, dead-lettered).
    """
    retried = dead = 0
    with conn.transaction():
        for it in items:
            cls = it.error_class or "retryable"
            attempts = it.attempts + 1
            entry = {
                "at": datetime.now().astimezone().isoformat(),
                "class": cls,
                "error": f"{type(it.error).__name__}: {it.error}",
                "worker": worker,
            }
            history = [*it.errors, entry]
            if cls != "retryable" or attempts >= max_attempts:
                keyv = sql.SQL("(SELECT {kj} FROM (VALUES ({vals})) AS u({cols}))").format(
                    kj=coll.key_json("u"),
                    vals=sql.SQL(", ").join(sql.SQL("%s::text") for _ in coll.key_columns),
                    cols=coll.key_cols(),
                )
                conn.execute(
                    sql.SQL(
                        "INSERT INTO mmr._failed AS f (collection_id, space_id, key, content_hash, "
                        "error_class, error, attempts, history, enqueued_at, worker) "
                        "VALUES (%s, %s, {keyv}, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (space_id, key) DO UPDATE SET "
                        "content_hash = EXCLUDED.content_hash, error_class = EXCLUDED.error_class, "
                        "error = EXCLUDED.error, attempts = EXCLUDED.attempts, "
                        "history = f.history || EXCLUDED.history, failed_at = now(), "
                        "worker = EXCLUDED.worker"
                    ).format(keyv=keyv),
                    (
                        coll.id,
                        it.space.id,
                        *it.keys,
                        it.hash,
                        cls,
                        entry["error"],
                        attempts,
                        Jsonb(history),
                        it.enqueued_at,
                        worker,
                    ),
                )
                conn.execute(
                    sql.SQL("DELETE FROM {q} WHERE mmr_id = ANY (%s)").format(q=coll.queue),
                    (it.ids,),
                )
                dead += 1
            else:
                conn.execute(
                    sql.SQL(
                        "UPDATE {q} SET mmr_attempts = %s, mmr_errors = %s, "
                        "mmr_not_before = now() + %s * interval '1 second', "
                        "mmr_claimed_by = NULL, mmr_claimed_until = NULL, "
                        "mmr_claims = greatest(mmr_claims - 1, 0) "
                        "WHERE mmr_id = ANY (%s) AND mmr_claimed_by = %s"
                    ).format(q=coll.queue),
                    (attempts, Jsonb(history), delay_for(attempts), it.ids, worker),
                )
                retried += 1
    return retried, dead


def queued(conn: psycopg.Connection[Any], coll: CollectionSpec, space_ids: list[int]) -> int:
    """Entries of these spaces still in the queue (any state)."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {q} WHERE mmr_space_id = ANY (%s)").format(q=coll.queue),
        (space_ids,),
    ).fetchone()
    return int(row[0]) if row else 0


def finish_fills(conn: psycopg.Connection[Any], space_ids: list[int]) -> int:
    """End the bulk fills of these space versions whose queue is empty: each gets its HNSW
    index, built once (sql/idempotent/046-bulk.sql).  Returns how many were ended."""
    row = conn.execute("SELECT mmr._worker_finish_fill(%s::int[])", (space_ids,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
