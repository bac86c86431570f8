"""Declarative specs of collections and spaces, shared by the client, SQLAlchemy and Alembic.

A spec says what ``mmr.create_collection`` and ``mmr.add_space`` are called with; the
surfaces turn it into SQL calls, ORM constructs or migration operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

__all__ = ["CollectionSpec", "SpaceSpec", "as_tuple", "default_view_name"]

_DISTANCES = ("cosine", "l2", "inner_product")
_STORAGES = ("vector", "halfvec", "bit")


@dataclass(frozen=True)
class SpaceSpec:
    """One space: an encoder over one content column (``mmr.add_space``'s arguments).

    Args:
        name: the space's name (also the column name in the collection's view).
        encoder: a registered encoder's name, or ``"external"`` for vectors the application
            computes and stores with ``put_embeddings``.
        dimensions: the vector size; defaults to the registered encoder's dimension.
        source_column: the content column it embeds (None for external spaces).
        distance: ``cosine`` (default), ``l2`` or ``inner_product``.
        storage: ``vector`` (float32), ``halfvec`` (float16) or ``bit`` (binary-quantised
            index, exact cosine rerank on float32 vectors).
    """

    name: str
    encoder: str
    source_column: str | None = None
    dimensions: int | None = None
    distance: str = "cosine"
    storage: str = "vector"
    model_id: str | None = None
    backfill: bool = True
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64

    def __post_init__(self) -> None:
        if self.distance not in _DISTANCES:
            raise InputError(
                f"space {self.name!r}: distance {self.distance!r} is not one of {_DISTANCES}"
            )
        if self.storage not in _STORAGES:
            raise InputError(
                f"space {self.name!r}: storage {self.storage!r} is not one of {_STORAGES}"
            )
        if self.encoder != "external" and self.source_column is None:
            raise InputError(
                f"space {self.name!r}: encoder {self.encoder!r} needs source_column "
                "(the image column or a text column it embeds)"
            )

    def resolved_dimensions(self) -> int:
        """``dimensions``, else the registered encoder's dimension.

        Raises:
            InputError: an external space without dimensions.
            NotFoundError: the encoder is not registered.
        """
        if self.dimensions is not None:
            return self.dimensions
        if self.encoder == "external":
            raise InputError(f"space {self.name!r}: an external space needs dimensions")
        from .encoders import get_encoder

        return get_encoder(self.encoder).dimension

    def add_space_args(self, collection: str, *, new_version: bool = False) -> dict[str, Any]:
        """Keyword arguments of :func:`pg_mmretrieval.add_space` for this space."""
        return {
            "collection": collection,
            "space": self.name,
            "encoder": self.encoder,
            "source_column": self.source_column,
            "dimensions": self.resolved_dimensions(),
            "distance": self.distance,
            "storage": self.storage,
            "model_id": self.model_id,
            "new_version": new_version,
            "backfill": self.backfill,
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction,
        }


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: a table with content columns, and its spaces."""

    name: str
    source: str
    image_column: str | None = None
    text_columns: tuple[str, ...] = ()
    image_kind: str | None = None
    view_name: str | None = None
    create_view: bool = True
    spaces: tuple[SpaceSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [s.name for s in self.spaces]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise InputError(f"collection {self.name!r} declares space(s) {sorted(dup)} twice")

    def space(self, name: str) -> SpaceSpec:
        """The declared space called ``name``.

        Raises:
            InputError: no such space is declared.
        """
        for s in self.spaces:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.spaces) or "none"
        raise InputError(f"collection {self.name!r} declares no space {name!r} (declared: {known})")

    def create_collection_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pg_mmretrieval.create_collection`."""
        return {
            "name": self.name,
            "source": self.source,
            "image_column": self.image_column,
            "text_columns": list(self.text_columns) or None,
            "image_kind": self.image_kind,
            "view_name": self.view_name,
            "create_view": self.create_view,
        }


def default_view_name(table: str) -> str:
    """The view name ``mmr.create_collection`` picks for a table name (``<table>_mmr``)."""
    # left(relname, 59) in SQL counts characters
    return table[:59] + "_mmr"


def as_tuple(values: Sequence[str] | None) -> tuple[str, ...]:
    """A tuple of the given names (None: empty)."""
    return tuple(values) if values else ()
