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
from .encoders import Encoder, get_encoder, list_encoders
from .errors import (
    ConfigError,
    DatabaseError,
    EncoderError,
    InputError,
    LoadError,
    MMRError,
    NotFoundError,
    Permanent,
    PermanentLoadError,
    PluginError,
    Retryable,
    RetryableLoadError,
    ServerError,
    UnsupportedServerError,
)
from .search import Hit, explain_search, filter_advice, search
from .spec import CollectionSpec, SpaceSpec

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "CollectionSpec",
    "ConfigError",
    "DatabaseError",
    "Encoder",
    "EncoderError",
    "Hit",
    "InputError",
    "LoadError",
    "MMRError",
    "NotFoundError",
    "Permanent",
    "PermanentLoadError",
    "PluginError",
    "Retryable",
    "RetryableLoadError",
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
    "filter_advice",
    "get_encoder",
    "list_collections",
    "list_encoders",
    "list_spaces",
    "put_embeddings",
    "search",
    "switch_space",
]
