"""Which encoder serves a (collection, space): the space's active version, read from the catalog.

A read-only connection (``default_transaction_read_only``) reads ``mmr.spaces`` (readable by
PUBLIC); the answer is cached for ``ttl_s`` seconds, so a ``mmr space switch`` is followed within
that time.  Encoders are looked up exactly as the worker does (:func:`get_encoder` on the space's
encoder name) and must match the space's dimensions and pinned model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from .. import db
from ..encoders import Encoder, get_encoder
from ..errors import MMRError, ServiceError

__all__ = ["ServedSpace", "SpaceCatalog"]

_QUERY = (
    "SELECT collection, space, version, encoder, modality, dimensions, model_id "
    "FROM mmr.spaces WHERE active ORDER BY collection, space"
)


@dataclass(frozen=True)
class ServedSpace:
    """The active version of a space."""

    collection: str
    space: str
    version: int
    encoder: str
    modality: str  # what the space embeds from its table: text, image or external
    dimensions: int
    model_id: str | None  # pinned by the first worker run; None before

    def as_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "space": self.space,
            "version": self.version,
            "encoder": self.encoder,
            "modality": self.modality,
            "dimensions": self.dimensions,
            "model_id": self.model_id,
        }


class SpaceCatalog:
    """Active spaces by (collection, space), refreshed at most every ``ttl_s`` seconds.

    Thread-safe; :meth:`stale` tells a caller on an event loop whether :meth:`resolve` may
    block on the database.
    """

    def __init__(self, url: str | None, ttl_s: float = 5.0) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._spaces: dict[tuple[str, str], ServedSpace] = {}
        self._loaded_at: float | None = None

    def stale(self) -> bool:
        loaded = self._loaded_at
        return loaded is None or time.monotonic() - loaded >= self._ttl_s

    def spaces(self) -> list[ServedSpace]:
        """Every active space (external ones included), refreshed if stale."""
        with self._lock:
            if self.stale():
                self._refresh()
            return list(self._spaces.values())

    def describe(self) -> list[dict[str, Any]]:
        """Every active space as JSON, with ``encodes``: the request modalities this service
        accepts for it (``[]`` for an external space, or an encoder missing or mismatched
        here; ``unavailable`` then says why)."""
        out = []
        for sp in self.spaces():
            entry = sp.as_json()
            entry["encodes"] = []
            if sp.modality != "external":
                try:
                    _, encoder = self.resolve(sp.collection, sp.space, "text")
                    entry["encodes"] = sorted(encoder.modalities)
                except ServiceError as e:
                    if e.status == 422:  # an image-only encoder
                        entry["encodes"] = ["image"]
                    else:
                        entry["unavailable"] = str(e)
            out.append(entry)
        return out

    def resolve(self, collection: str, space: str, modality: str) -> tuple[ServedSpace, Encoder]:
        """The active version of ``space`` and the encoder that embeds ``modality`` for it.

        Raises:
            ServiceError: 404 unknown collection or space; 422 an external space or a modality
                the encoder lacks; 500 the encoder is not installed here or does not match the
                space; 503 the database cannot be reached.
        """
        with self._lock:
            if self.stale():  # a space created since shows up within ttl_s
                self._refresh()
            found = self._spaces.get((collection, space))
        if found is None:
            names = sorted({c for c, _ in self._spaces})
            if collection not in names:
                raise ServiceError(
                    404,
                    f"no collection named {collection!r}",
                    f"known collections: {', '.join(names) or 'none'} (GET /v1/spaces)",
                )
            mine = sorted(s for c, s in self._spaces if c == collection)
            raise ServiceError(
                404,
                f"collection {collection!r} has no space named {space!r}",
                f"its spaces: {', '.join(mine)} (GET /v1/spaces)",
            )
        if found.modality == "external":
            raise ServiceError(
                422,
                f"space {space!r} of {collection!r} is external: its vectors come from the "
                "application, no encoder of this service computes them",
                "compute the vector where the space's vectors are computed, or query a space "
                "with an encoder (GET /v1/spaces)",
            )
        try:
            encoder = get_encoder(found.encoder)
        except MMRError as e:
            raise ServiceError(
                500,
                f"space {space!r} of {collection!r} uses encoder {found.encoder!r}, which this "
                f"service cannot load: {e}",
                "install the plugin or model that provides it where `mmr serve` runs "
                "(`mmr plugins`, `mmr models list`)",
            ) from None
        if encoder.dimension != found.dimensions:
            raise ServiceError(
                500,
                f"space {space!r} has {found.dimensions} dimensions but encoder "
                f"{encoder.name!r} here produces {encoder.dimension}",
                "install the same model the worker uses where `mmr serve` runs",
            )
        model_id = encoder.model_id or encoder.name
        if found.model_id is not None and found.model_id != model_id:
            raise ServiceError(
                500,
                f"space {space!r} (version {found.version}) holds vectors of model "
                f"{found.model_id}, but encoder {encoder.name!r} here is {model_id}",
                "install the model the space was embedded with where `mmr serve` runs, or add "
                "a new version of the space and switch to it",
            )
        if modality not in encoder.modalities:
            raise ServiceError(
                422,
                f"encoder {encoder.name!r} of space {space!r} does not embed {modality} (it "
                f"embeds {', '.join(sorted(encoder.modalities))})",
                "send "
                + " or ".join(_FIELDS[m] for m in sorted(encoder.modalities) if m in _FIELDS),
            )
        return found, encoder

    def _refresh(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(
                    db.resolve_worker_url(self._url),
                    autocommit=True,
                    application_name="mmr serve",
                    register_types=False,
                    options="-c default_transaction_read_only=on",
                )
            rows = self._conn.execute(_QUERY).fetchall()
        except (MMRError, psycopg.Error) as e:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._loaded_at is not None:
                # keep serving the last catalog read; the database is tried again after ttl_s
                self._loaded_at = time.monotonic()
                return
            raise ServiceError(
                503,
                f"cannot read the catalog: {str(e).splitlines()[0] if str(e) else e!r}",
                "check that PostgreSQL is up and `mmr db upgrade` has run "
                "(MMR_DATABASE_URL / --database-url)",
            ) from None
        self._spaces = {(r[0], r[1]): ServedSpace(*r) for r in rows}
        self._loaded_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_FIELDS = {"text": '"text" (or "texts")', "image": '"image_base64" (or "images_base64")'}
