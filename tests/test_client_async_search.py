"""Composed and hybrid search and rerankers on both clients: the async client runs the same
statements as the sync client and ``pg_mmretrieval.retrieval``, so their results are equal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import AsyncClient, Client, SpaceSpec, retrieval
from pg_mmretrieval import rerankers as plugin_rerankers
from pg_mmretrieval.client import AsyncCollection, Collection
from pg_mmretrieval.search import Hit

N = 60
D = 8
COLOURS = ("red", "blue", "green")
SHAPES = ("circle", "square", "triangle")


def _unit(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    x = rng.standard_normal((n, D)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


RNG = np.random.default_rng(20261126)
IMG = _unit(RNG, N)  # the "image" space
CAP = _unit(RNG, N)  # the "caption" space
QUERY = _unit(RNG, 3)


def _caption(i: int) -> str:
    return f"a {COLOURS[i % 3]} {SHAPES[(i // 3) % 3]} number {i}"


@pytest.fixture(scope="module")
def client(db_url: str) -> Iterator[Client]:
    with Client(db_url) as c:
        c.conn.execute("CREATE TABLE things (id int PRIMARY KEY, caption text)")
        things = c.create_collection(
            "things",
            "things",
            text_columns=["caption"],
            spaces=[
                SpaceSpec("img", "external", dimensions=D),
                SpaceSpec("cap", "external", dimensions=D),
            ],
        )
        keys = things.insert([{"id": i, "caption": _caption(i)} for i in range(N)])
        things.put_embeddings("img", keys, list(IMG))
        things.put_embeddings("cap", keys, list(CAP))
        retrieval.create_text_index(c.conn, "things")
        yield c


def _both(
    client: Client,
    db_url: str,
    run: Callable[[Collection | AsyncCollection], list[Hit] | Awaitable[list[Hit]]],
) -> tuple[list[Hit], list[Hit]]:
    """(sync client's hits, async client's hits) of the same call."""
    sync_hits = run(client.collection("things"))
    assert isinstance(sync_hits, list)

    async def main() -> list[Hit]:
        async with await AsyncClient.connect(db_url) as ac:
            got = run(await ac.collection("things"))
            assert not isinstance(got, list)
            return await got

    return sync_hits, asyncio.run(main())


def _keys(hits: list[Hit]) -> list[Any]:
    return [h.key for h in hits]


def _same(*runs: list[Hit]) -> None:
    first = runs[0]
    assert first, "no hits"
    for other in runs[1:]:
        assert _keys(other) == _keys(first)
        assert [h.score for h in other] == pytest.approx([h.score for h in first], abs=1e-9)


def test_composed_search_with_a_vector_reference(client: Client, db_url: str) -> None:
    ref = IMG[5] * 0.9 + QUERY[0] * 0.1
    ref, mod = ref / np.linalg.norm(ref), CAP[17]
    expected = retrieval.composed_search(
        client.conn, "things", "img", ref, mod, method="weighted", k=7, params={"alpha": 0.5}
    )
    sync_hits, async_hits = _both(
        client,
        db_url,
        lambda c: c.composed_search("img", ref, mod, method="weighted", k=7, params={"alpha": 0.5}),
    )
    _same(expected, sync_hits, async_hits)
    # the weighted fusion: (1 - alpha) * ref + alpha * mod, cosine against the image space
    q = 0.5 * ref + 0.5 * mod
    assert _keys(expected) == [int(i) for i in np.argsort(-(IMG @ q))[:7]]


def test_composed_search_with_a_stored_reference(client: Client, db_url: str) -> None:
    expected = retrieval.composed_search(
        client.conn, "things", "img", None, CAP[3], reference_key=11, k=6
    )
    sync_hits, async_hits = _both(
        client, db_url, lambda c: c.composed_search("img", modifier=CAP[3], reference_key=11, k=6)
    )
    _same(expected, sync_hits, async_hits)
    assert 11 not in _keys(expected) and len(expected) == 6
    kept = _both(
        client,
        db_url,
        lambda c: c.composed_search(
            "img", modifier=CAP[11], reference_key=11, k=3, params={"exclude_reference": False}
        ),
    )
    _same(*kept)
    assert kept[1][0].key == 11


def test_composed_search_needs_one_reference(client: Client, db_url: str) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(db_url) as ac:
            things = await ac.collection("things")
            with pytest.raises(mmr.InputError, match="exactly one of reference"):
                await things.composed_search("img", IMG[1], CAP[1], reference_key=1)
            with pytest.raises(mmr.InputError, match="unknown method"):
                await things.composed_search("img", IMG[1], CAP[1], method="nope")

    asyncio.run(main())


def test_hybrid_search(client: Client, db_url: str) -> None:
    legs = [("img", QUERY[1]), ("cap", QUERY[2])]
    expected = retrieval.hybrid_search(client.conn, "things", "red square", legs, k=10)
    sync_hits, async_hits = _both(
        client, db_url, lambda c: c.hybrid_search("red square", legs, k=10)
    )
    _same(expected, sync_hits, async_hits)
    # the lexical leg counts: every "red square" row is ranked by it and RRF lifts them
    red_squares = {i for i in range(N) if i % 3 == 0 and (i // 3) % 3 == 1}
    lexical = _both(client, db_url, lambda c: c.hybrid_search("red square", k=len(red_squares)))
    _same(*lexical)
    assert set(_keys(lexical[1])) == red_squares
    assert red_squares & set(_keys(async_hits))
    # a leg given as a vector, with weights and combsum, still equal
    weighted = _both(
        client,
        db_url,
        lambda c: c.hybrid_search(
            "blue", legs[:1], k=5, fusion="combsum", weights=[0.3, 0.7], filter={"id": {"<": 40}}
        ),
    )
    _same(*weighted)
    assert all(h.key < 40 for h in weighted[1])


def test_sql_reranker_by_name(client: Client, db_url: str) -> None:
    q = QUERY[0]
    exact = [int(i) for i in np.argsort(-(IMG @ q))[:5]]
    expected = retrieval.search(client.conn, "things", "img", q, 5, rerank="exact")
    sync_hits, async_hits = _both(
        client, db_url, lambda c: c.search("img", q, k=5, rerank="exact", rerank_depth=30)
    )
    _same(expected, sync_hits, async_hits)
    assert _keys(async_hits) == exact
    comp = _both(
        client,
        db_url,
        lambda c: c.composed_search("img", IMG[2], CAP[8], k=4, rerank="exact", rerank_depth=20),
    )
    _same(
        retrieval.composed_search(
            client.conn, "things", "img", IMG[2], CAP[8], k=4, rerank="exact", rerank_depth=20
        ),
        *comp,
    )
    hyb = _both(
        client,
        db_url,
        lambda c: c.hybrid_search("green", [("cap", q)], k=4, rerank="exact", rerank_depth=20),
    )
    _same(
        retrieval.hybrid_search(
            client.conn, "things", "green", [("cap", q)], k=4, rerank="exact", rerank_depth=20
        ),
        *hyb,
    )


def _by_key(query: retrieval.QueryInfo, cands: list[Hit]) -> list[Hit]:
    """A Python reranker: the candidates in key order, scored by their rank."""
    assert query.collection == "things"
    return [Hit(h.key, -float(i)) for i, h in enumerate(sorted(cands, key=lambda h: h.key))]


def test_python_reranker(client: Client, db_url: str) -> None:
    q = QUERY[1]
    depth = retrieval.search(client.conn, "things", "img", q, 25)
    sync_hits, async_hits = _both(
        client, db_url, lambda c: c.search("img", q, k=4, rerank=_by_key, rerank_depth=25)
    )
    _same(sync_hits, async_hits)
    assert _keys(async_hits) == sorted(_keys(depth))[:4]
    plugin_rerankers.register_reranker(plugin_rerankers.FunctionReranker(_by_key, "test-by-key"))
    comp = _both(
        client,
        db_url,
        lambda c: c.composed_search(
            "img", modifier=CAP[4], reference_key=4, k=3, rerank="test-by-key", rerank_depth=15
        ),
    )
    _same(
        retrieval.composed_search(
            client.conn,
            "things",
            "img",
            None,
            CAP[4],
            reference_key=4,
            k=3,
            rerank=_by_key,
            rerank_depth=15,
        ),
        *comp,
    )
    hyb = _both(
        client,
        db_url,
        lambda c: c.hybrid_search("circle", [("img", q)], k=5, rerank=_by_key, rerank_depth=12),
    )
    _same(
        retrieval.hybrid_search(
            client.conn, "things", "circle", [("img", q)], k=5, rerank=_by_key, rerank_depth=12
        ),
        *hyb,
    )
    assert _keys(hyb[1]) == sorted(_keys(hyb[1]))


class _Mentions(plugin_rerankers.Reranker):
    """A plugin-style content reranker: 1 when the caption contains the query's words."""

    name = "test-mentions"

    def score(self, query: Any, candidates: Any) -> list[float]:
        return [float(all(w in str(c) for w in str(query).split())) for c in candidates]


