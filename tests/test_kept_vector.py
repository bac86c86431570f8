"""mmr._kept_vector(sql, key): a statement's one `vector` value, the by-key planner's read of the
reference's embedding (mmr._composed_key_exec_plan, by its space's cached embedding_of
statement).  Natively (native/pg_mmretrieval.c) the statement runs with the session's kept plan
of its text instead of a PL/pgSQL EXECUTE parsed and planned per call; both bindings return the
same values and raise the same errors, and it runs as the caller (SECURITY INVOKER)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import pg_mmretrieval as mmr

from .helpers import unit_vectors

Conn = psycopg.Connection[Any]
N, D = 50, 8


@pytest.fixture(scope="module")
def vecs() -> np.ndarray[Any, Any]:
    return unit_vectors(N, D, seed=61)


@pytest.fixture(scope="module")
def embedding_of(db_url: str, vecs: np.ndarray[Any, Any]) -> str:
    """The embedding_of statement of a space holding keys 1..N."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kv_items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO kv_items SELECT generate_series(1, %s)", (N,))
        mmr.create_collection(conn, "kv_items", "kv_items")
        mmr.add_space(conn, "kv_items", "ext", "external", None, D, hnsw_m=8)
        mmr.put_embeddings(conn, "kv_items", "ext", list(range(1, N + 1)), vecs)
        row = conn.execute(
            "SELECT s.statements ->> 'embedding_of' FROM mmr._space s "
            "JOIN mmr._collection c ON c.id = s.collection_id "
            "WHERE c.name = 'kv_items' AND s.name = 'ext' AND s.active"
        ).fetchone()
    assert row is not None and row[0]
    return str(row[0])


@pytest.fixture(params=["native", "plpgsql"])
def binding(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
        lang = conn.execute(
            "SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.oid = 'mmr._kept_vector(text, jsonb)'::regprocedure"
        ).fetchone()
        assert lang == ("c" if request.param == "native" else "plpgsql",)
    yield str(request.param)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(true)")


KEPT = "SELECT mmr._kept_vector(%s, %s)"


def test_the_value_of_the_statement(
    conn: Conn, binding: str, embedding_of: str, vecs: np.ndarray[Any, Any]
) -> None:
    for key in (1, 17, N):
        got = conn.execute(KEPT, (embedding_of, Jsonb(key))).fetchone()
        assert got is not None and np.allclose(got[0].to_numpy(), vecs[key - 1], atol=1e-7)
    # the same statement again (natively: its kept plan), then a key without a row, and NULLs
    got = conn.execute(KEPT, (embedding_of, Jsonb(2))).fetchone()
    assert got is not None and np.allclose(got[0].to_numpy(), vecs[1], atol=1e-7)
    assert conn.execute(KEPT, (embedding_of, Jsonb(N + 1))).fetchone() == (None,)
    assert conn.execute(KEPT, (embedding_of, None)).fetchone() == (None,)
    assert conn.execute(KEPT, (None, Jsonb(1))).fetchone() == (None,)


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        # more than one row
        (
            "SELECT v FROM (VALUES ('[1,0]'::public.vector), ('[0,1]'::public.vector)) t(v) "
            "WHERE $1 IS NOT NULL",
            "P0003",
        ),
        ("SELEC 1", "42601"),  # not SQL
        ("SELECT $1::int::public.vector FROM nowhere", "42P01"),  # no such table
    ],
)
def test_errors_are_the_same_in_both_bindings(
    conn: Conn, binding: str, embedding_of: str, sql: str, sqlstate: str
) -> None:
    with pytest.raises(psycopg.Error) as e:
        conn.execute(KEPT, (sql, Jsonb(1)))
    assert e.value.sqlstate == sqlstate, e.value


def test_another_column_type_is_an_error(conn: Conn, binding: str) -> None:
    with pytest.raises(psycopg.Error) as e:
        conn.execute(KEPT, ("SELECT $1::text", Jsonb(1)))
    if binding == "native":
        assert e.value.sqlstate == "42804", e.value  # datatype_mismatch
        assert "does not return one column of type" in str(e.value)


def test_it_runs_as_the_caller(
    conn: Conn, binding: str, embedding_of: str, vecs: np.ndarray[Any, Any]
) -> None:
    """SECURITY INVOKER: a role that may not read the embedding table gets the privilege error,
    also after the owner ran the same statement (natively: the same kept plan text)."""
    assert conn.execute(KEPT, (embedding_of, Jsonb(3))).fetchone() is not None
    role = f"kv_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA mmr TO {role}")
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(psycopg.Error) as e:
                conn.execute(KEPT, (embedding_of, Jsonb(3)))
            assert e.value.sqlstate == "42501", e.value
            raise psycopg.Rollback()
        got = conn.execute(KEPT, (embedding_of, Jsonb(3))).fetchone()
        assert got is not None and np.allclose(got[0].to_numpy(), vecs[2], atol=1e-7)
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_a_statement_that_writes_is_refused(conn: Conn, binding: str) -> None:
    """Only a query runs: a statement that writes fails in this read-only (STABLE) function."""
    conn.execute("CREATE TEMP TABLE kv_scratch (v public.vector)")
    with pytest.raises(psycopg.Error):
        conn.execute(
            KEPT,
            (
                "INSERT INTO kv_scratch SELECT '[1,0]' WHERE $1 IS NOT NULL RETURNING v",
                Jsonb(1),
            ),
        )
    assert conn.execute("SELECT count(*) FROM kv_scratch").fetchone() == (0,)
