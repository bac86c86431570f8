"""Issue 12, items 2, 11 and 12: bounded, cancellable work and clear errors for bad inputs.

Item 2: every loop of the native module checks for interrupts (a GQR call is cancelled by
statement_timeout promptly, under the native and the PL/pgSQL binding), and every caller-set
iteration count, depth or size has an upper bound (mmr._limits, docs/security.md).
Item 11: GQR with temperature 0 and non-finite vectors are rejected, never returned or stored.
Item 12: rrf_k < 0, a list where a filter expects one value, a non-object rerank_params, blank
names and a 2000-term lexical query are clear errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval
from pg_mmretrieval.errors import InputError

from .helpers import unit_vectors

Conn = psycopg.Connection[Any]
D = 32
N = 1200


def vec(v: Any) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture(scope="module")
def data(db_url: str) -> Iterator[tuple[Conn, np.ndarray[Any, Any]]]:
    """Collection `b` (N rows, a caption) with external spaces img (cosine) and l2 (l2)."""
    v = unit_vectors(N, D, seed=5)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE b (id int PRIMARY KEY, caption text, price int)")
        conn.execute(
            "INSERT INTO b SELECT g, (ARRAY['red circle','blue square','green star'])[g % 3 + 1], "
            f"g % 10 FROM generate_series(0, {N - 1}) g"
        )
        mmr.create_collection(conn, "b", "b", text_columns=["caption"])
        retrieval.create_text_index(conn, "b")
        for name, distance in (("img", "cosine"), ("l2", "l2")):
            mmr.add_space(conn, "b", name, "external", None, D, distance=distance)
            mmr.put_embeddings(conn, "b", name, list(range(N)), v)
        yield conn, v


@pytest.fixture(params=["native", "plpgsql"])
def binding(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """mmr.search / composed_search / gqr_refine bound natively or to the PL/pgSQL functions."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
    yield str(request.param)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(true)")


def fails(conn: Conn, sql: str, args: Any = None) -> psycopg.Error:
    """The error sql fails with (it must fail)."""
    try:
        with conn.transaction():
            conn.execute(sql, args).fetchall()
    except psycopg.Error as e:
        return e
    raise AssertionError(f"no error from {sql}")


def cancelled_within(conn: Conn, sql: str, args: Any, timeout: str = "1s") -> float:
    """sql is cancelled by statement_timeout (QueryCanceled) well within 10 s."""
    conn.execute(f"SET statement_timeout = '{timeout}'")
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(sql, args).fetchall()
        elapsed = time.monotonic() - t0
    finally:
        conn.execute("RESET statement_timeout")
    assert elapsed < 10, elapsed
    return elapsed


# --- item 2: cancellation ---------------------------------------------------------------------


def test_item2_gqr_refine_cancelled_by_statement_timeout(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    """The largest allowed pool (2000 vectors of 512 dimensions) and 200 steps: over a second
    of work (1.5 s native, 2.2 s PL/pgSQL measured on 2 cores), all of it inside gqr_refine
    (the pool is read from a table in milliseconds).  statement_timeout stops it promptly under
    both bindings: before, the native loops never checked for interrupts."""
    conn, _ = data
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS pool AS SELECT i, "
        "ARRAY(SELECT random() - 0.5 FROM generate_series(1, 512) WHERE i > 0)::real[]::vector "
        "AS v "
        "FROM generate_series(1, 2000) i"
    )
    elapsed = cancelled_within(
        conn,
        "SELECT mmr.gqr_refine((SELECT v FROM pool WHERE i = 1), "
        "(SELECT array_agg(v ORDER BY i) FROM pool), "
        "array_fill(0::float8, ARRAY[2000]), 0.5, 1, 0.005, 200)",
        None,
        "300ms",
    )
    assert elapsed < 5, elapsed


