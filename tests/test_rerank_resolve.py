"""One Python reranker type and one resolver of ``rerank=`` (issue 14, item 3).

Without a database: what :func:`resolve_rerank` makes of each kind of argument (the SQL
registry's answer is its second argument); the searches that apply them are tested against
the database in tests/test_retrieval_sql.py and tests/test_client_async_search.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pg_mmretrieval import registry, retrieval
from pg_mmretrieval.bases import FunctionReranker, QueryInfo, Reranker
from pg_mmretrieval.cli.search_cmd import search as search_command
from pg_mmretrieval.errors import InputError
from pg_mmretrieval.rerankers import register_reranker
from pg_mmretrieval.search import COMPOSED_METHODS, Hit
from pg_mmretrieval.search.rerank import resolve_rerank

INFO = QueryInfo("c", "s", "search")
HITS = [Hit(1, 0.9), Hit(2, 0.8), Hit(3, 0.7)]


class _Content(Reranker):
    name = "test-resolve-content"

    def score(self, query: Any, candidates: Any) -> list[float]:
        return [float(len(str(c))) for c in candidates]


class _Reverse(Reranker):
    name = "test-resolve-reverse"

    def rerank(self, query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
        return list(reversed(candidates))


def _by_key_desc(query: QueryInfo, candidates: list[Hit]) -> list[Hit]:
    return sorted(candidates, key=lambda h: -h.key)


@pytest.fixture()
def registered() -> Iterator[None]:
    register_reranker(_Content())
    register_reranker(_Reverse())
    try:
        yield
    finally:
        registry.reset()


def test_one_reranker_type_everywhere() -> None:
    from pg_mmretrieval import rerankers

    assert retrieval.Reranker is rerankers.Reranker is Reranker
    assert retrieval.ContentScorer is Reranker
    assert retrieval.QueryInfo is rerankers.QueryInfo is QueryInfo


def test_kinds_of_reranker() -> None:
    assert _Content().scores_content
    assert not _Reverse().scores_content
    assert not FunctionReranker(_by_key_desc).scores_content
    assert FunctionReranker(_by_key_desc).name == "_by_key_desc"
    assert FunctionReranker(_by_key_desc).rerank(INFO, HITS) == HITS[::-1]


def test_resolve_each_kind(registered: None) -> None:
    assert resolve_rerank(None, False) == (None, None)
    assert resolve_rerank("sql-one", True) == ("sql-one", None)
    sql, rev = resolve_rerank("test-resolve-reverse", False)
    assert sql is None and isinstance(rev, _Reverse)
    _, content = resolve_rerank("test-resolve-content", False)
    assert isinstance(content, _Content)
    instance = _Reverse()
    assert resolve_rerank(instance, False) == (None, instance)
    _, fn = resolve_rerank(_by_key_desc, False)
    assert isinstance(fn, FunctionReranker) and fn.fn is _by_key_desc
    with pytest.raises(InputError, match="no reranker named 'nope'"):
        resolve_rerank("nope", False)


def test_sql_name_wins_over_a_python_one(registered: None) -> None:
    assert resolve_rerank("test-resolve-reverse", True) == ("test-resolve-reverse", None)


def test_what_the_clients_apply(registered: None) -> None:
    """(SQL name, reranker): a SQL name runs in the statement; otherwise the clients call
    ``reranker.rerank`` or, for a content reranker, score the fetched contents."""
    assert resolve_rerank("x", True) == ("x", None)
    name, fn = resolve_rerank(_by_key_desc, False)
    assert name is None and fn is not None and not fn.scores_content
    assert fn.rerank(INFO, HITS) == sorted(HITS, key=lambda h: h.key, reverse=True)
    _, fn = resolve_rerank("test-resolve-reverse", False)
    assert fn is not None and not fn.scores_content and fn.rerank(INFO, HITS) == HITS[::-1]
    _, content = resolve_rerank("test-resolve-content", False)
    assert isinstance(content, _Content) and content.scores_content


def test_deprecated_register_python_reranker() -> None:
    try:
        with pytest.warns(DeprecationWarning, match="register_python_reranker"):
            retrieval.register_python_reranker("test-resolve-old", _by_key_desc)
        _, found = resolve_rerank("test-resolve-old", False)
        assert found is not None and found.rerank(INFO, HITS) == HITS[::-1]
    finally:
        registry.reset()


def test_hand_registered_reranker_survives_plugin_loading() -> None:
    """A reranker registered by hand before the plugins load is kept (it is no duplicate)."""
    registry.reset()
    try:
        register_reranker(_Reverse())
        assert isinstance(registry.get_reranker("test-resolve-reverse"), _Reverse)
    finally:
        registry.reset()


def test_cli_methods_are_the_python_list() -> None:
    method = next(p for p in search_command.params if p.name == "method")
    assert tuple(method.type.choices) == COMPOSED_METHODS  # type: ignore[attr-defined]


def test_hand_registered_encoder_wins_over_a_plugins() -> None:
    """An encoder registered by hand under a plugin's name is kept, and not credited to it."""
    from pg_mmretrieval.bases import Encoder

    class Mine(Encoder):
        name = "mmr-test"  # the name builtin_test_encoders registers
        dimension = 3

    registry.reset()
    try:
        mine = Mine()
        registry.register_encoder(mine)
        assert registry.get_encoder("mmr-test") is mine
        assert "mmr-test" not in registry.encoder_origins()
    finally:
        registry.reset()
