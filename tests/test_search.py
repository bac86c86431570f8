"""mmr.search: nearest rows, HNSW plans, filters that still return k rows, bad queries."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval.errors import InputError, NotFoundError

from .helpers import plan_nodes, unit_vectors, uses_hnsw

N, D = 4000, 16


@pytest.fixture(scope="module")
def vecs() -> np.ndarray[Any, Any]:
    return unit_vectors(N, D, seed=1)


@pytest.fixture(scope="module")
def items(db_url: str, vecs: np.ndarray[Any, Any]) -> str:
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, caption text, category text, price int)"
        )
        conn.execute(
            "INSERT INTO items SELECT g, 'item ' || g, CASE WHEN g %% 100 = 0 THEN 'rare' "
            "ELSE 'common' END, g %% 100 FROM generate_series(1, %s) g",
            (N,),
        )
        mmr.create_collection(conn, "items", "items", text_columns=["caption"])
        # smaller graphs keep inserting 2 x 4000 rows quick on a 2-core machine
        small = {"hnsw_m": 8, "hnsw_ef_construction": 32}
        mmr.add_space(conn, "items", "ext", "external", None, D, **small)
        mmr.add_space(conn, "items", "half", "external", None, D, storage="halfvec", **small)
        keys = list(range(1, N + 1))
        mmr.put_embeddings(conn, "items", "ext", keys, vecs)
        mmr.put_embeddings(conn, "items", "half", keys, vecs)
        conn.execute("ANALYZE items")
        conn.execute("ANALYZE mmr._emb_1; ANALYZE mmr._emb_2")
    return "items"


def _exact(
    vecs: np.ndarray[Any, Any], q: np.ndarray[Any, Any], k: int, mask: Any = None
) -> list[int]:
    sims = vecs @ q
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
    return [int(i) + 1 for i in np.argsort(-sims)[:k]]


def test_search_finds_the_query_row_first_with_cosine_score(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    hits = mmr.search(conn, items, "ext", vecs[123], k=10)
    assert hits[0].key == 124 and abs(hits[0].score - 1.0) < 1e-5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    exact = _exact(vecs, vecs[123], 10)
    assert len(set(h.key for h in hits) & set(exact)) >= 8  # HNSW recall at default ef


def test_search_uses_the_hnsw_index_with_and_without_filter(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    for space in ("ext", "half"):
        assert uses_hnsw(mmr.explain_search(conn, items, space, vecs[0], 10))
        # a filter most rows pass keeps the index (iterative scan); a very selective one may
        # get an exact plan over the few matching rows, which is the faster correct choice
        assert uses_hnsw(
            mmr.explain_search(conn, items, space, vecs[0], 10, filter={"price": {"<": 90}})
        )


def test_selective_filter_still_returns_k_rows(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    # 'rare' matches 1 % of rows: a plain post-filtered HNSW scan (ef_search 40) would
    # return about 0.4 rows; iterative scans (or an exact plan, when the planner prefers it)
    # keep going until k rows pass.
    for qi in range(5):
        hits = mmr.search(conn, items, "ext", vecs[qi], k=10, filter={"category": "rare"})
        assert len(hits) == 10
        assert all(h.key % 100 == 0 for h in hits)
        mask = np.array([(i + 1) % 100 == 0 for i in range(N)])
        assert len(set(h.key for h in hits) & set(_exact(vecs, vecs[qi], 10, mask))) >= 8
    # every operator of the filter language
    hits = mmr.search(
        conn,
        items,
        "ext",
        vecs[7],
        k=20,
        filter={"price": {">=": 10, "<": 20}, "id": {"not_in": [8]}, "caption": {"is_null": False}},
    )
    assert len(hits) == 20 and all(10 <= h.key % 100 < 20 and h.key != 8 for h in hits)
    hits = mmr.search(conn, items, "ext", vecs[7], k=5, filter={"id": {"in": [1, 2, 3]}})
    assert sorted(h.key for h in hits) == [1, 2, 3]


def test_large_k_raises_ef_search_so_k_rows_come_back(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    hits = mmr.search(conn, items, "ext", vecs[5], k=500)
    assert len(hits) == 500 and len({h.key for h in hits}) == 500
    # settings do not leak out of the call
    conn.execute("SET hnsw.ef_search = 77")
    mmr.search(conn, items, "ext", vecs[5], k=200)
    assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("77",)


def test_search_joins_with_the_users_table(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    rows = conn.execute(
        "SELECT i.id, i.caption, s.score FROM mmr.search('items', 'ext', %s::vector, 3) s "
        "JOIN items i ON i.id = s.key::int ORDER BY s.score DESC",
        (str(vecs[42].tolist()),),
    ).fetchall()
    assert rows[0][:2] == (43, "item 43")


def test_halfvec_space_matches_vector_space(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    a = [h.key for h in mmr.search(conn, items, "ext", vecs[9], k=5, ef_search=200)]
    b = [h.key for h in mmr.search(conn, items, "half", vecs[9], k=5, ef_search=200)]
    assert a[0] == b[0] == 10
    assert len(set(a) & set(b)) >= 4


def test_bad_queries_get_clear_errors(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    q = vecs[0]
    with pytest.raises(NotFoundError, match="collection 'nope' does not exist"):
        mmr.search(conn, "nope", "ext", q)
    with pytest.raises(NotFoundError, match="Spaces of this collection"):
        mmr.search(conn, items, "nope", q)
    with pytest.raises(InputError, match="has 3 dimensions, but the space has 16"):
        mmr.search(conn, items, "ext", [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="zero vector"):
        mmr.search(conn, items, "ext", np.zeros(D))
    for k in (0, -1, 1001, 10**9):
        with pytest.raises(InputError, match="k must be between 1 and 1000"):
            mmr.search(conn, items, "ext", q, k=k)
    with pytest.raises(InputError, match="ef_search"):
        mmr.search(conn, items, "ext", q, ef_search=5000)
    for flt, msg in [
        ({"nope": 1}, "does not have"),
        ({"price": {"~": 1}}, "unknown operator"),
        ({"price": {"in": 3}}, "needs an array"),
        ({"price": {"<": [1]}}, "scalar"),
    ]:
        with pytest.raises(InputError, match=msg):
            mmr.search(conn, items, "ext", q, filter=flt)
    with pytest.raises(InputError):  # a value that is not of the column's type
        mmr.search(conn, items, "ext", q, filter={"price": "cheap"})
    for bad in ("[NaN,1]", "[Infinity,1]"):
        with pytest.raises(psycopg.errors.DataException):
            conn.execute("SELECT * FROM mmr.search('items', 'ext', %s::vector)", (bad,))


def test_plan_has_a_limit_over_the_index_scan(
    conn: psycopg.Connection[Any], items: str, vecs: np.ndarray[Any, Any]
) -> None:
    nodes = plan_nodes(mmr.explain_search(conn, items, "ext", vecs[0], 10))
    assert nodes[0]["Node Type"] == "Limit"
    analyzed = mmr.explain_search(conn, items, "ext", vecs[0], 10, analyze=True)
    assert plan_nodes(analyzed)[0]["Actual Rows"] == 10
