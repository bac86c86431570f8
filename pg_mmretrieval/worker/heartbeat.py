"""The worker's heartbeat thread: liveness, lease renewal, and housekeeping."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..errors import MMRError
from . import queue

if TYPE_CHECKING:
    from .runner import Worker

__all__ = ["heartbeat_loop"]

_log = logging.getLogger("pg_mmretrieval.worker")


def heartbeat_loop(w: Worker) -> None:
    """Every ``min(5 s, lease/3)``: heartbeat, renew the leases of every batch in flight,
    and (every 5 minutes) prune old throughput rows and long-gone workers."""
    interval = max(0.2, min(5.0, w.config.lease_s / 3))
    conn: psycopg.Connection[Any] | None = None
    last_prune = 0.0
    while not w._stop.wait(interval):
        try:
            if conn is None or conn.closed:
                conn = db.connect(w.url, autocommit=True, application_name=w.application_name)
            # providers too: an encoder picks CUDA or CPU when it loads its model (lazily)
            conn.execute(
                "UPDATE mmr._worker SET heartbeat_at = now(), processed = %s, failed = %s, "
                "providers = %s WHERE id = %s",
                (w.stats.done, w.stats.dead, Jsonb(w._providers()), w.id),
            )
            with w._inflight_lock:
                held = [c for c, _ in w._inflight.values()]
            for coll in held:
                queue.renew(conn, coll, w.id, w.config.lease_s)
            if time.monotonic() - last_prune > 300:
                last_prune = time.monotonic()
                conn.execute("DELETE FROM mmr._throughput WHERE at < now() - interval '1 hour'")
                conn.execute(
                    "DELETE FROM mmr._worker WHERE heartbeat_at < now() - interval '1 day'"
                )
        except (MMRError, psycopg.Error) as e:
            _log.debug("heartbeat failed: %s", e)
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