def test_item2_gqr_composed_search_cancelled(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    """composed_search 'gqr' at its bounds (k 999, candidates 1000, steps 200) is cancelled."""
    conn, v = data
    cancelled_within(
        conn,
        "SELECT * FROM mmr.composed_search('b', 'img', %s::vector, %s::vector, 'gqr', 999, "
        '\'{"steps": 200, "candidates": 1000}\')',
        (vec(v[1]), vec(v[2])),
        "100ms",
    )


def test_item2_plpgsql_loops_cancelled(data: tuple[Conn, np.ndarray[Any, Any]]) -> None:
    """A PL/pgSQL loop (greedy MMR over a large matrix) is interruptible too."""
    conn, _ = data
    cancelled_within(
        conn,
        # ~0.9 s for 1500 candidates on an idle 2-core machine: 2500 (~2.5 s) is cancelled at
        # 300 ms whatever the machine's load
        "SELECT mmr.mmr_order(ARRAY(SELECT random() FROM generate_series(1, 2500)), "
        "(SELECT array_agg(r) FROM (SELECT ARRAY(SELECT 0.5::float8 "
        "FROM generate_series(1, 2500)) r FROM generate_series(1, 2500)) x))",
        None,
        "300ms",
    )


# --- item 2: bounds -----------------------------------------------------------------------------


def test_item2_gqr_steps_bounded(data: tuple[Conn, np.ndarray[Any, Any]], binding: str) -> None:
    """steps 10^9 (188 s before) is refused at once, by gqr_refine and by composed_search."""
    conn, v = data
    e = fails(
        conn,
        "SELECT * FROM mmr.composed_search('b', 'img', %s::vector, %s::vector, 'gqr', 10, "
        "'{\"steps\": 1000000000}')",
        (vec(v[1]), vec(v[2])),
    )
    assert e.sqlstate == "22023" and "GQR steps must be between 0 and 200" in str(e), e
    assert e.diag.message_hint and "200" in e.diag.message_hint
    e = fails(
        conn,
        "SELECT mmr.gqr_refine(%s::vector, ARRAY[%s::vector], ARRAY[0.1], steps => 2147483647)",
        (vec(v[0]), vec(v[1])),
    )
    assert e.sqlstate == "22023" and "GQR steps" in str(e), e


def test_item2_gqr_refine_pool_bounded(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    conn, v = data
    pool = [vec(v[i % N]) for i in range(2001)]
    e = fails(
        conn,
        "SELECT mmr.gqr_refine(%s::vector, %s::vector[], %s::float8[])",
        (vec(v[0]), pool, [0.0] * len(pool)),
    )
    assert e.sqlstate == "54000" and "between 0 and 2000" in str(e), e


@pytest.mark.parametrize(
    "params",
    [
        '{"candidates": 1001}',
        '{"candidates": 0}',
        '{"candidates": 1e12}',
        '{"candidates": -5}',
    ],
)
@pytest.mark.parametrize("method", ["gqr", "score_sum", "weimocir"])
def test_item2_candidates_bounded(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str, method: str, params: str
) -> None:
    """candidates outside 1..1000: the same 22023 error on the fast and the general path."""
    conn, v = data
    for extra in ("", ", max_scan_tuples => 20000"):  # the fast path, then the general path
        # (a default-valued argument keeps the fast path: mmr.fast_path off forces the general)
        conn.execute(f"SET mmr.fast_path = {'off' if extra else 'on'}")
        try:
            e = fails(
                conn,
                "SELECT * FROM mmr.composed_search('b', 'img', %s::vector, %s::vector, "
                f"%s, 10, %s::jsonb{extra})",
                (vec(v[1]), vec(v[2]), method, params),
            )
        finally:
            conn.execute("RESET mmr.fast_path")
        assert e.sqlstate == "22023" and "candidates must be between 1 and 1000" in str(e), e


def test_item2_key_weimocir_candidates_bounded(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    conn, v = data
    e = fails(
        conn,
        "SELECT * FROM mmr.composed_search('b', 'img', '3'::jsonb, %s::vector, 'weimocir', 10, "
        '\'{"caption_space": "l2", "candidates": 1e12}\')',
        (vec(v[2]),),
    )
    assert e.sqlstate == "22023" and "candidates" in str(e), e


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELECT * FROM mmr.search('b', 'img', %(q)s, 1001)", "k must be between 1 and 1000"),
        ("SELECT * FROM mmr.search('b', 'img', %(q)s, 0)", "k must be between 1 and 1000"),
        ("SELECT * FROM mmr.search('b', 'img', %(q)s, -1)", "k must be between 1 and 1000"),
        ("SELECT * FROM mmr.search('b', 'img', %(q)s, NULL)", "k must not be NULL"),
        ("SELECT * FROM mmr.search('b', 'img', %(q)s, ef_search => 5000)", "ef_search"),
        (
            "SELECT * FROM mmr.search('b', 'img', %(q)s, max_scan_tuples => 2000000000)",
            "max_scan_tuples must be between 1 and 1000000",
        ),
        (
            "SELECT * FROM mmr.search('b', 'img', %(q)s, rerank => 'exact', rerank_depth => 5000)",
            "rerank_depth must be between 1 and 1000",
        ),
        (
            "SELECT * FROM mmr.rocchio_search('b', 'img', %(q)s, 2000000000)",
            "k must be between 1 and 1000",
        ),
        (
            "SELECT * FROM mmr.rocchio_search('b', 'img', %(q)s, params => '{\"fb_docs\": 1e9}')",
            "params.fb_docs must be between 1 and 1000",
        ),
        (
            "SELECT * FROM mmr.dialog_search('b', 'img', array_fill(%(q)s, ARRAY[101]))",
            "the number of turns must be between 1 and 100",
        ),
        (
            "SELECT * FROM mmr.mmr_search('b', 'img', %(q)s, candidates => 100000)",
            "candidates must be between 1 and 1000",
        ),
        ("SELECT * FROM mmr.mmr_search('b', 'img', %(q)s, lambda => 'NaN')", "MMR lambda"),
        (
            "SELECT * FROM mmr.hybrid_search('b', NULL, array_fill('img'::text, ARRAY[17]), "
            "array_fill(%(q)s, ARRAY[17]))",
            "the number of spaces must be between 0 and 16",
        ),
        ("SELECT * FROM mmr.hybrid_search('b', 'red', k => 5000)", "k must be between 1 and 1000"),
        (
            "SELECT * FROM mmr.hybrid_search('b', 'red', params => '{\"candidates\": 1e9}')",
            "candidates must be between 1 and 1000",
        ),
        (
            "SELECT * FROM mmr.hybrid_search('b', repeat('x', 20000))",
            "the length of query_text in bytes must be between 0 and 10000",
        ),
    ],
)
def test_item2_bounds(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str, sql: str, needle: str
) -> None:
    """Each bound of mmr._limits: a clear 22023 / 54000 error naming it, with a hint."""
    conn, v = data
    e = fails(conn, sql.replace("%(q)s", "%(q)s::vector"), {"q": vec(v[0])})
    assert e.sqlstate in ("22023", "54000", "22004"), e
    assert needle in str(e), e


def test_item2_multivector_bounds(data: tuple[Conn, np.ndarray[Any, Any]]) -> None:
    conn, v = data
    conn.execute("SELECT mmr.add_multivector_space('b', 'mv', %s)", (D,))
    e = fails(
        conn,
        "SELECT mmr.put_multivectors('b', 'mv', '1', array_fill(%s::vector, ARRAY[1001]))",
        (vec(v[0]),),
    )
    assert e.sqlstate == "54000" and "between 0 and 1000" in str(e), e
    e = fails(
        conn,
        "SELECT * FROM mmr.multivector_search('b', 'mv', array_fill(%s::vector, ARRAY[65]))",
        (vec(v[0]),),
    )
    assert e.sqlstate == "54000" and "query vectors must be between 1 and 64" in str(e), e
    e = fails(
        conn,
        "SELECT * FROM mmr.multivector_search('b', 'mv', ARRAY[%s::vector], k => 0)",
        (vec(v[0]),),
    )
    assert e.sqlstate == "22023" and "k must be between 1 and 1000" in str(e), e


def test_item2_limits_documented() -> None:
    """Every bound of mmr._limits appears in docs/security.md's table with its value."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text()
    section = doc.split("## Bounded work: iteration counts, sizes and cancellation", 1)[1]
    section = section.split("\n## ", 1)[0]
    sql = (Path(__file__).resolve().parent.parent / "sql/idempotent/015-bounds.sql").read_text()
    import re

    for name, lo, hi in re.findall(r"\('(\w+)', (\d+), (\d+), '\d+',", sql):
        assert f"`{name}`" in section and f"{int(hi)}" in section, (name, lo, hi)


# --- item 11: non-finite results ---------------------------------------------------------------


def test_item11_gqr_temperature_zero_refused(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    conn, v = data
    e = fails(
        conn,
        "SELECT * FROM mmr.composed_search('b', 'img', %s::vector, %s::vector, 'gqr', 10, "
        "'{\"temperature\": 0}')",
        (vec(v[1]), vec(v[2])),
    )
    assert e.sqlstate == "22023" and "GQR temperature must be a finite number above 0" in str(e)
    for t in ("0", "-1", "'NaN'", "'Infinity'"):
        e = fails(
            conn,
            f"SELECT mmr.gqr_refine(%s::vector, ARRAY[%s::vector], ARRAY[0.1], t => {t})",
            (vec(v[0]), vec(v[1])),
        )
        assert e.sqlstate == "22023" and "temperature" in str(e), (t, e)
    for arg in ("a => 2", "lr => -1", "lr => 'NaN'"):
        e = fails(
            conn,
            f"SELECT mmr.gqr_refine(%s::vector, ARRAY[%s::vector], ARRAY[0.1], {arg})",
            (vec(v[0]), vec(v[1])),
        )
        assert e.sqlstate == "22023", (arg, e)


def test_item11_gqr_refine_never_returns_non_finite(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    """Huge stored values overflow float32 products: an error, not a NaN vector."""
    conn, v = data
    big = vec(np.full(D, 1e30))
    e = fails(
        conn,
        "SELECT mmr.gqr_refine(%s::vector, ARRAY[%s::vector, %s::vector], ARRAY[0.1, 0.2], "
        "lr => 1e30, t => 1e-30)",
        (big, big, vec(v[1])),
    )
    assert e.sqlstate and e.sqlstate.startswith("22") and e.sqlstate != "22012", e
    assert any(w in str(e) for w in ("not finite", "out of range", "infinite value")), e


def test_item11_put_embeddings_rejects_nan_inf_zero(
    data: tuple[Conn, np.ndarray[Any, Any]],
) -> None:
    """SQL: a non-finite vector (the native gqr_refine could build one) is refused, in a cosine
    space and every other; Python refuses NaN / Inf / zero before sending, naming the key."""
    conn, v = data
    for space in ("img", "l2"):
        e = fails(
            conn, "SELECT mmr.put_embedding('b', %s, '7', %s::vector)", (space, vec(np.zeros(D)))
        )
        assert e.sqlstate == "22000" and "key 7" in str(e) and "zero" in str(e), e
    for bad in (np.nan, np.inf, -np.inf, 1e39):
        x = v[0].astype(np.float64).copy()
        x[3] = bad
        with pytest.raises(InputError, match=r"key 7.*not finite"):
            mmr.put_embeddings(conn, "b", "img", [7], [x])
    with pytest.raises(InputError, match=r"key 8.*zero vector"):
        mmr.put_embeddings(conn, "b", "l2", [8], [np.zeros(D)])


# --- item 12: clear errors ---------------------------------------------------------------------


def test_item12_rrf_k_negative_refused(data: tuple[Conn, np.ndarray[Any, Any]]) -> None:
    conn, _ = data
    for extra in ("", ', filter => \'{"price": {">=": 0}}\''):
        e = fails(
            conn,
            f"SELECT * FROM mmr.hybrid_search('b', 'red', params => '{{\"rrf_k\": -1}}'{extra})",
        )
        assert e.sqlstate == "22023" and "rrf_k must be a finite number of at least 0" in str(e), e
        assert e.diag.message_hint and "60" in e.diag.message_hint
    e = fails(conn, 'SELECT * FROM mmr.fuse(\'[[{"key": 1, "score": 1}]]\', rrf_k => -1)')
    assert e.sqlstate == "22023" and "rrf_k" in str(e), e
    e = fails(conn, "SELECT * FROM mmr.fuse('[[{\"key\": 1, \"score\": 1}]]', weights => '{NaN}')")
    assert e.sqlstate == "22023" and "weight 1 is NaN" in str(e), e
    # rrf_k = 0 is allowed (rank >= 1)
    rows = conn.execute("SELECT * FROM mmr.hybrid_search('b', 'red', params => '{\"rrf_k\": 0}')")
    assert len(rows.fetchall()) == 10


def test_item12_array_filter_refused(data: tuple[Conn, np.ndarray[Any, Any]], binding: str) -> None:
    conn, v = data
    e = fails(
        conn,
        "SELECT * FROM mmr.search('b', 'img', %s::vector, filter => '{\"price\": [4, 5]}')",
        (vec(v[0]),),
    )
    assert e.sqlstate == "22023" and "a list where a single value is expected" in str(e), e
    assert e.diag.message_hint and '{"price": {"in": [4, 5]}}' in e.diag.message_hint
    rows = conn.execute(
        "SELECT * FROM mmr.search('b', 'img', %s::vector, "
        'filter => \'{"price": {"in": [4, 5]}}\')',
        (vec(v[0]),),
    ).fetchall()
    assert len(rows) == 10


def test_item12_rerank_params_must_be_object(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    conn, v = data
    e = fails(
        conn,
        "SELECT * FROM mmr.search('b', 'img', %s::vector, rerank => 'mmr', rerank_params => '[1]')",
        (vec(v[0]),),
    )
    assert e.sqlstate == "22023" and "rerank_params must be a JSON object, not array" in str(e), e


@pytest.mark.parametrize("name", ["", "   ", "\t\n", "\u3000", "x" * 64])
def test_item12_blank_collection_name_refused(
    data: tuple[Conn, np.ndarray[Any, Any]], name: str
) -> None:
    conn, _ = data
    e = fails(conn, "SELECT mmr.create_collection(%s, 'b')", (name,))
    assert e.sqlstate == "42602", e
    e = fails(conn, "SELECT mmr.add_space('b', %s, 'external', NULL, 4)", (name,))
    assert e.sqlstate == "42602", e
    e = fails(
        conn,
        "SELECT mmr.register_reranker(%s, "
        "'mmr.rerank_exact(text,text,vector,jsonb[],float8[],jsonb)')",
        (name,),
    )
    assert e.sqlstate in ("42602", "22023"), e


def test_item12_long_hybrid_query_refused(data: tuple[Conn, np.ndarray[Any, Any]]) -> None:
    """2000 terms (4 s on 40 rows before) are refused at once with 54000, on both paths."""
    conn, _ = data
    text = " ".join(f"t{i % 100}" for i in range(2000))
    for extra in ("", ', filter => \'{"price": {">=": 0}}\''):
        t0 = time.monotonic()
        e = fails(conn, f"SELECT * FROM mmr.hybrid_search('b', %s{extra})", (text,))
        assert time.monotonic() - t0 < 5
        assert e.sqlstate == "54000" and "search terms" in str(e) and "64" in str(e), e
    # 64 terms still run
    ok = " ".join(["red"] * 64)
    assert conn.execute("SELECT count(*) FROM mmr.hybrid_search('b', %s)", (ok,)).fetchone() == (
        10,
    )


def test_item11_huge_query_vector_refused(
    data: tuple[Conn, np.ndarray[Any, Any]], binding: str
) -> None:
    """A query whose distances overflow float32 (found by the fuzz test: infinite scores in an
    l2 space) is refused on the fast and the general path, not answered with inf / NaN."""
    conn, _ = data
    big = vec(np.full(D, 1e30))
    for space in ("l2", "img"):
        for extra in ("", ", max_scan_tuples => 20000"):
            e = fails(
                conn, f"SELECT * FROM mmr.search('b', %s, %s::vector, 5{extra})", (space, big)
            )
            assert e.sqlstate == "22000" and "above the largest allowed" in str(e), e
    e = fails(
        conn,
        "SELECT * FROM mmr.composed_search('b', 'l2', %s::vector, %s::vector, 'score_sum', 5)",
        (big, big),
    )
    assert e.sqlstate == "22000" and "above the largest allowed" in str(e), e


def test_item11_weight_and_score_arrays_checked(data: tuple[Conn, np.ndarray[Any, Any]]) -> None:
    """Weights: finite, at least 0, not NULL; scores handed to a reranker: finite (NULL allowed)."""
    conn, _ = data
    for bad, pos in (("{1, -0.5}", 2), ("{1, Infinity}", 2), ("{NULL}", 1)):
        e = fails(conn, "SELECT mmr._check_weights(%s::float8[])", (bad,))
        assert e.sqlstate == "22023" and f"weight {pos} is" in str(e), (bad, e)
    conn.execute("SELECT mmr._check_weights('{0, 1.5}'::float8[])")
    for bad, pos in (("{1, -Infinity}", 2), ("{NaN}", 1)):
        e = fails(conn, "SELECT mmr._check_scores(%s::float8[])", (bad,))
        assert e.sqlstate == "22023" and f"score {pos} is" in str(e), (bad, e)
    conn.execute("SELECT mmr._check_scores('{-3, NULL, 2}'::float8[])")