def test_plugin_content_reranker(client: Client, db_url: str) -> None:
    plugin_rerankers.register_reranker(_Mentions())
    q = QUERY[2]
    depth = retrieval.search(client.conn, "things", "img", q, 30)
    args: dict[str, Any] = {
        "k": 3,
        "rerank": "test-mentions",
        "rerank_depth": 30,
        "query_item": "blue",
    }
    sync_hits, async_hits = _both(client, db_url, lambda c: c.search("img", q, **args))
    _same(retrieval.search(client.conn, "things", "img", q, **args), sync_hits, async_hits)
    blue = [h.key for h in depth if "blue" in _caption(h.key)]
    assert _keys(async_hits) == blue[:3]
    # a hybrid search's content reranker scores its query text
    hyb = _both(
        client,
        db_url,
        lambda c: c.hybrid_search(
            "green triangle", [("img", q)], k=3, rerank="test-mentions", rerank_depth=30
        ),
    )
    _same(*hyb)
    assert all("green triangle" in _caption(h.key) for h in hyb[1])

    async def missing_item() -> None:
        async with await AsyncClient.connect(db_url) as ac:
            things = await ac.collection("things")
            with pytest.raises(mmr.InputError, match="scores content"):
                await things.search("img", q, k=3, rerank="test-mentions")
            with pytest.raises(mmr.InputError, match="no reranker named"):
                await things.search("img", q, k=3, rerank="no-such-reranker")

    asyncio.run(missing_item())


def test_plain_search_unchanged(client: Client, db_url: str, conn: psycopg.Connection[Any]) -> None:
    q = QUERY[0]
    plain = mmr.search(conn, "things", "img", q, 6, filter={"id": {">=": 10}})
    sync_hits, async_hits = _both(
        client, db_url, lambda c: c.search("img", q, k=6, filter={"id": {">=": 10}})
    )
    _same(plain, sync_hits, async_hits)
