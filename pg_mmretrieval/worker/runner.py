"""The worker: wires its parts together and runs the loop (claim, load, encode, write).

Each part owns its state: :mod:`.serving` the catalog and encoders, :mod:`.claiming` the
claims (and the claim ahead), :mod:`.loading` the load threads, :mod:`.writing` the writer
thread and the counters, :mod:`.leases` what is in flight (renewed by :mod:`.heartbeat`).
The runner owns the connections, wake-ups, reconnects and shutdown.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..encoder_catalog import publish_quietly
from ..errors import ConfigError, DatabaseError, MMRError, NotFoundError
from ..loaders import LoadLimits
from .catalog import CatalogCollection
from .claiming import ClaimedItem, Claimer, finish_fills
from .config import WorkerConfig, WorkerStats
from .encode import encode_isolating
from .failures import CRASH, PERMANENT, classify
from .faults import Faults
from .heartbeat import heartbeat_loop
from .leases import Leases, release, release_mine
from .loading import ItemLoader
from .pipeline import WriterFailed
from .serving import ServedSpaces
from .writing import Job, JobWriter

__all__ = ["Worker", "WorkerConfig", "WorkerStats"]

_log = logging.getLogger("pg_mmretrieval.worker")

# The worker's own commits (claims, embeddings with their dequeue, failures) need not wait
# for the WAL flush: a crash of the server loses at most the last of them, atomically, and
# the queue entries a lost write deleted come back with it (docs/worker.md, "Durability").
_SESSION_OPTIONS = "-c synchronous_commit=off"
# Every connection of the worker resolves names in pg_catalog only (its statements qualify
# everything else): no function or operator of a schema on a user's path is ever chosen.
_PATH_OPTIONS = "-c search_path=pg_catalog,pg_temp"

_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


class Worker:
    """One worker process (``mmr worker`` runs one, or N under ``--concurrency N``)."""

    def __init__(
        self,
        url: str | None = None,
        config: WorkerConfig | None = None,
        *,
        on_batch: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.url = db.resolve_worker_url(url)
        self.config = config or WorkerConfig()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.application_name = f"mmr-worker {self.id}"[:63]
        self.stats = WorkerStats()
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._faults = Faults()
        self._conn: psycopg.Connection[Any] | None = None
        self._listen: psycopg.Connection[Any] | None = None
        cfg = self.config
        self._leases = Leases()
        self._served = ServedSpaces(self.id, cfg, self.stats)
        self._claimer = Claimer(self.id, cfg.batch_size, cfg.lease_s, self._leases, self._db)
        self._loader = ItemLoader(cfg.limits or LoadLimits.from_env(), cfg.load_threads)
        self._writer = JobWriter(
            self.id,
            cfg.retry,
            self._leases,
            self._served.model_ids,
            self.stats,
            before_commit=self._before_commit,
            on_dropped=self._served.invalidate,
            on_batch=self._report,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish its batch and exit (what SIGTERM/SIGINT do)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> WorkerStats:
        """Serve the queue until stopped (or, with ``once``, until it is empty)."""
        self._reconnect(give_up_after=self.config.connect_timeout_s)
        hb = threading.Thread(
            target=heartbeat_loop,
            args=(
                self.url,
                self.application_name,
                self.id,
                self.config.lease_s,
                self._leases,
                self._stop,
                self._status,
            ),
            name="mmr-heartbeat",
            daemon=True,
        )
        hb.start()
        try:
            if self._conn is None:  # stopped before it could connect
                return self.stats
            self._served.refresh(self._conn, force=True)
            self._served.announce()
            while not self._stop.is_set():
                try:
                    if self._step():
                        continue
                    if self.config.once:
                        self._writer.flush()  # what it holds is not "queued" work
                        assert self._conn is not None
                        if self._served.drained(self._conn):
                            break
                    self._wait()
                except (WriterFailed, DatabaseError, *_CONNECTION_ERRORS) as e:
                    # DatabaseError: a connection of the claim ahead could not be made
                    _log.warning("database connection lost (%s); reconnecting", e)
                    self._reconnect()
                except psycopg.Error as e:
                    # e.g. a space or collection dropped under a batch: give the batch back,
                    # re-read the catalog, and go on.
                    _log.warning("batch failed (%s: %s); releasing it", type(e).__name__, e)
                    self._recover()
        finally:
            self._stop.set()
            self._writer.stop(flush=True)
            hb.join(timeout=5)
            self._close()
            self._loader.shutdown()
            self._claimer.shutdown()
        return self.stats

    def _status(self) -> tuple[int, int, dict[str, str]]:
        """What the heartbeat reports: items done, items dead-lettered, providers."""
        return self.stats.done, self.stats.dead, self._served.providers()

    def _report(self, stats: WorkerStats) -> None:
        if self.on_batch is not None:
            self.on_batch(stats)

    def _db(self, options: str = _SESSION_OPTIONS) -> psycopg.Connection[Any]:
        """A connection for claims and writes (asynchronous commit, see above)."""
        given = str(psycopg.conninfo.conninfo_to_dict(self.url).get("options") or "")
        try:
            conn = db.connect(
                self.url,
                autocommit=True,
                application_name=self.application_name,
                options=f"{given} {options} {_PATH_OPTIONS}".strip(),
            )
        except DatabaseError as e:
            if f'role "{db.WORKER_ROLE}" does not exist' in str(e):
                raise ConfigError(
                    f"the worker's role {db.WORKER_ROLE} does not exist on this server: run "
                    "`mmr db upgrade` as a superuser (it creates the role), or point "
                    "MMR_WORKER_DATABASE_URL at a role granted with mmr.grant_worker(...)"
                ) from e
            raise
        return conn

    def _check_session(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse a superuser session unless ``allow_superuser`` (docs/security.md), and a
        session on a hot standby (docs/operations.md, "Read replicas")."""
        from ..standby import refuse_standby

        refuse_standby(conn, "the worker")
        row = conn.execute(
            "SELECT session_user::text, r.rolsuper FROM pg_catalog.pg_roles r "
            "WHERE r.rolname = session_user"
        ).fetchone()
        if row is not None and row[1] and not self.config.allow_superuser:
            raise ConfigError(
                f"the worker refuses to run as superuser {row[0]}: user code its statements "
                f"evaluate would run as a superuser; log in as {db.WORKER_ROLE} (created by "
                "`mmr db upgrade`; the default on the embedded server) or a role granted with "
                "SELECT mmr.grant_worker('role') via MMR_WORKER_DATABASE_URL, or pass "
                "--allow-superuser"
            )

    def _connect(self) -> None:
        self._conn = self._db()
        self._check_session(self._conn)
        # The encoder catalog learns what this worker has (mmr.add_space checks against it).
        publish_quietly(self._conn, f"worker {self.id}"[:200])
        self._listen = self._db(options="")
        self._listen.execute("LISTEN mmr_queue")
        self._served.refresh(self._conn, force=True)
        self._conn.execute(
            "INSERT INTO mmr._worker (id, hostname, pid, application_name, collections, "
            "providers) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "heartbeat_at = now(), stopped_at = NULL",
            (
                self.id,
                socket.gethostname(),
                os.getpid(),
                self.application_name,
                list(self.config.collections) if self.config.collections else None,
                Jsonb(self._served.providers()),
            ),
        )
        release_mine(self._conn, self._served.catalog, self.id)
        if self.config.pipeline:
            self._writer.start(self._db)

    def _reconnect(self, give_up_after: float | None = None) -> None:
        """(Re)connect with backoff: forever, or raise after ``give_up_after`` seconds."""
        self._claimer.drop_ahead()
        self._writer.stop(flush=False)
        self._leases.clear()
        self._close(mark=False)
        delay = 0.1
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                self._connect()
                return
            except (NotFoundError, ConfigError):
                self._close(mark=False)
                raise
            except (MMRError, *_CONNECTION_ERRORS) as e:
                if give_up_after is not None and time.monotonic() - start > give_up_after:
                    raise
                self._close(mark=False)
                _log.info("connecting failed (%s); retrying in %.1fs", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _recover(self) -> None:
        assert self._conn is not None
        self._claimer.drop_ahead()
        self._stop.wait(0.5)
        try:
            release_mine(self._conn, self._served.catalog, self.id)
        except psycopg.Error as e:
            _log.info("release after a failed batch: %s", e)
        self._served.refresh(self._conn, force=True)

    def _close(self, mark: bool = True) -> None:
        self._claimer.drop_ahead()  # before the release below, so no claim lands after it
        for c in (self._conn, self._listen):
            if c is None:
                continue
            try:
                if mark and c is self._conn and not c.closed:
                    release_mine(c, self._served.catalog, self.id)
                    c.execute(
                        "UPDATE mmr._worker SET stopped_at = now(), processed = %s, failed = %s "
                        "WHERE id = %s",
                        (self.stats.done, self.stats.dead, self.id),
                    )
            except psycopg.Error:
                pass
            finally:
                c.close()
        self._conn = self._listen = None

    def queued(self, conn: psycopg.Connection[Any]) -> int:
        """Rows queued for the spaces this worker serves, counted on ``conn`` (progress)."""
        return self._served.queued(conn)

    # -- the loop --------------------------------------------------------------------------

    def _step(self) -> bool:
        """One batch per collection; True when anything was claimed."""
        assert self._conn is not None
        self._writer.check()
        self._served.refresh(self._conn)
        did = False
        for coll in self._served.catalog:
            if self._stop.is_set():
                break
            ids = self._served.space_ids(coll)
            if ids and self._batch(coll, ids):
                did = True
        return did

    def _wait(self) -> None:
        """Sleep until a notification, the poll interval, or a stop (checked every 0.5 s)."""
        assert self._listen is not None
        deadline = time.monotonic() + (0.5 if self.config.once else self.config.poll_s)
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in self._listen.notifies(timeout=min(left, 0.5), stop_after=1):
                return

    def _batch(self, coll: CatalogCollection, space_ids: list[int]) -> bool:
        assert self._conn is not None
        items = self._claimer.claim(self._conn, coll, space_ids)
        self._faults.at("claim")
        if not items:
            # Nothing to claim: a version filled in bulk whose queue is now empty gets its index
            # (written entries leave the queue only when their batch commits).
            self._writer.flush()
            if finish_fills(self._conn, space_ids):
                self._served.refresh(self._conn, force=True)
            return False
        if self.config.pipeline and not self._stop.is_set():
            self._claimer.start_ahead(coll, space_ids)
        crashed = [it for it in items if it.claims > self.config.retry.max_claims]
        for it in crashed:
            it.error = MMRError(
                f"the item was claimed {it.claims - 1} times by workers that died before "
                "finishing it (a poison item that crashes the encoder?)"
            )
            it.error_class = CRASH
        # Items whose earlier claim died with its worker go alone: a poison item that kills
        # the process can then take no neighbour down with it a second time.
        suspects = [it for it in items if 1 < it.claims <= self.config.retry.max_claims]
        normal = [it for it in items if it.claims <= 1]
        units = ([normal] if normal else []) + [[it] for it in suspects]
        self._leases.hold(coll, len(units) + (1 if crashed else 0))
        if crashed:
            self._writer.submit(self._conn, Job(coll, [], crashed, last=not units))
        for n, unit in enumerate(units):
            if self._stop.is_set() and n > 0:
                release(self._conn, coll, [it for u in units[n:] for it in u], self.id)
                self._leases.hold(coll, -(len(units) - n))
                break
            self._process(coll, unit, last=n == len(units) - 1)
        self.stats.batches += 1
        return True

    def _process(self, coll: CatalogCollection, items: list[ClaimedItem], last: bool) -> None:
        assert self._conn is not None
        todo = [it for it in items if not it.unchanged and not it.gone]
        self._faults.at("load")
        self._loader.load(coll, todo)
        self._faults.at("encode")
        by_space: dict[int, list[ClaimedItem]] = {}
        for it in todo:
            if it.error is None:
                by_space.setdefault(it.space.id, []).append(it)
        for sid, group in by_space.items():
            encode_isolating(self._served.encoders[sid], group)
        failed = [it for it in items if it.error is not None]
        for it in failed:
            if it.error_class is None:
                it.error_class = classify(it.error) if it.error is not None else PERMANENT
        ok = [it for it in items if it.error is None]
        self._writer.submit(self._conn, Job(coll, ok, failed, last))

    def _before_commit(self) -> None:
        self._faults.at("write")
        self._faults.at("commit")
