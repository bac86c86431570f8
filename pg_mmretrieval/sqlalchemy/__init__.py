"""SQLAlchemy 2.0 helpers: declare collections on mapped classes, query nearest rows.

Importing this package installs an engine event that applies the HNSW scan settings carried
by statements from :func:`nearest` (see :mod:`pg_mmretrieval.sqlalchemy.hnsw`).
"""

from __future__ import annotations

from pgvector.sqlalchemy import HALFVEC, VECTOR

from ..spec import SpaceSpec
from .collection import Collection, collection_of, register, unregister
from .hnsw import hnsw_options
from .query import distance, embed, nearest, ranked, score, search

__all__ = [
    "HALFVEC",
    "VECTOR",
    "Collection",
    "SpaceSpec",
    "collection_of",
    "distance",
    "embed",
    "hnsw_options",
    "nearest",
    "ranked",
    "register",
    "score",
    "search",
    "unregister",
]
