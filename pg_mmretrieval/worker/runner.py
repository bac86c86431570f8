"""The worker loop: claim, load, encode, write; heartbeats, leases, wake-ups, shutdown."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..encoder_catalog import publish_quietly
from ..encoders import Encoder, get_encoder
from ..errors import ConfigError, DatabaseError, MMRError, NotFoundError
from . import queue
from .catalog import CollectionSpec, SpaceSpec, load_catalog
from .encode import encode_isolating
from .failures import CRASH, PERMANENT, RetryPolicy, classify
from .faults import Faults
from .heartbeat import heartbeat_loop
from .loading import Limits, load
from .pipeline import Writer, WriterFailed
from .queue import Item

__all__ = ["Worker", "WorkerConfig", "WorkerStats"]

_log = logging.getLogger("pg_mmretrieval.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one worker process.

    Attributes:
        collections: names to serve (None: all).
        batch_size: queue entries claimed per batch (256: the ONNX encoders sort texts by
            length across up to batch_size x sort_window = 32 x 8 items, so a claim of that
            size pads least; smaller claims sort only within themselves).
        lease_s: how long a claim holds without renewal; a dead worker's entries are
            claimable again after at most this long (renewed every ``lease_s / 3``).
        poll_s: longest sleep without a notification before looking at the queue again.
        once: exit when the queue of the served spaces is empty (drain mode).
        retry: attempts, backoff and crash limits.
        spaces: restrict to these space names (backfill of one space).
        load_threads: threads fetching files and URLs.
        connect_timeout_s: how long the first connection is retried before giving up
            (once connected, a lost connection is retried for ever).
        pipeline: write batch N on a second connection while batch N+1 is encoded, and
            claim batch N+1 on a third while batch N is encoded.
        allow_superuser: run even when the session user is a superuser (default: refuse; user
            code the worker's statements evaluate would run as that superuser).  Also set by
            ``MMR_WORKER_ALLOW_SUPERUSER=1``.
        limits: what loading may read and fetch, and its size/time bounds (None: from the
            ``MMR_*`` variables, :meth:`LoadLimits.from_env`).
    """

    collections: tuple[str, ...] | None = None
    batch_size: int = 256
    lease_s: float = 30.0
    poll_s: float = 5.0
    once: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    spaces: tuple[str, ...] | None = None
    load_threads: int = 8
    connect_timeout_s: float = 60.0
    pipeline: bool = True
    allow_superuser: bool = field(
        default_factory=lambda: os.environ.get("MMR_WORKER_ALLOW_SUPERUSER", "") == "1"
    )
    limits: Limits | None = None


@dataclass
class WorkerStats:
    """Counters of one worker process."""

    batches: int = 0
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    released: int = 0
    retried: int = 0
    dead: int = 0
    #: spaces this worker could not serve, with the reason (``mmr worker --once`` exits 3)
    unservable: dict[str, str] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.written + self.unchanged + self.removed + self.dead


@dataclass
class _Job:
    """A processed unit of a batch, ready to be written."""

    coll: CollectionSpec
    ok: list[Item]
    failed: list[Item]
    last: bool  # the batch's last unit: report progress after it


# The worker's own commits (claims, embeddings with their dequeue, failures) need not wait
# for the WAL flush: a crash of the server loses at most the last of them, atomically, and
# the queue entries a lost write deleted come back with it (docs/worker.md, "Durability").
_SESSION_OPTIONS = "-c synchronous_commit=off"
# Every connection of the worker resolves names in pg_catalog only (its statements qualify
# everything else): no function or operator of a schema on a user's path is ever chosen.
_PATH_OPTIONS = "-c search_path=pg_catalog,pg_temp"

