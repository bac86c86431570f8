"""pg_mmretrieval: multimodal retrieval inside PostgreSQL."""

from __future__ import annotations

from .client import AsyncClient, Client, connect_async
from .collections import (
    add_space,
    create_collection,
    drop_collection,
    drop_space,
    list_collections,
    list_spaces,
    put_embeddings,
    switch_space,
)
from .db import connect
from .errors import (
    ConfigError,
    DatabaseError,
    EncoderError,
    InputError,
    MMRError,
    NotFoundError,
    PluginError,
    ServerError,
    UnsupportedServerError,
)
from .search import Hit, explain_search, search
from .spec import CollectionSpec, SpaceSpec

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "CollectionSpec",
    "ConfigError",
    "DatabaseError",
    "EncoderError",
    "Hit",
    "InputError",
    "MMRError",
    "NotFoundError",
    "PluginError",
    "ServerError",
    "SpaceSpec",
    "UnsupportedServerError",
    "__version__",
    "add_space",
    "connect",
    "connect_async",
    "create_collection",
    "drop_collection",
    "drop_space",
    "explain_search",
    "list_collections",
    "list_spaces",
    "put_embeddings",
    "search",
    "switch_space",
]
