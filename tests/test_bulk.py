"""Bulk fills (issue 17, item 1) and batch queries (item 4).

A space version filled in bulk has no HNSW index while its rows are written; the index is built
once when the fill ends, in the transaction that makes the version searchable through it
(sql/idempotent/028-bulk.sql).  Real PostgreSQL + pgvector, the worker as ``mmr_worker``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import Vector

import pg_mmretrieval as mmr
from pg_mmretrieval.client import AsyncClient, Client
from pg_mmretrieval.search import search, search_batch
from pg_mmretrieval.worker import RetryPolicy, Worker, WorkerConfig

from .helpers import sqlstate, unit_vectors, uses_hnsw, worker_url

Conn = psycopg.Connection[Any]
BULK = 10_000  # mmr._bulk_min_rows()


def _index(conn: Conn, collection: str, space: str, version: int | None = None) -> Any:
    """(index oid, reltuples, bulk_fill) of a space version; oid None when it has no index."""
    row = conn.execute(
        "SELECT i.oid, i.reltuples, s.bulk_fill FROM mmr._space s "
        "JOIN mmr._collection c ON c.id = s.collection_id "
        "LEFT JOIN pg_class i ON i.relname = '_emb_' || s.id || '_hnsw' "
        "  AND i.relnamespace = 'mmr'::regnamespace "
        "WHERE c.name = %s AND s.name = %s AND (s.version = %s OR (%s::int IS NULL AND s.active))",
        (collection, space, version, version),
    ).fetchone()
    assert row is not None
    return row


def _drain(url: str) -> None:
    cfg = WorkerConfig(once=True, retry=RetryPolicy(max_attempts=5, base_s=0.05))
    Worker(worker_url(url), cfg).run()


@pytest.fixture(scope="module")
def ext(db_url: str) -> str:
    """Table `items` (id 0..11999) with external spaces added per test."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(0, %s) g", (BULK + 1999,)
        )
        mmr.create_collection(conn, "items", "items", text_columns=["body"])
    return db_url


def test_bulk_put_embeddings_builds_the_index_once(ext: str) -> None:
    """>= 10k rows into an empty space: the index is dropped, the rows written, the index built
    by CREATE INDEX over all of them (reltuples counts them: a live index reports none)."""
    vecs = unit_vectors(BULK + 2000, 32, seed=1)
    with mmr.connect(ext, autocommit=True) as conn:
        mmr.add_space(conn, "items", "bulk", "external", None, 32)
        before, tuples, filling = _index(conn, "items", "bulk")
        assert before is not None and not filling and tuples <= 0
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        n = mmr.put_embeddings(conn, "items", "bulk", list(range(BULK + 2000)), vecs)
        assert n == BULK + 2000
        assert notices == []  # no "index ... does not exist, skipping" from the fill's end
        after, tuples, filling = _index(conn, "items", "bulk")
        assert after is not None and after != before and not filling
        assert tuples == BULK + 2000
        q = vecs[17]
        hits = search(conn, "items", "bulk", q, 5)
        assert hits[0].key == 17
        plan = conn.execute(
            "SELECT mmr.explain_search('items', 'bulk', %s::vector, 5)", (Vector(q),)
        ).fetchone()
        assert plan is not None and uses_hnsw(plan[0])


def test_small_or_live_puts_stay_on_the_live_index(ext: str) -> None:
    """A trickle, and a large put into an active space that already has rows, write through
    the live index as before (its searches must stay fast)."""
    vecs = unit_vectors(BULK + 2000, 16, seed=2)
    with mmr.connect(ext, autocommit=True) as conn:
        mmr.add_space(conn, "items", "live", "external", None, 16)
        oid0 = _index(conn, "items", "live")[0]
        mmr.put_embeddings(conn, "items", "live", list(range(100)), vecs[:100])
        assert _index(conn, "items", "live")[0] == oid0
        mmr.put_embeddings(conn, "items", "live", list(range(BULK + 2000)), vecs)
        oid, _tuples, filling = _index(conn, "items", "live")
        assert oid == oid0 and not filling


def test_explicit_bulk_fill_in_chunks(ext: str) -> None:
    """begin_bulk_fill / finish_bulk_fill around a chunked load: no index in between (searches
    scan exactly and stay exact), one build at the end."""
    vecs = unit_vectors(3000, 16, seed=3)
    with mmr.connect(ext, autocommit=True) as conn:
        mmr.add_space(conn, "items", "chunks", "external", None, 16)
        assert conn.execute("SELECT mmr.begin_bulk_fill('items', 'chunks')").fetchone() == (True,)
        assert conn.execute("SELECT mmr.begin_bulk_fill('items', 'chunks')").fetchone() == (False,)
        for lo in range(0, 3000, 1000):
            mmr.put_embeddings(
                conn, "items", "chunks", list(range(lo, lo + 1000)), vecs[lo : lo + 1000]
            )
            assert _index(conn, "items", "chunks")[0] is None
            # during the fill: an exact scan over what is there
            q = vecs[5]
            got = [h.key for h in search(conn, "items", "chunks", q, 10)]
            sims = vecs[: lo + 1000] @ q
            assert got == [int(i) for i in np.argsort(-sims, kind="stable")[:10]]
        assert conn.execute("SELECT mmr.finish_bulk_fill('items', 'chunks')").fetchone() == (True,)
        oid, tuples, filling = _index(conn, "items", "chunks")
        assert oid is not None and tuples == 3000 and not filling
        assert conn.execute("SELECT mmr.finish_bulk_fill('items', 'chunks')").fetchone() == (False,)


