"""Leases: what the worker holds of the queue, renewing it, and giving it back.

A claimed entry is leased until ``mmr_claimed_until``; a dead worker's entries are claimable
again after at most ``lease_s``.  :class:`Leases` counts the jobs in flight per collection
(claimed ahead, encoding, waiting for or in the writer); the heartbeat renews the leases of
every collection it lists.  The release functions give entries back to the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql

from .catalog import CatalogCollection

__all__ = ["Leases", "release", "release_ids", "release_mine", "renew"]


class _Claimed(Protocol):
    @property
    def ids(self) -> list[int]: ...


class Leases:
    """Jobs in flight per collection, shared by the worker's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, tuple[CatalogCollection, int]] = {}

    def hold(self, coll: CatalogCollection, n: int) -> None:
        """Count ``n`` more (or, negative, fewer) jobs of ``coll`` in flight."""
        with self._lock:
            left = self._held.get(coll.id, (coll, 0))[1] + n
            if left > 0:
                self._held[coll.id] = (coll, left)
            else:
                self._held.pop(coll.id, None)

    def held(self) -> list[CatalogCollection]:
        """The collections with a job in flight: their leases must be renewed."""
        with self._lock:
            return [c for c, _ in self._held.values()]

    def clear(self) -> None:
        """Forget every job (after a reconnect: the entries were released)."""
        with self._lock:
            self._held.clear()


def renew(
    conn: psycopg.Connection[Any], coll: CatalogCollection, worker: str, lease_s: float
) -> int:
    """Extend the lease of the entries ``worker`` holds in ``coll``."""
    return conn.execute(
        sql.SQL(
            "UPDATE {q} SET mmr_claimed_until = now() + %s * interval '1 second' "
            "WHERE mmr_claimed_by = %s AND mmr_claimed_until IS NOT NULL"
        ).format(q=coll.queue),
        (lease_s, worker),
    ).rowcount


def release_ids(
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    ids: list[int],
    worker: str,
    delay: float,
) -> int:
    """Give the entries ``ids`` back, due again after ``delay`` seconds, in the caller's
    transaction; the claim that did not finish does not count."""
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
    conn: psycopg.Connection[Any],
    coll: CatalogCollection,
    items: Sequence[_Claimed],
    worker: str,
) -> int:
    """Give entries back to the queue at once (shutdown, or a batch that could not finish)."""
    ids = [i for it in items for i in it.ids]
    if not ids:
        return 0
    with conn.transaction():
        return release_ids(conn, coll, ids, worker, 0.0)


def release_mine(conn: psycopg.Connection[Any], colls: list[CatalogCollection], worker: str) -> int:
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
