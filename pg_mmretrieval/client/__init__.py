"""Python clients: :class:`Client` (psycopg) and :class:`AsyncClient` (psycopg async)."""

from __future__ import annotations

from ..search import Hit
from ._types import CollectionInfo, RowHit, SpaceInfo, SpaceStatus
from .aio import AsyncClient, AsyncCollection, connect_async
from .sync import Client, Collection

__all__ = [
    "AsyncClient",
    "AsyncCollection",
    "Client",
    "Collection",
    "CollectionInfo",
    "Hit",
    "RowHit",
    "SpaceInfo",
    "SpaceStatus",
    "connect_async",
]
