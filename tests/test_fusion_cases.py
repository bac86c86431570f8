"""FUSION.md §6 controlled cases T1-T5 against the SQL functions (mmr.composed_search).

Each case loads all its seeds into one collection (seed column, filter {"seed": s}) and runs
every seed's query in ONE statement (a LATERAL call per seed).  Pass-rate bounds are FUSION.md's;
the seed count is SEEDS (FUSION.md measured 300; 120 here keeps the module fast; the bounds have
a wide margin over the measured rates).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval

from .fusion_synth import Case, load, n, t1_case, t2_case, t3_case, vec

SEEDS = 120


def _queries(
    conn: psycopg.Connection[Any],
    name: str,
    cases: list[Case],
    params: list[dict[str, Any]] | None = None,
) -> None:
    conn.execute(f"CREATE TABLE {name} (seed int, ref vector, mod vector, params jsonb)")
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {name} VALUES (%s, %s, %s, %s)",
            [
                (c.seed, vec(c.ref), vec(c.mod), Jsonb(params[i] if params else {}))
                for i, c in enumerate(cases)
            ],
        )


def ranks(
    conn: psycopg.Connection[Any],
    coll: str,
    qtable: str,
    method: str,
    params: dict[str, Any],
    gallery: int,
    qparams: bool = True,
) -> np.ndarray[Any, Any]:
    """Rank of the target (id = seed*1000) per seed: 1 + #items with a strictly higher score."""
    rows = conn.execute(
        f"""SELECT x.seed, 1 + count(*) FILTER (WHERE x.score > x.tscore)
              FROM (SELECT q.seed, r.score,
                           max(r.score) FILTER (WHERE r.key = to_jsonb(q.seed * 1000))
                               OVER (PARTITION BY q.seed) AS tscore
                      FROM {qtable} q
                      CROSS JOIN LATERAL mmr.composed_search(
                          %s, 'img', q.ref, q.mod, %s, %s,
                          (CASE WHEN %s THEN q.params ELSE '{{}}' END) || %s,
                          jsonb_build_object('seed', q.seed)) r) x
             WHERE x.tscore IS NOT NULL
             GROUP BY x.seed ORDER BY x.seed""",
        (coll, method, gallery, qparams, Jsonb(params)),
    ).fetchall()
    assert len(rows) == SEEDS, f"{method}: target missing for some seeds"
    return np.array([r[1] for r in rows])


