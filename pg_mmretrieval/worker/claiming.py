"""Claiming: the worker's part that takes work from a collection's queue.

**claim** (one short transaction): entries that are due and not leased are taken with
``FOR UPDATE SKIP LOCKED`` and leased (``mmr_claimed_until = now() + lease``); the current
content and its hash, and the stored embedding's hash, are read in the same transaction.
The worker then loads and encodes **outside** any transaction (docs/worker.md, "Protocol").

:class:`Claimer` owns the claim state of one worker: the claim-ahead thread and its
connection, which claims batch N+1 while batch N is encoded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from .catalog import CatalogCollection, CatalogSpace
from .leases import Leases

__all__ = ["ClaimedItem", "Claimer", "claim", "finish_fills", "key_arrays", "queued"]

_log = logging.getLogger("pg_mmretrieval.worker")


@dataclass
class ClaimedItem:
    """One (space, key) taken from the queue, with every queue entry of it in the batch."""

    space: CatalogSpace
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


def key_arrays(coll: CatalogCollection, items: Sequence[ClaimedItem]) -> list[list[str]]:
    """One text array per key column (the parameters of ``coll.text_arrays()``)."""
    return [[it.keys[j] for it in items] for j in range(len(coll.key_columns))]


def claim(
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    worker: str,
    limit: int,
    lease_s: float,
    space_ids: list[int],
) -> list[ClaimedItem]:
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
    items: dict[tuple[int, tuple[str, ...]], ClaimedItem] = {}
    with conn.transaction():
        rows = conn.execute(stmt, (space_ids, limit, worker, lease_s)).fetchall()
        for r in sorted(rows, key=lambda r: r[0]):
            keys = tuple(r[6 : 6 + nk])
            it = items.get((r[1], keys))
            if it is None:
                items[(r[1], keys)] = ClaimedItem(
                    spaces[r[1]], keys, [r[0]], r[2], r[3], list(r[4] or []), r[5]
                )
            else:
                it.ids.append(r[0])
                it.attempts = max(it.attempts, r[2])
                it.claims = max(it.claims, r[3])
                if len(r[4] or []) > len(it.errors):
                    it.errors = list(r[4])
        by_space: dict[int, list[ClaimedItem]] = defaultdict(list)
        for it in items.values():
            by_space[it.space.id].append(it)
        for sid, group in by_space.items():
            _read_content(conn, coll, spaces[sid], group)
    return list(items.values())


def _read_content(
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    space: CatalogSpace,
    items: list[ClaimedItem],
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
    params: list[Any] = [list(range(len(items))), *key_arrays(coll, items)]
    for i, content, h, eh in conn.execute(stmt, params).fetchall():
        it = items[i]
        it.content, it.hash, it.emb_hash = content, h, eh


def queued(conn: psycopg.Connection[Any], coll: CatalogCollection, space_ids: list[int]) -> int:
    """Entries of these spaces still in the queue (any state)."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {q} WHERE mmr_space_id = ANY (%s)").format(q=coll.queue),
        (space_ids,),
    ).fetchone()
    return int(row[0]) if row else 0


def finish_fills(conn: psycopg.Connection[Any], space_ids: list[int]) -> int:
    """End the bulk fills of these space versions whose queue is empty: each gets its HNSW
    index, built once (sql/idempotent/028-bulk.sql).  Returns how many were ended."""
    row = conn.execute("SELECT mmr._worker_finish_fill(%s::int[])", (space_ids,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class Claimer:
    """The claims of one worker: on the worker's connection, or ahead on a connection of
    its own (batch N+1 is claimed while batch N is encoded).

    What it claims ahead is held in ``leases`` (the heartbeat renews it) until taken.
    """

    def __init__(
        self,
        worker: str,
        batch_size: int,
        lease_s: float,
        leases: Leases,
        connect: Callable[[], psycopg.Connection[Any]],
    ) -> None:
        self.worker = worker
        self.batch_size = batch_size
        self.lease_s = lease_s
        self._leases = leases
        self._connect = connect
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="mmr-claim")
        self._conn: psycopg.Connection[Any] | None = None
        self._ahead: tuple[CatalogCollection, Future[list[ClaimedItem]]] | None = None

    def claim(
        self, conn: psycopg.Connection[Any], coll: CatalogCollection, space_ids: list[int]
    ) -> list[ClaimedItem]:
        """The batch claimed ahead for ``coll``, else a batch claimed now on ``conn``."""
        return self.take_ahead(coll) or claim(
            conn, coll, self.worker, self.batch_size, self.lease_s, space_ids
        )

    def _claim_ahead(self, coll: CatalogCollection, space_ids: list[int]) -> list[ClaimedItem]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return claim(self._conn, coll, self.worker, self.batch_size, self.lease_s, space_ids)

    def start_ahead(self, coll: CatalogCollection, space_ids: list[int]) -> None:
        """Claim the next batch of ``coll`` in the background (if none is in flight)."""
        if self._ahead is not None:
            return
        self._leases.hold(coll, 1)
        self._ahead = (coll, self._thread.submit(self._claim_ahead, coll, space_ids))

    def take_ahead(self, coll: CatalogCollection) -> list[ClaimedItem]:
        """The batch claimed ahead for ``coll`` (empty if none); raises what the claim raised."""
        if self._ahead is None or self._ahead[0].id != coll.id:
            return []
        fut = self._ahead[1]
        self._ahead = None
        try:
            return fut.result()
        finally:
            self._leases.hold(coll, -1)

    def drop_ahead(self) -> None:
        """Wait for a claim in flight and forget it (its entries are released with the
        worker's others: :func:`~pg_mmretrieval.worker.leases.release_mine`), then close the
        claim connection."""
        pending, self._ahead = self._ahead, None
        if pending is not None:
            try:
                pending[1].result(timeout=60)
            except Exception as e:  # the claim's own failure; nothing is held then
                _log.info("claim ahead failed: %s", e)
            self._leases.hold(pending[0], -1)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
