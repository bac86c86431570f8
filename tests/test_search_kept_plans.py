"""The plans a session keeps for its searches do not depend on one call's arguments.

The native module (native/pg_mmretrieval.c) keeps one generic plan per cached statement for the
session.  pgvector's cost estimate grows with ``hnsw.ef_search``: a plan built during a call with
``ef_search => 200`` on a 10k-row space was a Seq Scan + Sort, kept for every later call of the
session (issue 14).  Whatever the first call's arguments, the following default calls must scan
the HNSW index.  Observed on the executed statements, not on EXPLAIN of a rebuilt one: the
transaction's scan counters of the embedding table (sequential scans) and of its HNSW index.

Runs with both bindings of mmr.search (native and PL/pgSQL, 089-native.sql).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector import Vector

import pg_mmretrieval as mmr

from .fusion_synth import n

D = 16
N = 10_000

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def space(db_url: str) -> Iterator[tuple[str, str, np.ndarray[Any, Any]]]:
    """A 10k-row space `big`.`img` and the names of its embedding table and HNSW index."""
    rng = np.random.default_rng(3)
    vecs = n(rng.standard_normal((N, D))).astype(np.float32)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO big SELECT i FROM generate_series(0, {N - 1}) i")
        mmr.create_collection(conn, "big", "big")
        mmr.add_space(conn, "big", "img", "external", None, D)
        for lo in range(0, N, 2500):
            keys = list(range(lo, min(N, lo + 2500)))
            mmr.put_embeddings(conn, "big", "img", keys, vecs[keys])
        row = conn.execute(
            "SELECT s.embedding_table::text, i.indexrelid::regclass::text FROM mmr._space s "
            "JOIN mmr._collection c ON c.id = s.collection_id "
            "JOIN pg_index i ON i.indrelid = s.embedding_table "
            "JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_am a ON a.oid = x.relam "
            "WHERE c.name = 'big' AND s.name = 'img' AND a.amname = 'hnsw'"
        ).fetchone()
        assert row is not None
        conn.execute(f"ANALYZE {row[0]}")
        yield row[0], row[1], vecs


@pytest.fixture(params=["native", "plpgsql"])
def binding(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
    yield str(request.param)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(true)")


def _scans(conn: Conn, table: str, index: str, sql: str, args: dict[str, Any]) -> tuple[int, int]:
    """(sequential scans of table, scans of index) that running sql made, in one transaction."""
    with conn.transaction():
        count = (
            "SELECT pg_stat_get_xact_numscans(%s::regclass), "
            "pg_stat_get_xact_numscans(%s::regclass)"
        )
        before = conn.execute(count, (table, index)).fetchone()
        rows = conn.execute(sql, args).fetchall()
        after = conn.execute(count, (table, index)).fetchone()
    assert before is not None and after is not None
    assert len(rows) == 10
    return after[0] - before[0], after[1] - before[1]


FIRST_CALLS = [
    "SELECT * FROM mmr.search('big', 'img', %(q)s, 10, ef_search => 200)",
    "SELECT * FROM mmr.search('big', 'img', %(q)s, 500, ef_search => 1000)",
    "SELECT * FROM mmr.search('big', 'img', %(q)s, 1)",
]


@pytest.mark.parametrize("first", FIRST_CALLS)
def test_default_searches_scan_the_index_whatever_the_first_call(
    db_url: str, space: tuple[str, str, np.ndarray[Any, Any]], binding: str, first: str
) -> None:
    table, index, vecs = space
    with mmr.connect(db_url) as conn:  # a new session: nothing kept yet
        conn.execute(first, {"q": Vector(vecs[1])}).fetchall()
        conn.commit()
        for i in (2, 3, 4):
            seq, idx = _scans(
                conn,
                table,
                index,
                "SELECT * FROM mmr.search('big', 'img', %(q)s, 10)",
                {"q": Vector(vecs[i])},
            )
            assert (seq, idx) == (0, 1), (binding, first, seq, idx)
