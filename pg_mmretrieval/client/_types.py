"""Plain records the clients return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CollectionInfo", "RowHit", "SpaceInfo", "SpaceStatus"]


@dataclass(frozen=True)
class CollectionInfo:
    """A registered collection (a row of ``mmr.collections``, plus the key's types)."""

    name: str
    source: str
    source_schema: str
    source_table: str
    key_columns: tuple[str, ...]
    key_types: tuple[str, ...]
    image_column: str | None
    image_kind: str | None
    text_columns: tuple[str, ...]
    view: str | None
    queue_schema: str
    queue_table: str

    def key_of(self, row: tuple[Any, ...]) -> Any:
        """The API form of a key: the plain value, or a dict for a composite key."""
        if len(self.key_columns) == 1:
            return row[0]
        return dict(zip(self.key_columns, row, strict=True))


@dataclass(frozen=True)
class SpaceInfo:
    """A version of a space (a row of ``mmr.spaces``)."""

    collection: str
    name: str
    version: int
    active: bool
    encoder: str
    source_column: str | None
    modality: str
    dimensions: int
    distance: str
    storage: str
    model_id: str | None
    embedding_schema: str
    embedding_table: str


@dataclass(frozen=True)
class SpaceStatus:
    """How far a space is filled: rows with an embedding, and items waiting in the queue."""

    collection: str
    space: str
    version: int
    active: bool
    encoder: str
    embedded: int
    queued: int


@dataclass(frozen=True)
class RowHit:
    """A search result with its row of the collection's table (column name -> value)."""

    key: Any
    score: float
    row: dict[str, Any]
