"""The statement memo (native/memo.c, mmr._memo_get / mmr._memo_put).

The filtered fast path's planner (mmr._search_exec_plan's second branch, mmr._filtered_statement
on a miss) keeps the filter's decision and the statement's text it built for the session, by a
key naming what they depend on, so that a filtered search does not rebuild its statement text
on every call (0.2 ms of a 1.5 ms search, docs/retrieval.md).  What must hold: an entry is the
current user's only (a role can never make another role's search, e.g. a SECURITY DEFINER
function's, run SQL it wrote); every relation cache or pg_proc invalidation (DDL, ANALYZE,
VACUUM, an upgrade) forgets every entry, and a value built before an invalidation is never
kept; searches follow DDL and new statistics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import Vector
from psycopg.types.json import Jsonb

import pg_mmretrieval as mmr

from .helpers import unit_vectors

Conn = psycopg.Connection[Any]
N, D = 1000, 16
PLANNER = (
    "SELECT planning, ef_search, sql FROM mmr._search_exec_plan("
    "'memo_items', 'ext', %s, 10, %s, NULL, NULL, NULL, NULL, NULL)"
)
SEARCH = "SELECT * FROM mmr.search('memo_items', 'ext', %s, 10, %s)"


@pytest.fixture(scope="module")
def vecs() -> np.ndarray[Any, Any]:
    return unit_vectors(N, D, seed=51)


@pytest.fixture(scope="module")
def items(db_url: str, vecs: np.ndarray[Any, Any]) -> str:
    with mmr.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT mmr._native_unavailable()").fetchone() == (None,)
        conn.execute("CREATE TABLE memo_items (id int PRIMARY KEY, price int)")
        conn.execute(
            "INSERT INTO memo_items SELECT g, g %% 100 FROM generate_series(1, %s) g", (N,)
        )
        conn.execute("CREATE INDEX ON memo_items (price)")
        mmr.create_collection(conn, "memo_items", "memo_items")
        mmr.add_space(conn, "memo_items", "ext", "external", None, D, hnsw_m=8)
        mmr.put_embeddings(conn, "memo_items", "ext", list(range(1, N + 1)), vecs)
        conn.execute("ANALYZE memo_items")
    return "memo_items"


@pytest.fixture()
def role(conn: Conn) -> Iterator[str]:
    name = f"memo_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name}")
    conn.execute(f"GRANT USAGE ON SCHEMA mmr TO {name}")
    yield name
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def test_an_entry_is_its_users_only(conn: Conn, role: str) -> None:
    """Within one transaction (no invalidation is read between statements that lock nothing):
    what one user put, another user does not get, and cannot overwrite."""
    with conn.transaction():
        row = conn.execute(
            "SELECT mmr._memo_get('k'), mmr._memo_put('k', 'mine'), mmr._memo_get('k')"
        ).fetchone()
        assert row == (None, "mine", "mine")
        conn.execute(f"SET LOCAL ROLE {role}")
        row = conn.execute(
            "SELECT mmr._memo_get('k'), mmr._memo_put('k', 'forged'), mmr._memo_get('k')"
        ).fetchone()
        assert row == (None, "forged", "forged")  # the role's own entry
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT mmr._memo_get('k')").fetchone() == ("mine",)


def test_a_value_is_kept_only_after_its_miss_and_until_an_invalidation(conn: Conn) -> None:
    with conn.transaction():
        # a put without its key's miss just before is not kept
        row = conn.execute("SELECT mmr._memo_put('k2', 'v'), mmr._memo_get('k2')").fetchone()
        assert row == ("v", None)
        # a miss, then an invalidation (this transaction's own DDL), then the put: not kept
        assert conn.execute("SELECT mmr._memo_get('k3')").fetchone() == (None,)
        conn.execute("CREATE TEMP TABLE memo_inval (x int)")
        row = conn.execute("SELECT mmr._memo_put('k3', 'v'), mmr._memo_get('k3')").fetchone()
        assert row == ("v", None)
        # kept, then forgotten by the next invalidation
        row = conn.execute(
            "SELECT mmr._memo_get('k4'), mmr._memo_put('k4', 'v'), mmr._memo_get('k4')"
        ).fetchone()
        assert row == (None, "v", "v")
        conn.execute("ALTER TABLE memo_inval ADD COLUMN y int")
        assert conn.execute("SELECT mmr._memo_get('k4')").fetchone() == (None,)


def test_at_most_64_entries_the_oldest_replaced(conn: Conn) -> None:
    with conn.transaction():
        for i in range(65):
            conn.execute(
                "SELECT mmr._memo_get(%s), mmr._memo_put(%s, %s)", (f"e{i}", f"e{i}", str(i))
            )
        got = conn.execute(
            "SELECT mmr._memo_get('e0'), mmr._memo_get('e1'), mmr._memo_get('e64')"
        ).fetchone()
        assert got == (None, "1", "64")


def test_the_plpgsql_binding_memoizes_nothing(db_url: str, conn: Conn) -> None:
    conn.execute("SELECT mmr._bind_search(false)")
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT mmr._memo_get('p'), mmr._memo_put('p', 'v'), mmr._memo_get('p')"
            ).fetchone()
            assert row == (None, "v", None)
    finally:
        conn.execute("SELECT mmr._bind_search(true)")


def test_the_planner_follows_ddl(conn: Conn, items: str, vecs: np.ndarray[Any, Any]) -> None:
    """A renamed column: the memoized statement (which names the old column) is forgotten, and
    the call gets the general path's error for the old name and a plan for the new one."""
    q = Vector(vecs[0])
    old, new = {"price": {"<": 50}}, {"cost": {"<": 50}}
    (_, _, text) = conn.execute(PLANNER, (q, Jsonb(old))).fetchone() or (None, None, "")
    assert "s.price" in text
    assert conn.execute(PLANNER, (q, Jsonb(old))).fetchone()[2] == text  # type: ignore[index]
    conn.execute("ALTER TABLE memo_items RENAME COLUMN price TO cost")
    try:
        assert conn.execute(PLANNER, (q, Jsonb(old))).fetchall() == []  # the general path's
        with pytest.raises(psycopg.Error) as fast:
            conn.execute(SEARCH, (q, Jsonb(old)))
        conn.execute("SET mmr.fast_path = off")
        with pytest.raises(psycopg.Error) as general:
            conn.execute(SEARCH, (q, Jsonb(old)))
        conn.execute("RESET mmr.fast_path")
        assert (fast.value.sqlstate, fast.value.diag.message_primary) == (
            general.value.sqlstate,
            general.value.diag.message_primary,
        )
        renamed = conn.execute(PLANNER, (q, Jsonb(new))).fetchone()
        assert renamed is not None and "s.cost" in renamed[2]
        hits = mmr.search(conn, items, "ext", vecs[0], 10, filter=new)
        assert len(hits) == 10 and all(h.key % 100 < 50 for h in hits)
    finally:
        conn.execute("RESET mmr.fast_path")
        conn.execute("ALTER TABLE memo_items RENAME COLUMN cost TO price")