@pytest.fixture(scope="module")
def t1(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    with mmr.connect(db_url, autocommit=True) as conn:
        cases = [t1_case(s) for s in range(SEEDS)]
        load(conn, "t1", cases)
        _queries(conn, "q1", cases)
        yield conn, len(cases[0].gallery)


def test_t1_additive_composition(t1: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t1
    rate = {
        m: float(np.mean(ranks(conn, "t1", "q1", m, p, g) == 1))
        for m, p in [
            ("image_only", {}),
            ("text_only", {}),
            ("weighted", {"alpha": 0.5}),
            ("score_sum", {}),
            ("product", {}),
            ("slerp", {"alpha": 0.5}),
        ]
    }
    assert rate["image_only"] <= 0.10, rate
    assert rate["text_only"] <= 0.10, rate
    assert rate["weighted"] >= 0.95, rate
    assert rate["score_sum"] >= 0.95, rate
    assert rate["product"] >= 0.80, rate
    assert rate["slerp"] >= 0.95, rate


def test_t1_alpha_endpoints_equal_unimodal(t1: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t1
    for alpha, other in [(0.0, "image_only"), (1.0, "text_only")]:
        a = ranks(conn, "t1", "q1", "weighted", {"alpha": alpha}, g)
        b = ranks(conn, "t1", "q1", other, {}, g)
        assert np.array_equal(a, b)


def test_t1_embedding_sum_ranks_like_score_sum(t1: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t1
    rows = conn.execute(
        """SELECT (SELECT array_agg(key ORDER BY score DESC, key) FROM mmr.composed_search(
                       't1', 'img', q.ref, q.mod, 'weighted', %s,
                       filter => jsonb_build_object('seed', q.seed))),
                  (SELECT array_agg(key ORDER BY score DESC, key) FROM mmr.composed_search(
                       't1', 'img', q.ref, q.mod, 'score_sum', %s,
                       filter => jsonb_build_object('seed', q.seed)))
             FROM q1 q WHERE q.seed < 20""",
        (g, g),
    ).fetchall()
    for a, b in rows:
        assert a[:5] == b[:5]


def test_t1_sql_scores_equal_numpy(t1: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t1
    case = t1_case(3)
    gal = np.stack(case.gallery).astype(np.float32).astype(np.float64)
    v, t = case.ref.astype(np.float32), case.mod.astype(np.float32)
    s_v, s_t = gal @ n(v.astype(np.float64)), gal @ n(t.astype(np.float64))
    q = n(0.7 * n(v) + 0.3 * n(t))
    expected = {
        "weighted": (gal @ q, {"alpha": 0.3}),
        "score_sum": (s_v + s_t, {}),
        "product": (np.maximum(s_v, 0) * np.maximum(s_t, 0), {}),
    }
    for method, (ref, params) in expected.items():
        hits = retrieval.composed_search(
            conn, "t1", "img", v, t, method=method, k=g, params=params, filter={"seed": 3}
        )
        got = {h.key: h.score for h in hits}
        for i in range(g):
            assert abs(got[3000 + i] - ref[i]) < 1e-5, (method, i)


@pytest.fixture(scope="module")
def t2(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    with mmr.connect(db_url, autocommit=True) as conn:
        cases = [t2_case(s) for s in range(SEEDS)]
        load(conn, "t2", cases)
        # PDV's modifier is the composed text f_tc; reference_caption is f_t.
        for c in cases:
            c.mod = c.extra["f_tc"]
        _queries(
            conn,
            "q2",
            cases,
            [
                {"reference_caption": [float(x) for x in c.extra["f_t"].astype(np.float32)]}
                for c in cases
            ],
        )
        conn.execute("CREATE TABLE q2s AS SELECT * FROM q2")
        red = {c.seed: t1_case(c.seed).mod for c in cases}
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE q2s SET mod = %s, params = '{}' WHERE seed = %s",
                [(vec(red[s]), s) for s in red],
            )
        yield conn, len(cases[0].gallery)


def test_t2_pdv(t2: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t2
    # The sum baseline uses the modification text txt(red).
    rate_sum = float(np.mean(ranks(conn, "t2", "q2s", "score_sum", {}, g) == 1))
    rates = {
        (a_i, b): float(
            np.mean(
                ranks(conn, "t2", "q2", "pdv", {"alpha_i": a_i, "alpha_t": 1.2, "beta": b}, g) == 1
            )
        )
        for a_i, b in [(1.0, 0.0), (1.4, 0.0), (1.4, 0.75)]
    }
    assert rate_sum <= 0.97
    for key, r in rates.items():
        assert r >= 0.97, (key, r, rate_sum)


def test_t2_pdv_identities(t2: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t2
    case = t2_case(0)
    fi, ft, ftc = case.ref, case.extra["f_t"], case.extra["f_tc"]
    (q,) = conn.execute(
        "SELECT mmr.pdv_query(%s, %s, %s, 0.5, 1, 1)", (vec(fi), vec(ft), vec(ftc))
    ).fetchone() or (None,)
    assert np.allclose(q.to_numpy(), n(ftc.astype(np.float32)), atol=1e-6)
    (q,) = conn.execute(
        "SELECT mmr.pdv_query(%s, %s, %s, 0, 0.7, 0)", (vec(fi), vec(ft), vec(ftc))
    ).fetchone() or (None,)
    assert np.allclose(q.to_numpy(), n(fi.astype(np.float32)), atol=1e-6)
    a = ranks(conn, "t2", "q2", "pdv", {"alpha_i": 0, "beta": 0}, g)
    b = ranks(conn, "t2", "q2s", "image_only", {}, g)
    assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def t3(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    with mmr.connect(db_url, autocommit=True) as conn:
        cases = [t3_case(s) for s in range(SEEDS)]
        load(conn, "t3", cases)
        params = []
        for c in cases:
            basis, mu_t = retrieval.basic_projection(c.extra["pos"], c.extra["neg"], a=0.2)
            mu_v = np.stack(c.gallery).mean(axis=0)
            retrieval.store_basic_projection(
                conn, "t3", "img", basis, mu_t, mu_image=mu_v, name=f"seed{c.seed}"
            )
            params.append({"projection": f"seed{c.seed}"})
        _queries(conn, "q3", cases, params)
        yield conn, len(cases[0].gallery)


def test_t3_basic_domain_conversion(t3: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t3
    rate = {
        m: float(np.mean(ranks(conn, "t3", "q3", m, {}, g, qparams=False) == 1))
        for m in ("image_only", "text_only", "score_sum", "product")
    }
    rate["basic_lite"] = float(
        np.mean(ranks(conn, "t3", "q3", "basic", {"query_expansion": False}, g) == 1)
    )
    rate["basic"] = float(np.mean(ranks(conn, "t3", "q3", "basic", {}, g) == 1))
    print(json.dumps(rate))
    assert rate["image_only"] <= 0.05 and rate["text_only"] <= 0.10, rate
    assert rate["basic_lite"] >= rate["product"] >= rate["score_sum"], rate
    assert rate["basic_lite"] >= 0.95, rate
