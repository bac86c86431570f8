"""Retrieval beyond plain vector search: kept for compatibility, a re-export of
:mod:`pg_mmretrieval.search`.

The code lives in the ``pg_mmretrieval.search`` package, by feature (``composed``, ``hybrid``,
``feedback``, ``multivector``, ``rerank``, ``statements``); every name this module offered
stays importable from here.  Two names differ from the package's: ``search`` here is
``mmr.search`` with a reranker (``pg_mmretrieval.search.reranked_search``), and
``register_reranker`` registers a SQL reranker (``register_sql_reranker``).  See
docs/retrieval.md.
"""

from __future__ import annotations

from .bases import QueryInfo, Reranker
from .search.composed import (
    COMPOSED_METHODS,
    basic_projection,
    composed_search,
    composed_statement,
    explain_composed,
    store_basic_projection,
)
from .search.feedback import dialog_search, diversify_search, mmr_search, rocchio_search
from .search.hybrid import (
    create_text_index,
    drop_text_index,
    explain_hybrid,
    fuse,
    hybrid_search,
    hybrid_statement,
)
from .search.multivector import add_multivector_space, multivector_search, put_multivectors
from .search.rerank import ContentScorer, RerankArg, plugin_reranker, register_python_reranker
from .search.rerank import register_sql_reranker as register_reranker
from .search.statements import SearchStatement, search, search_statement

# bench/search.py runs statements with ``retrieval._run`` (kept so that the same script also
# measures checkouts from before the search/ package).
from .search.statements import run  # isort: skip

_run = run

__all__ = [
    "COMPOSED_METHODS",
    "ContentScorer",
    "QueryInfo",
    "RerankArg",
    "Reranker",
    "SearchStatement",
    "add_multivector_space",
    "basic_projection",
    "composed_search",
    "composed_statement",
    "create_text_index",
    "dialog_search",
    "diversify_search",
    "drop_text_index",
    "explain_composed",
    "explain_hybrid",
    "fuse",
    "hybrid_search",
    "hybrid_statement",
    "mmr_search",
    "multivector_search",
    "plugin_reranker",
    "put_multivectors",
    "register_python_reranker",
    "register_reranker",
    "rocchio_search",
    "search",
    "search_statement",
    "store_basic_projection",
]
