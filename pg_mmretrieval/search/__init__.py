"""Search from Python: thin typed wrappers over the SQL search functions, by feature.

* :mod:`.plain`: ``search`` (``mmr.search``), ``search_batch``, ``explain_search``,
  ``filter_advice`` and the result type :class:`Hit`;
* :mod:`.statements`: :class:`SearchStatement` (a search built once, run by the sync
  functions and the async client) and ``reranked_search`` (``mmr.search`` with ``rerank=``);
* :mod:`.rerank`: the resolver of ``rerank=`` (SQL, Python or plugin reranker, or a function);
* :mod:`.composed`: composed queries and BASIC projections (``COMPOSED_METHODS``);
* :mod:`.hybrid`: hybrid lexical + vector search, fusion, the lexical index;
* :mod:`.feedback`: Rocchio feedback, MMR diversification (``diversify_search``), dialog;
* :mod:`.multivector`: multi-vector spaces and MaxSim search.

``pg_mmretrieval.retrieval`` re-exports the same functions under their historical names.

The attribute ``pg_mmretrieval.search`` is the search *function* (``mmr.search(conn, ...)``), so
reach the submodules with from-imports (``from pg_mmretrieval.search import composed`` or
``from pg_mmretrieval.search.composed import composed_search``), not with
``import pg_mmretrieval.search.composed as c``.
"""

from __future__ import annotations

from .composed import (
    COMPOSED_METHODS,
    basic_projection,
    composed_search,
    composed_statement,
    explain_composed,
    store_basic_projection,
)
from .feedback import dialog_search, diversify_search, mmr_search, rocchio_search
from .hybrid import (
    create_text_index,
    drop_text_index,
    explain_hybrid,
    fuse,
    hybrid_search,
    hybrid_statement,
)
from .multivector import add_multivector_space, multivector_search, put_multivectors
from .plain import (
    SEARCH_BATCH_SQL,
    Hit,
    batch_hits,
    batch_params,
    explain_search,
    filter_advice,
    search,
    search_batch,
)
from .rerank import (
    RerankArg,
    plugin_reranker,
    register_sql_reranker,
    resolve_rerank,
)
from .statements import SearchStatement, search_statement
from .statements import search as reranked_search

__all__ = [
    "COMPOSED_METHODS",
    "SEARCH_BATCH_SQL",
    "Hit",
    "RerankArg",
    "SearchStatement",
    "add_multivector_space",
    "basic_projection",
    "batch_hits",
    "batch_params",
    "composed_search",
    "composed_statement",
    "create_text_index",
    "dialog_search",
    "diversify_search",
    "drop_text_index",
    "explain_composed",
    "explain_hybrid",
    "explain_search",
    "filter_advice",
    "fuse",
    "hybrid_search",
    "hybrid_statement",
    "mmr_search",
    "multivector_search",
    "plugin_reranker",
    "put_multivectors",
    "register_sql_reranker",
    "reranked_search",
    "resolve_rerank",
    "rocchio_search",
    "search",
    "search_batch",
    "search_statement",
    "store_basic_projection",
]