def test_the_planners_decision_follows_new_statistics(
    conn: Conn, items: str, vecs: np.ndarray[Any, Any]
) -> None:
    """A filter 100 rows pass is scored exactly (threshold 600 at this size); after 20,000 more
    passing rows and ANALYZE, the same call in the same session takes the index plan."""
    q = Vector(vecs[1])
    flt = Jsonb({"price": 7})
    assert conn.execute(PLANNER, (q, flt)).fetchone()[0] == "custom"  # type: ignore[index]
    assert conn.execute(PLANNER, (q, flt)).fetchone()[0] == "custom"  # type: ignore[index]
    conn.execute(
        "INSERT INTO memo_items SELECT g, 7 FROM generate_series(%s::int, %s::int) g",
        (N + 1, N + 20000),
    )
    try:
        conn.execute("ANALYZE memo_items")
        assert conn.execute(PLANNER, (q, flt)).fetchone()[0] == "generic"  # type: ignore[index]
    finally:
        conn.execute("DELETE FROM memo_items WHERE id > %s", (N,))
        conn.execute("ANALYZE memo_items")


KEY_PLANNER = (
    "SELECT sql, rest_sql FROM mmr._composed_key_exec_plan('memo_pair', 'img', %s, %s, "
    "'weimocir', 5, %s, NULL, NULL, NULL, NULL, NULL, NULL)"
)
BY_KEY = "SELECT key, score FROM mmr.composed_search('memo_pair', 'img', %s, %s, 'weimocir', 5, %s)"
PAIR_KEY = (
    "SELECT format('weimocir_key %s %s %s %s ', s.id, s.xmin || ' ' || s.ctid, x.id, "
    "x.xmin || ' ' || x.ctid), x.embedding_table::text "
    "FROM mmr._space s, mmr._space x, mmr._collection c "
    "WHERE c.name = 'memo_pair' AND s.collection_id = c.id AND x.collection_id = c.id "
    "AND s.name = 'img' AND x.name = 'cap' AND s.active AND x.active"
)


