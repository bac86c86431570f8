"""Python rerankers: the base class and the registry (filled by ``register_rerankers``).

The one reranker type is :class:`~pg_mmretrieval.bases.Reranker` (a content reranker
implements ``score``, another ``rerank``); a function ``(QueryInfo, hits) -> hits`` becomes
one with :class:`~pg_mmretrieval.bases.FunctionReranker`.  Searches take a ``rerank=``
argument resolved by :func:`pg_mmretrieval.search.rerank.resolve_rerank`.
"""

from __future__ import annotations

from .bases import FunctionReranker, QueryInfo, Reranker, RerankFunction
from .registry import _RERANKERS as _REGISTRY  # noqa: F401  (kept for code that reached in)
from .registry import get_reranker, list_rerankers, register_reranker

__all__ = [
    "FunctionReranker",
    "QueryInfo",
    "RerankFunction",
    "Reranker",
    "get_reranker",
    "list_rerankers",
    "register_reranker",
]
