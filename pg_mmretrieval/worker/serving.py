"""What one worker serves: the catalog it read, and an encoder per space it can fill.

A space is served when this process has its encoder, the dimensions agree, and the space is
pinned to the encoder's model (a space version never mixes vectors of two models); any other
space is skipped, with the reason in the log and in ``mmr._unservable`` (read by ``mmr
status``, ``mmr check`` and ``mmr failed list``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from ..encoders import Encoder, get_encoder
from ..errors import MMRError, NotFoundError
from .catalog import CatalogCollection, CatalogSpace, load_catalog
from .claiming import queued
from .config import WorkerConfig, WorkerStats

__all__ = ["ServedSpaces"]

_log = logging.getLogger("pg_mmretrieval.worker")

#: seconds a read catalog is used before it is read again
_CATALOG_TTL_S = 5.0


class ServedSpaces:
    """The catalog and encoders of one worker (``model_ids`` is read by the writer thread)."""

    def __init__(self, worker: str, config: WorkerConfig, stats: WorkerStats) -> None:
        self.worker = worker
        self.config = config
        self.stats = stats
        self.catalog: list[CatalogCollection] = []
        self.encoders: dict[int, Encoder] = {}
        self.model_ids: dict[int, str] = {}
        self._skipped: set[int] = set()
        self._read_at = 0.0

    def invalidate(self) -> None:
        """Read the catalog again at the next :meth:`refresh`."""
        self._read_at = 0.0

    def refresh(self, conn: psycopg.Connection[Any], force: bool = False) -> None:
        """Read the catalog (at most every 5 s unless ``force``) and prepare new spaces.

        Raises:
            NotFoundError: a collection the worker was told to serve does not exist.
        """
        if not force and time.monotonic() - self._read_at < _CATALOG_TTL_S:
            return
        names = list(self.config.collections) if self.config.collections else None
        catalog = load_catalog(conn, names)
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
                self._prepare(conn, sp)
        self.catalog = catalog
        self._read_at = time.monotonic()

    def _prepare(self, conn: psycopg.Connection[Any], sp: CatalogSpace) -> None:
        if sp.id in self.encoders or sp.id in self._skipped:
            return
        if self.config.spaces and sp.name not in self.config.spaces:
            self._skipped.add(sp.id)
            return
        try:
            enc = get_encoder(sp.encoder)
        except MMRError as e:
            self._cannot_serve(conn, sp, f"this worker has no encoder {sp.encoder!r} ({e})")
            return
        if enc.dimension != sp.dimensions:
            self._cannot_serve(
                conn,
                sp,
                f"space has {sp.dimensions} dimensions but encoder {enc.name!r} produces "
                f"{enc.dimension}",
            )
            return
        model_id = enc.model_id or enc.name
        # Pin the space to one model: a space (version) never mixes vectors of two models.
        row = conn.execute(
            "UPDATE mmr._space SET model_id = coalesce(model_id, %s) WHERE id = %s "
            "RETURNING model_id",
            (model_id, sp.id),
        ).fetchone()
        if row is not None and row[0] != model_id:
            self._cannot_serve(
                conn,
                sp,
                f"it holds vectors of model {row[0]}, but encoder {enc.name!r} is now "
                f"{model_id}: add a new version (mmr.add_space(..., new_version => true)) and "
                "switch to it",
            )
            return
        try:  # it can serve the space now: forget an earlier report
            conn.execute("DELETE FROM mmr._unservable WHERE space_id = %s", (sp.id,))
        except psycopg.Error as e:  # a schema before revision 0005: nothing to forget
            _log.debug("mmr._unservable: %s", e)
        self.encoders[sp.id] = enc
        self.model_ids[sp.id] = model_id

    def _cannot_serve(self, conn: psycopg.Connection[Any], sp: CatalogSpace, reason: str) -> None:
        """Skip a space, and say why: in the log and in ``mmr._unservable``."""
        _log.error("space %s (version %d): not serving it: %s", sp.name, sp.version, reason)
        self._skipped.add(sp.id)
        self.stats.unservable[f"{sp.name} (version {sp.version})"] = reason
        try:
            conn.execute(
                "INSERT INTO mmr._unservable (space_id, reason, worker_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (space_id) DO UPDATE SET reason = excluded.reason, "
                "worker_id = excluded.worker_id, reported_at = now()",
                (sp.id, reason[:2000], self.worker),
            )
        except psycopg.Error as e:
            _log.warning("could not record that space %s is unservable: %s", sp.name, e)

    def space_ids(self, coll: CatalogCollection) -> list[int]:
        """The spaces of ``coll`` this worker fills."""
        return [s.id for s in coll.spaces if s.id in self.encoders]

    def providers(self) -> dict[str, str]:
        """The execution provider of each encoder (CUDA, CPU...), as far as it can say."""
        out = {}
        for enc in list(self.encoders.values()):
            try:
                out[enc.name] = enc.provider
            except Exception as e:  # a provider that cannot say must not stop the heartbeat
                out[enc.name] = f"unknown ({type(e).__name__})"
        return out

    def queued(self, conn: psycopg.Connection[Any]) -> int:
        """Rows queued for the spaces this worker serves, counted on ``conn``."""
        return sum(queued(conn, c, ids) for c in list(self.catalog) if (ids := self.space_ids(c)))

    def drained(self, conn: psycopg.Connection[Any]) -> bool:
        """True when no served space has an entry in its queue (the catalog is read again)."""
        self.refresh(conn, force=True)
        return all(queued(conn, c, ids) == 0 for c in self.catalog if (ids := self.space_ids(c)))

    def announce(self) -> None:
        """The start line: what this worker serves, with which encoder and provider."""
        served = []
        for coll in self.catalog:
            for sp in coll.spaces:
                enc = self.encoders.get(sp.id)
                if enc is not None:
                    served.append(f"{coll.name}.{sp.name} v{sp.version} ({enc.name})")
        providers = ", ".join(f"{k}: {v}" for k, v in sorted(self.providers().items()))
        _log.info(
            "worker %s started: serving %s; providers: %s%s",
            self.worker,
            "; ".join(served) or "nothing (no space with an encoder this worker has)",
            providers or "none",
            f"; NOT serving {len(self.stats.unservable)} space(s), see above"
            if self.stats.unservable
            else "",
        )