@pytest.fixture(scope="module")
def pair(db_url: str, vecs: np.ndarray[Any, Any]) -> str:
    """A collection with an image space and a caption space (WeiMoCIR by key)."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE memo_pair (id int PRIMARY KEY)")
        conn.execute("INSERT INTO memo_pair SELECT generate_series(1, %s)", (N,))
        mmr.create_collection(conn, "memo_pair", "memo_pair")
        for name, v in (("img", vecs), ("cap", vecs[::-1].copy())):
            mmr.add_space(conn, "memo_pair", name, "external", None, D, hnsw_m=8)
            mmr.put_embeddings(conn, "memo_pair", name, list(range(1, N + 1)), v)
    return "memo_pair"


def test_the_weimocir_key_statement_follows_the_caption_space(
    conn: Conn, pair: str, vecs: np.ndarray[Any, Any]
) -> None:
    """WeiMoCIR by key: the by-key planner memoizes its statement's two texts by the two space
    rows' versions; a new version of the caption space switched to (a new row, a new embedding
    table) gets a statement on the new table, with the general path's rows."""
    a = (Jsonb(3), Vector(vecs[7]), Jsonb({"caption_space": "cap", "beta": 0.2}))
    key, table = conn.execute(PAIR_KEY).fetchone() or ("", "")
    # memoized (natively): the texts by the rows' versions (in one transaction: no other
    # session's invalidation, e.g. autovacuum's, is read between the statements)
    with conn.transaction():
        conn.execute("LOCK memo_pair")
        first = conn.execute(KEY_PLANNER, a).fetchone()
        got = conn.execute(
            "SELECT mmr._memo_get(%s), mmr._memo_get(%s)", (key + "checked", key + "plain")
        ).fetchone()
        assert first is not None and got == first
    assert table in first[0] and table in first[1]
    assert conn.execute(KEY_PLANNER, a).fetchone() == first
    mmr.add_space(conn, pair, "cap", "external", None, D, hnsw_m=8, new_version=True)
    mmr.switch_space(conn, pair, "cap")
    key2, table2 = conn.execute(PAIR_KEY).fetchone() or ("", "")
    conn.cursor().executemany(
        f"INSERT INTO {table2} (id, embedding, model_id) VALUES (%s, %s, 'external')",
        [(i + 1, Vector(v)) for i, v in enumerate(vecs)],
    )
    second = conn.execute(KEY_PLANNER, a).fetchone()
    assert key2 != key and table2 != table
    assert second is not None and table2 in second[0] and table not in second[0]
    fast = conn.execute(BY_KEY, a).fetchall()
    conn.execute("SET mmr.fast_path = off")
    try:
        general = conn.execute(BY_KEY, a).fetchall()
    finally:
        conn.execute("RESET mmr.fast_path")
    assert len(fast) == 5 and [r[0] for r in fast] == [r[0] for r in general]
    assert np.allclose([r[1] for r in fast], [r[1] for r in general], atol=1e-9)