_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
_TRANSIENT = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
)


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
        self._limits = self.config.limits or Limits.from_env()
        self._conn: psycopg.Connection[Any] | None = None
        self._listen: psycopg.Connection[Any] | None = None
        self._catalog: list[CollectionSpec] = []
        self._catalog_at = 0.0
        self._encoders: dict[int, Encoder] = {}
        self._model_ids: dict[int, str] = {}
        self._skipped: set[int] = set()
        self._inflight: dict[int, tuple[CollectionSpec, int]] = {}
        self._inflight_lock = threading.Lock()
        self._writer: Writer[_Job] | None = None
        self._pool = ThreadPoolExecutor(self.config.load_threads, thread_name_prefix="mmr-load")
        self._claimer = ThreadPoolExecutor(1, thread_name_prefix="mmr-claim")
        self._claim_conn: psycopg.Connection[Any] | None = None
        self._prefetch: tuple[CollectionSpec, Future[list[Item]]] | None = None

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
            target=heartbeat_loop, args=(self,), name="mmr-heartbeat", daemon=True
        )
        hb.start()
        try:
            self._refresh_catalog(force=True)
            self._announce()
            while not self._stop.is_set():
                try:
                    if self._step():
                        continue
                    if self.config.once:
                        if self._writer is not None:
                            self._writer.flush()  # what it holds is not "queued" work
                        if self._drained():
                            break
                    self._wait()
                except (WriterFailed, *_CONNECTION_ERRORS) as e:
                    _log.warning("database connection lost (%s); reconnecting", e)
                    self._reconnect()
                except psycopg.Error as e:
                    # e.g. a space or collection dropped under a batch: give the batch back,
                    # re-read the catalog, and go on.
                    _log.warning("batch failed (%s: %s); releasing it", type(e).__name__, e)
                    self._recover()
        finally:
            self._stop.set()
            self._stop_writer(flush=True)
            hb.join(timeout=5)
            self._close()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._claimer.shutdown(wait=False, cancel_futures=True)
        return self.stats

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
        self._refresh_catalog(force=True)
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
                Jsonb(self._providers()),
            ),
        )
        queue.release_mine(self._conn, self._catalog, self.id)
        if self.config.pipeline:
            self._writer = Writer(self._db, self._write_job)

    def _stop_writer(self, flush: bool) -> None:
        w, self._writer = self._writer, None
        if w is None:
            return
        if flush:
            try:
                w.flush()
            except WriterFailed as e:
                _log.warning("the last batches were not written: %s", e)
        w.close(abandon=not flush)

    def _reconnect(self, give_up_after: float | None = None) -> None:
        """(Re)connect with backoff: forever, or raise after ``give_up_after`` seconds."""
        self._drop_prefetch()
        self._stop_writer(flush=False)
        with self._inflight_lock:
            self._inflight.clear()
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
        self._drop_prefetch()
        self._stop.wait(0.5)
        try:
            queue.release_mine(self._conn, self._catalog, self.id)
        except psycopg.Error as e:
            _log.info("release after a failed batch: %s", e)
        self._catalog_at = 0.0
        self._refresh_catalog(force=True)

    def _close(self, mark: bool = True) -> None:
        self._drop_prefetch()  # before the release below, so no claim lands after it
        for c in (self._conn, self._listen):
            if c is None:
                continue
            try:
                if mark and c is self._conn and not c.closed:
                    queue.release_mine(c, self._catalog, self.id)
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

    # -- catalog ---------------------------------------------------------------------------

    def _refresh_catalog(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._catalog_at < 5.0:
            return
        assert self._conn is not None
        names = list(self.config.collections) if self.config.collections else None
        catalog = load_catalog(self._conn, names)
        if names:
            known = {c.name for c in catalog}
            missing = [n for n in names if n not in known]
            if missing:
                raise NotFoundError(
                    f"no collection named {', '.join(map(repr, missing))}; "
                    "list them with `mmr collection list`"
                )
        for coll in catalog:
            for sp in coll.spaces:
                self._prepare_space(sp)
        self._catalog = catalog
        self._catalog_at = time.monotonic()

    def _prepare_space(self, sp: SpaceSpec) -> None:
        if sp.id in self._encoders or sp.id in self._skipped:
            return
        if self.config.spaces and sp.name not in self.config.spaces:
            self._skipped.add(sp.id)
            return
        try:
            enc = get_encoder(sp.encoder)
        except MMRError as e:
            self._cannot_serve(sp, f"this worker has no encoder {sp.encoder!r} ({e})")
            return
        if enc.dimension != sp.dimensions:
            self._cannot_serve(
                sp,
                f"space has {sp.dimensions} dimensions but encoder {enc.name!r} produces "
                f"{enc.dimension}",
            )
            return
        model_id = enc.model_id or enc.name
        assert self._conn is not None
        # Pin the space to one model: a space (version) never mixes vectors of two models.
        row = self._conn.execute(
            "UPDATE mmr._space SET model_id = coalesce(model_id, %s) WHERE id = %s "
            "RETURNING model_id",
            (model_id, sp.id),
        ).fetchone()
        if row is not None and row[0] != model_id:
            self._cannot_serve(
                sp,
                f"it holds vectors of model {row[0]}, but encoder {enc.name!r} is now "
                f"{model_id}: add a new version (mmr.add_space(..., new_version => true)) and "
                "switch to it",
            )
            return
        try:  # it can serve the space now: forget an earlier report
            self._conn.execute("DELETE FROM mmr._unservable WHERE space_id = %s", (sp.id,))
        except psycopg.Error as e:  # a schema before revision 0005: nothing to forget
            _log.debug("mmr._unservable: %s", e)
        self._encoders[sp.id] = enc
        self._model_ids[sp.id] = model_id

    def _cannot_serve(self, sp: SpaceSpec, reason: str) -> None:
        """Skip a space, and say why: in the log and in ``mmr._unservable`` (read by ``mmr
        status``, ``mmr check`` and ``mmr failed list``)."""
        _log.error("space %s (version %d): not serving it: %s", sp.name, sp.version, reason)
        self._skipped.add(sp.id)
        self.stats.unservable[f"{sp.name} (version {sp.version})"] = reason
        assert self._conn is not None
        try:
            self._conn.execute(
                "INSERT INTO mmr._unservable (space_id, reason, worker_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (space_id) DO UPDATE SET reason = excluded.reason, "
                "worker_id = excluded.worker_id, reported_at = now()",
                (sp.id, reason[:2000], self.id),
            )
        except psycopg.Error as e:
            _log.warning("could not record that space %s is unservable: %s", sp.name, e)

    def _announce(self) -> None:
        """The start line: what this worker serves, with which encoder and provider."""
        served = []
        for coll in self._catalog:
            for sp in coll.spaces:
                enc = self._encoders.get(sp.id)
                if enc is not None:
                    served.append(f"{coll.name}.{sp.name} v{sp.version} ({enc.name})")
        providers = ", ".join(f"{k}: {v}" for k, v in sorted(self._providers().items()))
        _log.info(
            "worker %s started: serving %s; providers: %s%s",
            self.id,
            "; ".join(served) or "nothing (no space with an encoder this worker has)",
            providers or "none",
            f"; NOT serving {len(self.stats.unservable)} space(s), see above"
            if self.stats.unservable
            else "",
        )

    def _providers(self) -> dict[str, str]:
        out = {}
        for enc in list(self._encoders.values()):
            try:
                out[enc.name] = enc.provider
            except Exception as e:  # a provider that cannot say must not stop the heartbeat
                out[enc.name] = f"unknown ({type(e).__name__})"
        return out

    def queued(self, conn: psycopg.Connection[Any]) -> int:
        """Rows queued for the spaces this worker serves, counted on ``conn`` (progress)."""
        return sum(
            queue.queued(conn, c, ids) for c in list(self._catalog) if (ids := self._space_ids(c))
        )

    def _space_ids(self, coll: CollectionSpec) -> list[int]:
        return [s.id for s in coll.spaces if s.id in self._encoders]

    # -- the loop --------------------------------------------------------------------------

    def _step(self) -> bool:
        """One batch per collection; True when anything was claimed."""
        if self._writer is not None:
            self._writer.check()
        self._refresh_catalog()
        did = False
        for coll in self._catalog:
            if self._stop.is_set():
                break
            ids = self._space_ids(coll)
            if ids and self._batch(coll, ids):
                did = True
        return did

    def _drained(self) -> bool:
        assert self._conn is not None
        self._refresh_catalog(force=True)
        return all(
            queue.queued(self._conn, c, self._space_ids(c)) == 0
            for c in self._catalog
            if self._space_ids(c)
        )

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

    # -- claim prefetch (a third connection claims batch N+1 while batch N encodes) -------

    def _claim_ahead(self, coll: CollectionSpec, space_ids: list[int]) -> list[Item]:
        if self._claim_conn is None or self._claim_conn.closed:
            self._claim_conn = self._db()
        return queue.claim(
            self._claim_conn, coll, self.id, self.config.batch_size, self.config.lease_s, space_ids
        )

    def _start_prefetch(self, coll: CollectionSpec, space_ids: list[int]) -> None:
        if self._prefetch is not None or self._stop.is_set() or not self.config.pipeline:
            return
        self._hold(coll, 1)  # the heartbeat renews the leases of what it claims
        self._prefetch = (coll, self._claimer.submit(self._claim_ahead, coll, space_ids))

    def _take_prefetch(self, coll: CollectionSpec) -> list[Item]:
        """The batch claimed ahead for ``coll`` (empty if none); raises what the claim raised."""
        if self._prefetch is None or self._prefetch[0].id != coll.id:
            return []
        fut = self._prefetch[1]
        self._prefetch = None
        try:
            return fut.result()
        finally:
            self._hold(coll, -1)

    def _drop_prefetch(self) -> None:
        """Wait for a claim in flight and forget it (its entries are released with the
        worker's others: ``release_mine``), then close the claim connection."""
        pending, self._prefetch = self._prefetch, None
        if pending is not None:
            try:
                pending[1].result(timeout=60)
            except Exception as e:  # the claim's own failure; nothing is held then
                _log.info("claim ahead failed: %s", e)
            self._hold(pending[0], -1)
        conn, self._claim_conn = self._claim_conn, None
        if conn is not None:
            conn.close()

    def _batch(self, coll: CollectionSpec, space_ids: list[int]) -> bool:
        assert self._conn is not None
        items = self._take_prefetch(coll)
        if not items:
            items = queue.claim(
                self._conn, coll, self.id, self.config.batch_size, self.config.lease_s, space_ids
            )
        self._faults.at("claim")
        if not items:
            # Nothing to claim: a version filled in bulk whose queue is now empty gets its index
            # (written entries leave the queue only when their batch commits).
            if self._writer is not None:
                self._writer.flush()
            if queue.finish_fills(self._conn, space_ids):
                self._refresh_catalog(force=True)
            return False
        self._start_prefetch(coll, space_ids)
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
        self._hold(coll, len(units) + (1 if crashed else 0))
        if crashed:
            self._submit(_Job(coll, [], crashed, last=not units))
        for n, unit in enumerate(units):
            if self._stop.is_set() and n > 0:
                queue.release(self._conn, coll, [it for u in units[n:] for it in u], self.id)
                self._hold(coll, -(len(units) - n))
                break
            self._process(coll, unit, last=n == len(units) - 1)
        self.stats.batches += 1
        return True

    def _process(self, coll: CollectionSpec, items: list[Item], last: bool) -> None:
        todo = [it for it in items if not it.unchanged and not it.gone]
        self._faults.at("load")
        self._load(coll, todo)
        self._faults.at("encode")
        by_space: dict[int, list[Item]] = {}
        for it in todo:
            if it.error is None:
                by_space.setdefault(it.space.id, []).append(it)
        for sid, group in by_space.items():
            encode_isolating(self._encoders[sid], group)
        failed = [it for it in items if it.error is not None]
        for it in failed:
            if it.error_class is None:
                it.error_class = classify(it.error) if it.error is not None else PERMANENT
        ok = [it for it in items if it.error is None]
        self._submit(_Job(coll, ok, failed, last))

    def _load(self, coll: CollectionSpec, items: list[Item]) -> None:
        def one(it: Item) -> None:
            kind = "text" if it.space.modality == "text" else (coll.image_kind or "bytea")
            try:
                it.extra["input"] = load(kind, it.content, self._limits)
            except Exception as e:  # classified per item; never fails the batch
                it.error = e

        slow = [it for it in items if coll.image_kind in ("path", "url", "auto")]
        fast = [it for it in items if it not in slow]
        for it in fast:
            one(it)
        list(self._pool.map(one, slow))

    # -- writing (on the writer thread when pipelined) ------------------------------------

    def _hold(self, coll: CollectionSpec, n: int) -> None:
        """Count jobs in flight per collection: the heartbeat renews their leases."""
        with self._inflight_lock:
            left = self._inflight.get(coll.id, (coll, 0))[1] + n
            if left > 0:
                self._inflight[coll.id] = (coll, left)
            else:
                self._inflight.pop(coll.id, None)

    def _submit(self, job: _Job) -> None:
        if self._writer is not None:
            self._writer.submit(job)
        else:
            assert self._conn is not None
            self._write_job(self._conn, job)

    def _write_job(self, conn: psycopg.Connection[Any], job: _Job) -> None:
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
            self._hold(job.coll, -1)
        if job.last and self.on_batch is not None:
            self.on_batch(self.stats)

    def _write(
        self, conn: psycopg.Connection[Any], coll: CollectionSpec, items: list[Item]
    ) -> queue.WriteResult:
        for attempt in range(5):
            try:
                return queue.write(
                    conn,
                    coll,
                    items,
                    self.id,
                    self._model_ids,
                    before_commit=self._before_commit,
                )
            except _TRANSIENT as e:
                _log.info("write of a batch hit %s; retrying", type(e).__name__)
                time.sleep(0.05 * (attempt + 1))
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                # A space or collection was dropped under us: its entries are gone with it.
                self._catalog_at = 0.0
                return queue.WriteResult()
        queue.release(conn, coll, items, self.id)
        return queue.WriteResult(released=len(items))

    def _before_commit(self) -> None:
        self._faults.at("write")
        self._faults.at("commit")

    def _record_failures(
        self, conn: psycopg.Connection[Any], coll: CollectionSpec, items: list[Item]
    ) -> None:
        for it in items:
            _log.warning(
                "space %s key %s: %s failure: %s", it.space.name, it.keys, it.error_class, it.error
            )
        retried, dead = queue.fail(
            conn,
            coll,
            items,
            self.id,
            self.config.retry.max_attempts,
            self.config.retry.delay,
        )
        self.stats.retried += retried
        self.stats.dead += dead