def test_bulk_fill_functions_are_administrative(ext: str) -> None:
    with mmr.connect(ext, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS bulk_nobody")
        conn.execute("CREATE ROLE bulk_nobody")
        try:
            for f in (
                "mmr.begin_bulk_fill('items', 'bulk')",
                "mmr.finish_bulk_fill('items', 'bulk')",
                "mmr._worker_finish_fill(ARRAY[1])",
            ):
                with conn.transaction():
                    conn.execute("SET LOCAL ROLE bulk_nobody")
                    assert sqlstate(conn, f"SELECT {f}") == "42501", f
        finally:
            conn.execute("DROP ROLE bulk_nobody")


@pytest.fixture(scope="module")
def worked(db_url: str) -> str:
    """Table `docs` embedded by the test encoder (mmr-test, 32-d) into space tv, version 1."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 300) g")
        mmr.create_collection(conn, "docs", "docs", text_columns=["body"])
        mmr.add_space(conn, "docs", "tv", "mmr-test", "body", 32)
        assert _index(conn, "docs", "tv")[2] is False  # 300 rows: a trickle, indexed live
    _drain(db_url)
    return db_url


def test_shadow_version_fills_in_bulk_while_the_active_one_serves(worked: str) -> None:
    with mmr.connect(worked, autocommit=True) as conn:
        table = conn.execute(
            "SELECT embedding_table::text FROM mmr.spaces WHERE collection = 'docs' AND active"
        ).fetchone()
        assert table is not None
        q = conn.execute(f"SELECT e.embedding FROM {table[0]} e WHERE e.id = 7").fetchone()
        assert q is not None
        before = search(conn, "docs", "tv", q[0].to_numpy(), 5)
        assert before[0].key == 7
        mmr.add_space(conn, "docs", "tv", "mmr-test", "body", 32, new_version=True)
        oid, _t, filling = _index(conn, "docs", "tv", 2)
        assert oid is None and filling
        # searches keep answering from version 1, through its index
        assert search(conn, "docs", "tv", q[0].to_numpy(), 5) == before
    _drain(worked)  # the worker writes version 2 unindexed, then builds its index once
    with mmr.connect(worked, autocommit=True) as conn:
        oid, tuples, filling = _index(conn, "docs", "tv", 2)
        assert oid is not None and tuples == 300 and not filling
        mmr.switch_space(conn, "docs", "tv")
        assert search(conn, "docs", "tv", q[0].to_numpy(), 5)[0].key == 7


def test_switch_builds_the_index_and_flips_atomically(worked: str) -> None:
    """A version still in a bulk fill gets its index inside switch_space's transaction: another
    session sees either the old active version or the new one with its index, never between."""
    with mmr.connect(worked, autocommit=True) as conn:
        mmr.add_space(conn, "docs", "tv", "mmr-test", "body", 32, new_version=True)
    _drain(worked)
    with (
        mmr.connect(worked, autocommit=True) as conn,
        mmr.connect(worked, autocommit=True) as other,
    ):
        conn.execute("SELECT mmr.begin_bulk_fill('docs', 'tv', 3)")
        assert _index(other, "docs", "tv", 3)[0] is None
        with conn.transaction():
            conn.execute("SELECT mmr.switch_space('docs', 'tv', 3)")
            assert _index(conn, "docs", "tv", 3)[0] is not None
            # not committed: the other session still sees version 2 active, 3 unindexed
            assert _index(other, "docs", "tv")[0] == _index(other, "docs", "tv", 2)[0]
            assert _index(other, "docs", "tv", 3)[0] is None
            assert search(other, "docs", "tv", unit_vectors(1, 32)[0], 3)
        oid, tuples, filling = _index(other, "docs", "tv")
        assert oid == _index(other, "docs", "tv", 3)[0] and tuples == 300 and not filling


def test_new_space_with_a_large_backfill_fills_in_bulk(ext: str) -> None:
    """add_space queueing >= 10k rows: no index until the worker has drained the space; exact
    searches meanwhile; then one build over every row."""
    with mmr.connect(ext, autocommit=True) as conn:
        mmr.add_space(conn, "items", "tvb", "mmr-test", "body", 32)
        oid, _t, filling = _index(conn, "items", "tvb")
        assert oid is None and filling
        # a brand-new space answers by an exact scan during its fill (empty so far)
        assert search(conn, "items", "tvb", unit_vectors(1, 32)[0], 3) == []
    _drain(ext)
    with mmr.connect(ext, autocommit=True) as conn:
        oid, tuples, filling = _index(conn, "items", "tvb")
        assert oid is not None and tuples == BULK + 2000 and not filling
        report = conn.execute("SELECT * FROM mmr.check('items') WHERE space = 'tvb'").fetchall()
        assert report and all(r[6:11] == (0, 0, 0, 0, 0) for r in report), report


# -- batch queries ------------------------------------------------------------------------


def test_search_batch_equals_per_query_search(ext: str) -> None:
    rng = np.random.default_rng(11)
    vecs = unit_vectors(BULK + 2000, 32, seed=1)  # space `bulk` of the first test
    qs = [vecs[i] + 0.05 * rng.standard_normal(32).astype(np.float32) for i in range(25)]
    with mmr.connect(ext, autocommit=True) as conn:
        if _index(conn, "items", "bulk")[0] is None:
            pytest.skip("needs test_bulk_put_embeddings_builds_the_index_once")
        for k in (1, 10, 50):
            batch = search_batch(conn, "items", "bulk", qs, k)
            assert len(batch) == len(qs)
            for q, hits in zip(qs, batch, strict=True):
                one = search(conn, "items", "bulk", q, k)
                assert [h.key for h in hits] == [h.key for h in one]
                np.testing.assert_allclose(
                    [h.score for h in hits], [h.score for h in one], rtol=1e-6
                )
        rows = conn.execute(
            "SELECT query_index, rank FROM mmr.search_batch('items', 'bulk', %s::vector[], 3)",
            ([Vector(q) for q in qs[:2]],),
        ).fetchall()
        assert rows == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]


def test_search_batch_bounds_and_errors(ext: str) -> None:
    q = Vector(unit_vectors(1, 32)[0])
    with mmr.connect(ext, autocommit=True) as conn:
        call = "SELECT * FROM mmr.search_batch('items', 'bulk', %s::vector[], %s)"
        assert sqlstate(conn, call, ([q] * 1001, 1)) == "54000"
        assert sqlstate(conn, call, ([q] * 200, 1000)) == "54000"  # 200 x 1000 rows
        assert sqlstate(conn, call, ([], 10)) == "54000"
        assert sqlstate(conn, call, (None, 10)) == "22004"
        assert sqlstate(conn, call, ([q], 0)) == "22023"
        assert sqlstate(conn, call, ([q, Vector(np.ones(5, np.float32))], 10)) == "22000"
        with pytest.raises(psycopg.errors.DataException, match="query vector 2"):
            conn.execute(call, ([q, Vector(np.ones(5, np.float32))], 10))


def test_client_search_batch_sync_and_async(ext: str) -> None:
    vecs = unit_vectors(BULK + 2000, 32, seed=1)
    qs = [vecs[3], vecs[99]]
    with Client(ext) as client:
        hits = client.collection("items").search_batch("bulk", qs, k=4)
    assert [h[0].key for h in hits] == [3, 99] and all(len(h) == 4 for h in hits)

    async def run() -> list[list[Any]]:
        async with await AsyncClient.connect(ext) as ac:
            coll = await ac.collection("items")
            return await coll.search_batch("bulk", qs, k=4)

    assert asyncio.run(run()) == hits


def test_searches_answer_during_a_bulk_put(ext: str) -> None:
    """Replacing every row of an active space in one transaction takes the bulk path (the
    space is empty inside it): other sessions' searches never see it half done (they wait for
    the table's lock, then find every row through the new index)."""
    vecs = unit_vectors(BULK + 2000, 32, seed=4)
    with mmr.connect(ext, autocommit=True) as conn:
        mmr.add_space(conn, "items", "during", "external", None, 32, storage="bit")
        conn.execute("SELECT mmr.begin_bulk_fill('items', 'during')")
        mmr.put_embeddings(conn, "items", "during", list(range(50)), vecs[:50])
        conn.execute("SELECT mmr.finish_bulk_fill('items', 'during')")
    done = threading.Event()
    errors: list[BaseException] = []
    answered = [0]

    def searcher() -> None:
        try:
            with mmr.connect(ext, autocommit=True) as c:
                while not done.is_set():
                    hits = search(c, "items", "during", vecs[7], 1)
                    assert hits and hits[0].key == 7
                    answered[0] += 1
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        with mmr.connect(ext, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(f"DELETE FROM mmr.{_table(conn, 'during')}")
                mmr.put_embeddings(conn, "items", "during", list(range(BULK + 2000)), vecs)
            oid, tuples, filling = _index(conn, "items", "during")
            # (the index build also counts the 50 rows deleted in the same transaction)
            assert oid is not None and tuples >= BULK + 2000 and not filling
            seen = answered[0]
            assert search(conn, "items", "during", vecs[BULK + 1], 1)[0].key == BULK + 1
    finally:
        done.set()
        t.join(60)
    assert not errors, errors
    assert answered[0] >= seen > 0


def _table(conn: Conn, space: str) -> str:
    row = conn.execute(
        "SELECT '_emb_' || s.id FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
        "WHERE c.name = 'items' AND s.name = %s AND s.active",
        (space,),
    ).fetchone()
    assert row is not None
    return str(row[0])
