"""The worker's heartbeat thread: liveness, lease renewal, and housekeeping."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..errors import MMRError
from .leases import Leases, renew

__all__ = ["heartbeat_loop"]

_log = logging.getLogger("pg_mmretrieval.worker")


def heartbeat_loop(
    url: str,
    application_name: str,
    worker: str,
    lease_s: float,
    leases: Leases,
    stop: threading.Event,
    status: Callable[[], tuple[int, int, dict[str, str]]],
) -> None:
    """Until ``stop``, every ``min(5 s, lease/3)``: heartbeat (``status``: items done, items
    dead-lettered, providers), renew the leases of every collection ``leases`` holds, and
    (every 5 minutes) prune old throughput rows and long-gone workers."""
    interval = max(0.2, min(5.0, lease_s / 3))
    conn: psycopg.Connection[Any] | None = None
    last_prune = 0.0
    while not stop.wait(interval):
        try:
            if conn is None or conn.closed:
                conn = db.connect(url, autocommit=True, application_name=application_name)
            # providers too: an encoder picks CUDA or CPU when it loads its model (lazily)
            done, dead, providers = status()
            conn.execute(
                "UPDATE mmr._worker SET heartbeat_at = now(), processed = %s, failed = %s, "
                "providers = %s WHERE id = %s",
                (done, dead, Jsonb(providers), worker),
            )
            for coll in leases.held():
                renew(conn, coll, worker, lease_s)
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
