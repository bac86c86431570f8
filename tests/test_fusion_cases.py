"""FUSION.md §6 controlled cases T1-T5 against the SQL functions (mmr.composed_search).

Each case loads all its seeds into one collection (seed column, filter {"seed": s}) and runs
every seed's query in ONE statement (a LATERAL call per seed).  Pass-rate bounds are FUSION.md's;
the seed count is SEEDS = 300, the seeds FUSION.md measured its rates on (0-299).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval

from .fusion_synth import T3_OBJ, T3_STY, Case, Gen, load, n, t1_case, t2_case, t3_case, vec

SEEDS = 300


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


@pytest.fixture(scope="module")
def t5(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    with mmr.connect(db_url, autocommit=True) as conn:
        cases = [t1_case(s, sigma_i=0.4, captions=3) for s in range(SEEDS)]
        load(conn, "t5", cases, caption_spaces=3)
        _queries(
            conn,
            "q5",
            cases,
            [
                {
                    "reference_captions": [
                        [float(x) for x in r.astype(np.float32)] for r in c.extra["ref_captions"]
                    ]
                }
                for c in cases
            ],
        )
        # A mock: reference captions that describe something else (cat, snow).
        wrong = []
        for c in cases:
            g = c.extra["gen"]
            wrong.append(
                {
                    "reference_captions": [
                        [float(x) for x in g.txt(["cat", "snow"]).astype(np.float32)]
                        for _ in range(3)
                    ]
                }
            )
        _queries(conn, "q5w", cases, wrong)
        yield conn, len(cases[0].gallery)


def test_t5_weimocir_caption_fusion(t5: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t5
    caps = {"caption_spaces": ["cap1", "cap2", "cap3"], "alpha": 0.5}
    mean_rank, rate1 = {}, {}
    for beta in (0.0, 0.1, 0.3, 0.5, 1.0):
        r = ranks(conn, "t5", "q5", "weimocir", {**caps, "beta": beta}, g)
        mean_rank[beta], rate1[beta] = float(r.mean()), float(np.mean(r == 1))
    betas = sorted(mean_rank)
    for lo, hi in itertools.pairwise(betas):
        assert mean_rank[hi] <= mean_rank[lo] + 1e-9, mean_rank
    assert rate1[1.0] >= 0.95 and rate1[0.0] <= 0.35, rate1
    # β = 0 is the image branch alone: the weighted query with the same α.
    a = ranks(conn, "t5", "q5", "weimocir", {**caps, "beta": 0.0}, g)
    b = ranks(conn, "t5", "q5", "weighted", {"alpha": 0.5}, g, qparams=False)
    assert np.array_equal(a, b)


def test_t5_caption_branch_uses_reference_caption(t5: tuple[psycopg.Connection[Any], int]) -> None:
    conn, g = t5
    caps = {"caption_spaces": ["cap1", "cap2", "cap3"], "alpha": 0.5}
    good = ranks(conn, "t5", "q5", "weimocir", {**caps, "beta": 1.0}, g)
    bad = ranks(conn, "t5", "q5w", "weimocir", {**caps, "beta": 1.0}, g)
    assert bad.mean() > good.mean() + 1
    same_a = ranks(conn, "t5", "q5", "weimocir", {**caps, "beta": 0.0}, g)
    same_b = ranks(conn, "t5", "q5w", "weimocir", {**caps, "beta": 0.0}, g)
    assert np.array_equal(same_a, same_b)


def test_t4_basic_units(t3: tuple[psycopg.Connection[Any], int]) -> None:
    conn, _g = t3
    case = t3_case(5)
    basis, _mu_t = retrieval.basic_projection(case.extra["pos"], case.extra["neg"], a=0.2)
    p = basis.T @ basis
    assert np.allclose(p, p.T, atol=1e-9) and np.allclose(p @ p, p, atol=1e-8)
    assert np.linalg.matrix_rank(p) <= 250
    gen = Gen(5, gap=1.0, sqrt_offset=False)
    for c in T3_OBJ + T3_STY:
        gen.e(c)
    # P applied in SQL (mmr.vec_project): styles are projected away, objects kept.
    basis_v = [vec(b) for b in basis]
    norms = {}
    for c in ("sketch", "photo", "dog", "cat"):
        (pv,) = conn.execute(
            "SELECT mmr.vec_project(%s::vector[], %s)", (basis_v, vec(gen.e(c)))
        ).fetchone() or (None,)
        norms[c] = float(np.linalg.norm(pv.to_numpy()))
    assert max(norms["sketch"], norms["photo"]) < 0.5 * min(norms["dog"], norms["cat"]), norms
    (h1, h2, m0, m1) = (
        conn.execute(
            "SELECT mmr.harris(0, 1), mmr.harris(0.5, 0.5), mmr.min_norm(-0.077, -0.077), "
            "mmr.min_norm(0, -0.077)"
        ).fetchone()
        or (None,) * 4
    )
    assert abs(h1 + 0.1) < 1e-12 and abs(h2 - 0.15) < 1e-12
    assert abs(m0) < 1e-12 and abs(m1 - 1) < 1e-12
    s = [1.0, 0.3, -0.2, 0.05]
    (w,) = conn.execute("SELECT mmr.softmax(%s::float8[])", ([0.1 * x for x in s],)).fetchone() or (
        None,
    )
    ref = np.exp(0.1 * np.array(s)) / np.exp(0.1 * np.array(s)).sum()
    assert np.allclose(w, ref, atol=1e-12) and abs(sum(w) - 1) < 1e-12


def _basic_numpy(
    case: Case, basis: np.ndarray[Any, Any], mu_t: np.ndarray[Any, Any], qe: bool
) -> np.ndarray[Any, Any]:
    f = np.float64
    gal = np.stack(case.gallery).astype(np.float32).astype(f)
    mu_v = np.stack(case.gallery).mean(axis=0).astype(np.float32).astype(f)
    b = basis.astype(np.float32).astype(f)
    mu_t32 = mu_t.astype(np.float32).astype(f)
    p = b.T @ b
    xb = gal - mu_v
    vb = n(case.ref.astype(np.float32).astype(f)) - mu_v
    qv = p @ vb
    if qe:
        s = xb @ qv
        top = np.argsort(-s, kind="stable")[:25]
        sims = np.concatenate([[1.0], s[top]])
        w = np.exp(0.1 * sims) / np.exp(0.1 * sims).sum()
        qv = p @ (w[0] * vb + (w[1:, None] * xb[top]).sum(axis=0))
    tb = n(case.mod.astype(np.float32).astype(f)) - mu_t32
    s_v, s_t = xb @ qv, xb @ tb
    s_v = np.maximum((s_v - s_v.min()) / abs(s_v.min()), 0)
    s_t = np.maximum((s_t - s_t.min()) / abs(s_t.min()), 0)
    return np.asarray(s_t * s_v - 0.1 * (s_t + s_v) ** 2)


@pytest.mark.parametrize("qe", [False, True])
def test_t4_basic_sql_equals_numpy(t3: tuple[psycopg.Connection[Any], int], qe: bool) -> None:
    conn, g = t3
    case = t3_case(7)
    basis, mu_t = retrieval.basic_projection(case.extra["pos"], case.extra["neg"], a=0.2)
    ref = _basic_numpy(case, basis, mu_t, qe)
    hits = retrieval.composed_search(
        conn,
        "t3",
        "img",
        case.ref,
        case.mod,
        method="basic",
        k=g,
        params={"projection": "seed7", "query_expansion": qe},
        filter={"seed": 7},
    )
    got = {h.key: h.score for h in hits}
    assert len(got) == g
    for i in range(g):
        assert abs(got[7000 + i] - ref[i]) < 2e-5, (i, got[7000 + i], ref[i])
