"""Writing: the worker's part that stores embeddings and records failures.

**write** (one short transaction per batch): the source rows are locked ``FOR SHARE SKIP
LOCKED`` (never waiting on an application's transaction, so never deadlocking with it); an
embedding is written (set-based: one ``INSERT ... SELECT FROM unnest(...)`` per space) only
when the row's *current* content hash equals the hash of what was embedded, then every queue
entry of that key is deleted.  Rows whose content changed or that are locked are released
back to the queue.  **fail** records failed items: back to the queue with a backoff, or into
the dead letters (``mmr._failed``).

:class:`JobWriter` owns the writing state of one worker: the writer thread (batch N is
written while batch N+1 is encoded), the retry of transient conflicts, and the counters.

Slightly over ~400 lines: the write statement, its Citus variant and the writer thread share
the locking order that makes a write exactly-once; split, that order would live in two places.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from . import citus_queue
from .catalog import CatalogCollection, vector_schema
from .claiming import ClaimedItem, key_arrays
from .config import WorkerStats
from .failures import RetryPolicy
from .leases import Leases, release, release_ids
from .pipeline import Writer, WriterFailed

__all__ = ["Job", "JobWriter", "WriteResult", "fail", "write"]

_log = logging.getLogger("pg_mmretrieval.worker")

_TRANSIENT = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


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


@dataclass
class WriteResult:
    """What a write transaction did."""

    written: int = 0
    unchanged: int = 0
    removed: int = 0
    released: int = 0


def write(
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    items: list[ClaimedItem],
    worker: str,
    model_ids: Mapping[int, str],
    before_commit: Callable[[], None] | None = None,
) -> WriteResult:
    """Write the embeddings of ``items`` that still match their row; one transaction.

    Items with a ``vector`` are upserted, ``unchanged`` and ``gone`` ones only verified;
    matches lose every queue entry of their key, mismatches are released.
    """
    res = WriteResult()
    by_space: dict[int, list[ClaimedItem]] = defaultdict(list)
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
    coll: CatalogCollection,
    items: list[ClaimedItem],
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
    params: list[Any] = [list(range(len(items))), *key_arrays(coll, items)]
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
    matched: list[ClaimedItem] = []
    to_release: list[int] = []
    for i, it in enumerate(items):
        if i in busy:
            to_release.extend(it.ids)
            continue
        current = locked.get(i)  # None: the row is gone or its content is NULL
        if current == it.hash and (it.vector is not None or it.unchanged or it.gone):
            matched.append(it)
        else:
            to_release.extend(it.ids)
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
            [model_id, *key_arrays(coll, upserts), [it.hash for it in upserts], vectors],
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
            key_arrays(coll, gone),
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
            [*key_arrays(coll, matched), space.id],
        )
        conn.execute(
            sql.SQL(
                "DELETE FROM mmr._failed f WHERE f.space_id = %s "
                "AND f.key IN (SELECT {kj} FROM {keyed})"
            ).format(kj=coll.key_json("u"), keyed=keyed),
            [space.id, *key_arrays(coll, matched)],
        )
        conn.execute(
            "INSERT INTO mmr._throughput (space_id, items) VALUES (%s, %s)",
            (space.id, len(matched)),
        )
    if to_release:
        res.released += release_ids(conn, coll, to_release, worker, 1.0)


def fail(
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    items: list[ClaimedItem],
    worker: str,
    max_attempts: int,
    delay_for: Callable[[int], float],
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


@dataclass
class Job:
    """A processed unit of a batch, ready to be written."""

    coll: CatalogCollection
    ok: list[ClaimedItem]
    failed: list[ClaimedItem]
    last: bool  # the batch's last unit: report progress after it


class JobWriter:
    """Writes the jobs of one worker: on a writer thread of its own (``pipeline``), else at
    once on the caller's connection.

    Every job submitted counts as held in ``leases`` until written.  ``before_commit`` runs
    inside each write transaction (fault injection); ``on_dropped`` when a space or collection
    was dropped under a batch (the catalog must be read again); ``on_batch`` after the last job
    of a batch, with the counters.
    """

    def __init__(
        self,
        worker: str,
        retry: RetryPolicy,
        leases: Leases,
        model_ids: Mapping[int, str],
        stats: WorkerStats,
        *,
        before_commit: Callable[[], None],
        on_dropped: Callable[[], None],
        on_batch: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.worker = worker
        self.retry = retry
        self.stats = stats
        self._leases = leases
        self._model_ids = model_ids
        self._before_commit = before_commit
        self._on_dropped = on_dropped
        self._on_batch = on_batch
        self._thread: Writer[Job] | None = None

    @property
    def pipelined(self) -> bool:
        return self._thread is not None

    def start(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        """Write on a thread of its own, on a connection made by ``connect``."""
        self._thread = Writer(connect, self.write_job)

    def stop(self, flush: bool) -> None:
        """Stop the thread: after writing what it holds (``flush``), or dropping it."""
        w, self._thread = self._thread, None
        if w is None:
            return
        if flush:
            try:
                w.flush()
            except WriterFailed as e:
                _log.warning("the last batches were not written: %s", e)
        w.close(abandon=not flush)

    def check(self) -> None:
        """Raise :class:`~pg_mmretrieval.worker.pipeline.WriterFailed` if the thread failed."""
        if self._thread is not None:
            self._thread.check()

    def flush(self) -> None:
        """Wait until every submitted job is written."""
        if self._thread is not None:
            self._thread.flush()

    def submit(self, conn: psycopg.Connection[Any], job: Job) -> None:
        """Write ``job`` on the thread, else now on ``conn``."""
        if self._thread is not None:
            self._thread.submit(job)
        else:
            self.write_job(conn, job)

    def write_job(self, conn: psycopg.Connection[Any], job: Job) -> None:
        try:
            if job.ok:
                res = self._write(conn, job.coll, job.ok)
                self.stats.written += res.written
                self.stats.unchanged += res.unchanged
                self.stats.removed += res.removed
                self.stats.released += res.released
            if job.failed:
                self._record_failures(conn, job.coll, job.failed)
        finally:
            self._leases.hold(job.coll, -1)
        if job.last and self._on_batch is not None:
            self._on_batch(self.stats)

    def _write(
        self, conn: psycopg.Connection[Any], coll: CatalogCollection, items: list[ClaimedItem]
    ) -> WriteResult:
        for attempt in range(5):
            try:
                return write(conn, coll, items, self.worker, self._model_ids, self._before_commit)
            except _TRANSIENT as e:
                _log.info("write of a batch hit %s; retrying", type(e).__name__)
                time.sleep(0.05 * (attempt + 1))
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                # A space or collection was dropped under us: its entries are gone with it.
                self._on_dropped()
                return WriteResult()
        release(conn, coll, items, self.worker)
        return WriteResult(released=len(items))

    def _record_failures(
        self, conn: psycopg.Connection[Any], coll: CatalogCollection, items: list[ClaimedItem]
    ) -> None:
        for it in items:
            _log.warning(
                "space %s key %s: %s failure: %s", it.space.name, it.keys, it.error_class, it.error
            )
        retried, dead = fail(
            conn, coll, items, self.worker, self.retry.max_attempts, self.retry.delay
        )
        self.stats.retried += retried
        self.stats.dead += dead
