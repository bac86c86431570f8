"""Fusion primitives (FUSION.md §6 T6-T9), hybrid search, rerankers, multi-vector MaxSim and
the plans of every search function, against the SQL functions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval
from pg_mmretrieval.errors import InputError, MMRError
from pg_mmretrieval.rerankers import FunctionReranker, register_reranker
from pg_mmretrieval.search import Hit

from .fusion_synth import n, vec

D = 16
N = 1500
WORDS = ["red", "blue", "green", "circle", "square", "triangle", "large", "small", "dark", "bright"]


def _one(conn: psycopg.Connection[Any], sql: str, args: Any = None) -> Any:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture(scope="module")
def items(db_url: str) -> Iterator[tuple[psycopg.Connection[Any], dict[str, np.ndarray[Any, Any]]]]:
    """3000 rows with a caption and three external 16-d spaces (img, cap, imgh in halfvec)."""
    rng = np.random.default_rng(42)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, caption text, grp int)")
        caps = [" ".join(rng.choice(WORDS, 3, replace=False)) for _ in range(N)]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items VALUES (%s, %s, %s)", [(i, caps[i], i % 50) for i in range(N)]
            )
        mmr.create_collection(conn, "items", "items", text_columns=["caption"])
        vecs = {
            "img": n(rng.standard_normal((N, D))).astype(np.float32),
            "cap": n(rng.standard_normal((N, D))).astype(np.float32),
        }
        vecs["imgh"] = vecs["img"]
        for name, v in vecs.items():
            mmr.add_space(
                conn,
                "items",
                name,
                "external",
                None,
                D,
                storage="halfvec" if name == "imgh" else "vector",
            )
            mmr.put_embeddings(conn, "items", name, list(range(N)), v)
        retrieval.create_text_index(conn, "items")
        conn.execute("ANALYZE items")
        for t in conn.execute("SELECT embedding_table::text FROM mmr.spaces").fetchall():
            conn.execute(f"ANALYZE {t[0]}")
        yield conn, vecs


# --- T6 fusion primitives -------------------------------------------------------------------


def test_t6_rrf_exact_values(conn: psycopg.Connection[Any]) -> None:
    runs = [[Hit("a", 3), Hit("b", 2), Hit("c", 1)], [Hit("a", 9), Hit("d", 8)]]
    got = {h.key: h.score for h in retrieval.fuse(conn, runs)}
    assert abs(got["a"] - 2 / 61) < 1e-15
    assert abs(got["c"] - 1 / 63) < 1e-15
    assert abs(got["d"] - 1 / 62) < 1e-15
    # IBM α-weighting 2α/(k+rank), 2(1−α)/(k+rank) at α = 0.5 is the standard RRF.
    ibm = {h.key: h.score for h in retrieval.fuse(conn, runs, weights=[1.0, 1.0])}
    assert ibm == got
    w = {h.key: h.score for h in retrieval.fuse(conn, runs, weights=[1.6, 0.4])}
    assert abs(w["a"] - (1.6 / 61 + 0.4 / 61)) < 1e-15 and abs(w["d"] - 0.4 / 62) < 1e-15


def test_t6_combsum_combmnz_minmax_and_zscore(conn: psycopg.Connection[Any]) -> None:
    runs = [[Hit("a", 4), Hit("b", 2), Hit("c", 2), Hit("d", 0)], [Hit("b", 10), Hit("e", 5)]]
    s = {h.key: h.score for h in retrieval.fuse(conn, runs, method="combsum")}
    eps = 1e-12
    assert abs(s["a"] - 4 / (4 + eps)) < 1e-9
    assert abs(s["b"] - (2 / (4 + eps) + 5 / (5 + eps))) < 1e-9
    assert abs(s["c"] - 0.5) < 1e-9 and abs(s["d"]) < 1e-12 and abs(s["e"]) < 1e-12
    m = {h.key: h.score for h in retrieval.fuse(conn, runs, method="combmnz")}
    assert abs(m["b"] - 2 * s["b"]) < 1e-9 and abs(m["a"] - s["a"]) < 1e-9
    # A constant list normalises to 0 (the ε keeps it finite).
    const = retrieval.fuse(conn, [[Hit("x", 3), Hit("y", 3)]], method="combsum")
    assert all(h.score == 0 for h in const)
    z = [h.score for h in retrieval.fuse(conn, [runs[0]], method="combsum", norm="zscore")]
    assert abs(float(np.mean(z))) < 1e-9 and abs(float(np.var(z)) - 1) < 1e-6


def test_t6_slerp(conn: psycopg.Connection[Any]) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(8), rng.standard_normal(8)
    na, nb = n(a), n(b)
    omega = math.acos(float(na @ nb))
    for w in (0.0, 0.25, 0.5, 0.8, 1.0):
        v = _one(conn, "SELECT mmr.vec_slerp(%s, %s, %s)", (vec(a), vec(b), w)).to_numpy()
        assert abs(np.linalg.norm(v) - 1) < 1e-6
        assert abs(math.acos(min(1.0, float(v @ na))) - w * omega) < 1e-3
        if w == 0.0:
            assert np.allclose(v, na, atol=1e-6)
        if w == 1.0:
            assert np.allclose(v, nb, atol=1e-6)
        # inside [0, 1] slerp runs as a lerp with an adjusted weight: the same vector as the
        # textbook formula (kept for w outside [0, 1])
        ref = _one(conn, "SELECT mmr._slerp_extrapolated(%s, %s, %s)", (vec(a), vec(b), w))
        assert np.allclose(v, ref.to_numpy(), atol=1e-6)
    for w in (-0.2, 1.3):  # extrapolation beyond the two directions
        v = _one(conn, "SELECT mmr.vec_slerp(%s, %s, %s)", (vec(a), vec(b), w)).to_numpy()
        assert abs(math.acos(min(1.0, float(v @ na))) - abs(w) * omega) < 1e-3
    mid = _one(conn, "SELECT mmr.vec_slerp(%s, %s, 0.5)", (vec(a), vec(b))).to_numpy()
    lerp = _one(conn, "SELECT mmr.vec_lerp(%s, %s, 0.5)", (vec(a), vec(b))).to_numpy()
    assert np.allclose(mid, lerp, atol=1e-6)
    # (Anti)parallel inputs fall back to lerp; cancelling vectors are rejected.
    par = _one(conn, "SELECT mmr.vec_slerp(%s, %s, 0.3)", (vec(a), vec(2 * a))).to_numpy()
    assert np.allclose(par, na, atol=1e-6)
    with pytest.raises(psycopg.errors.DataException, match="zero or non-finite"):
        conn.execute("SELECT mmr.vec_lerp(%s, %s, 0.5)", (vec(a), vec(-a)))


def test_vector_primitives_match_numpy(conn: psycopg.Connection[Any]) -> None:
    rng = np.random.default_rng(2)
    vs = rng.standard_normal((4, 8)).astype(np.float32)
    ws = [0.5, -1.0, 2.0, 0.25]
    got = _one(
        conn, "SELECT mmr.vec_weighted_sum(%s::vector[], %s)", ([vec(v) for v in vs], ws)
    ).to_numpy()
    assert np.allclose(got, (np.array(ws)[:, None] * vs).sum(0), atol=1e-5)
    assert np.allclose(
        _one(conn, "SELECT mmr.vec_normalize(%s)", (vec(vs[0]),)).to_numpy(), n(vs[0]), atol=1e-6
    )
    with pytest.raises(psycopg.errors.DataException):
        conn.execute("SELECT mmr.vec_normalize(%s)", (vec(np.zeros(8)),))
    plan = conn.execute(
        "EXPLAIN VERBOSE SELECT mmr.vec_dot(e, %s) FROM unnest(ARRAY[%s::vector]) e",
        (vec(vs[0]), vec(vs[1])),
    ).fetchall()
    assert "<#>" in " ".join(r[0] for r in plan)  # inlined, not a function call


# --- T7 MMR, T8 Rocchio, T9 GQR --------------------------------------------------------------


def test_t7_mmr_order(conn: psycopg.Connection[Any]) -> None:
    rel = [0.9, 0.9, 0.9, 0.7]
    sims = [
        [1.0, 0.99, 0.99, 0.1],
        [0.99, 1.0, 0.99, 0.1],
        [0.99, 0.99, 1.0, 0.1],
        [0.1, 0.1, 0.1, 1.0],
    ]
    assert _one(conn, "SELECT mmr.mmr_order(%s, %s::float8[], 1)", (rel, sims)) == [1, 2, 3, 4]
    assert _one(conn, "SELECT mmr.mmr_order(%s, %s::float8[], 0.5)", (rel, sims))[1] == 4


def test_t8_rocchio(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    img = vecs["img"]
    rng = np.random.default_rng(3)
    center_a, center_b = n(rng.standard_normal(D)), n(rng.standard_normal(D))
    a_keys = [int(i) for i in np.argsort(-(img @ center_a))[:30]]
    b_keys = [int(i) for i in np.argsort(-(img @ center_b))[:30]]
    q = n(0.3 * center_a + center_b)

    def count(hits: list[Hit], keys: list[int]) -> int:
        return sum(h.key in keys for h in hits)

    base = retrieval.search(conn, "items", "img", q, 20)
    fb = retrieval.rocchio_search(
        conn, "items", "img", q, 20, params={"relevant": a_keys[:10], "beta": 1.0, "gamma": 0}
    )
    assert count(fb, a_keys) > count(base, a_keys)
    neg = retrieval.rocchio_search(
        conn,
        "items",
        "img",
        q,
        20,
        params={"relevant": [], "nonrelevant": b_keys[:10], "gamma": 0.8},
    )
    assert count(neg, b_keys) < count(base, b_keys)
    prf = retrieval.rocchio_search(conn, "items", "img", q, 10)
    assert len(prf) == 10


def test_t9_gqr_gradient_and_refinement(conn: psycopg.Connection[Any]) -> None:
    rng = np.random.default_rng(4)
    d = n(rng.standard_normal((6, 8))).astype(np.float32)
    z = n(rng.standard_normal(8)).astype(np.float32) * 3
    s1 = [float(x) for x in d.astype(np.float64) @ z.astype(np.float64)]
    s2 = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0]
    dv = [vec(x) for x in d]
    m = _one(conn, "SELECT mmr.gqr_target(%s, %s, 1, 1)", (s1, s2))
    grad = _one(
        conn, "SELECT mmr.gqr_gradient(%s, %s::vector[], %s, 1)", (vec(z), dv, m)
    ).to_numpy()
    eps = 1e-2
    for i in range(8):
        e = np.zeros(8, dtype=np.float32)
        e[i] = eps
        lp = _one(conn, "SELECT mmr.gqr_loss(%s, %s::vector[], %s, 1)", (vec(z + e), dv, m))
        lm = _one(conn, "SELECT mmr.gqr_loss(%s, %s::vector[], %s, 1)", (vec(z - e), dv, m))
        assert abs((lp - lm) / (2 * eps) - grad[i]) < 2e-3
    m0 = _one(conn, "SELECT mmr.gqr_target(%s, %s, 0, 1)", (s1, s2))
    g0 = _one(conn, "SELECT mmr.gqr_gradient(%s, %s::vector[], %s, 1)", (vec(z), dv, m0)).to_numpy()
    assert np.abs(g0).max() < 1e-6
    z2 = _one(conn, "SELECT mmr.gqr_refine(%s, %s::vector[], %s, 1, 1, 0.1, 20)", (vec(z), dv, s2))
    loss0 = _one(conn, "SELECT mmr.gqr_loss(%s, %s::vector[], %s, 1)", (vec(z), dv, m))
    loss1 = _one(conn, "SELECT mmr.gqr_loss(%s, %s::vector[], %s, 1)", (z2, dv, m))
    assert loss1 < loss0
    rank = lambda zz: int(np.sum(d @ zz > d[2] @ zz)) + 1  # noqa: E731
    assert rank(z2.to_numpy()) < rank(z) or rank(z) == 1
    # The refinement equals a numpy reference of FUSION.md §2.3 (float64 gradient steps on z).
    for a, steps, lr in ((0.5, 15, 5e-3), (1.0, 20, 0.1), (0.3, 7, 0.05)):
        zz, d64 = z.astype(np.float64), d.astype(np.float64)

        def softmax(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            e = np.exp(x - x.max())
            return np.asarray(e / e.sum())

        target = (1 - a) * softmax(d64 @ zz) + a * softmax(np.asarray(s2))
        for _ in range(steps):
            zz = zz - lr * ((softmax(d64 @ zz) - target) @ d64)
        # mmr.gqr_refine is native (C, double precision) on the test server; the PL/pgSQL
        # reference implementation (its fallback) must agree with numpy too.
        for fn in ("mmr.gqr_refine", "mmr._gqr_refine_plpgsql"):
            got = _one(
                conn,
                f"SELECT {fn}(%s, %s::vector[], %s, %s, 1, %s, %s)",
                (vec(z), dv, s2, a, lr, steps),
            ).to_numpy()
            assert np.abs(got - zz).max() < 1e-5, (fn, a, steps, np.abs(got - zz).max())
    for fn in ("mmr.gqr_refine", "mmr._gqr_refine_plpgsql"):
        # No candidates or no steps: z unchanged; unequal lengths: the same error.
        assert _one(conn, f"SELECT {fn}(%s, '{{}}'::vector[], '{{}}')", (vec(z),)) == vec(z)
        assert _one(
            conn, f"SELECT {fn}(%s, %s::vector[], %s, steps => 0)", (vec(z), dv, s2)
        ) == vec(z)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="6 candidate vectors but 5"):
            _one(conn, f"SELECT {fn}(%s, %s::vector[], %s)", (vec(z), dv, s2[:5]))
        # A NULL argument: the native function hands the call to the PL/pgSQL one (its error).
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            _one(conn, f"SELECT {fn}(%s, %s::vector[], %s, 0.5, 1, NULL, 3)", (vec(z), dv, s2))


def test_gqr_composed_output_within_union(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    conn, vecs = items
    ref, mod = vecs["img"][5], vecs["img"][77]
    u = {
        h.key
        for h in retrieval.composed_search(conn, "items", "img", ref, mod, method="weighted", k=11)
    }
    u |= {
        h.key
        for h in retrieval.composed_search(conn, "items", "img", ref, mod, method="text_only", k=11)
    }
    hits = retrieval.composed_search(
        conn, "items", "img", ref, mod, method="gqr", k=10, params={"lr": 0.05, "steps": 10}
    )
    assert len(hits) == 10 and {h.key for h in hits} <= u


# --- hybrid search ---------------------------------------------------------------------------


def test_hybrid_rrf_equals_fusion_of_legs(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    conn, vecs = items
    q = vecs["img"][10]
    cq = vecs["cap"][20]
    # Ties in ts_rank_cd are broken by key (docs/retrieval.md), so the expected leg is exact.
    lex = conn.execute(
        "SELECT to_jsonb(id), "
        "ts_rank_cd(to_tsvector('english', coalesce(caption, '')), q)::float8 AS r "
        "FROM items, websearch_to_tsquery('english', 'red circle') q "
        "WHERE to_tsvector('english', coalesce(caption, '')) @@ q ORDER BY r DESC, 1 LIMIT 40"
    ).fetchall()
    v1 = retrieval.search(conn, "items", "img", q, 40)
    v2 = retrieval.search(conn, "items", "cap", cq, 40)
    expected: dict[Any, float] = {}
    for leg, w in (
        (lex, 1.0),
        ([(h.key, h.score) for h in v1], 0.5),
        ([(h.key, h.score) for h in v2], 2.0),
    ):
        for rank, (key, _s) in enumerate(leg, start=1):
            expected[key] = expected.get(key, 0.0) + w / (60 + rank)
    hits = retrieval.hybrid_search(
        conn,
        "items",
        "red circle",
        [("img", q), ("cap", cq)],
        k=10,
        weights=[1.0, 0.5, 2.0],
        params={"candidates": 40},
    )
    assert len(hits) == 10
    for h in hits:
        assert abs(h.score - expected[h.key]) < 1e-12
    top = sorted(expected.values(), reverse=True)[:10]
    assert np.allclose([h.score for h in hits], top, atol=1e-12)


def test_hybrid_variants_and_filter(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    q = vecs["img"][10]
    for fusion, norm in (("combsum", "minmax"), ("combmnz", "zscore"), ("avgrank", "minmax")):
        hits = retrieval.hybrid_search(
            conn, "items", "blue square", [("img", q)], k=7, fusion=fusion, params={"norm": norm}
        )
        assert len(hits) == 7
    # lexical only, vector only, and a selective filter that still returns k rows
    assert len(retrieval.hybrid_search(conn, "items", "green", k=5)) == 5
    vec_only = retrieval.hybrid_search(conn, "items", None, [("img", q)], k=5)
    assert vec_only[0].key == 10
    hits = retrieval.hybrid_search(conn, "items", "bright", [("img", q)], k=10, filter={"grp": 7})
    assert len(hits) == 10
    assert all(int(h.key) % 50 == 7 for h in hits)
    with pytest.raises(MMRError, match="weights must have one entry per leg"):
        retrieval.hybrid_search(conn, "items", "red", [("img", q)], weights=[1.0])


def test_filter_returns_k_rows(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    ref, mod = vecs["img"][3], vecs["img"][4]
    for method in ("weighted", "score_sum"):
        hits = retrieval.composed_search(
            conn, "items", "img", ref, mod, method=method, k=10, filter={"grp": 11}
        )
        assert len(hits) == 10 and all(int(h.key) % 50 == 11 for h in hits)


def test_reference_key_overload_excludes_reference(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    conn, vecs = items
    hits = retrieval.composed_search(
        conn, "items", "img", None, vecs["img"][9], reference_key=8, method="image_only", k=5
    )
    assert 8 not in [h.key for h in hits] and len(hits) == 5
    hits = retrieval.composed_search(
        conn,
        "items",
        "img",
        None,
        vecs["img"][9],
        reference_key=8,
        method="image_only",
        k=5,
        params={"exclude_reference": False},
    )
    assert hits[0].key == 8
    with pytest.raises(MMRError, match="has no embedding"):
        retrieval.composed_search(conn, "items", "img", None, vecs["img"][9], reference_key=99999)


# --- rerankers --------------------------------------------------------------------------------


def test_exact_reranker_after_halfvec(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    conn, vecs = items
    q = n(np.random.default_rng(5).standard_normal(D)).astype(np.float32)
    exact = vecs["img"] @ q
    hits = retrieval.search(
        conn,
        "items",
        "imgh",
        q,
        10,
        rerank="exact",
        rerank_params={"exact_space": "img"},
        rerank_depth=100,
    )
    assert len(hits) == 10
    for h in hits:
        assert abs(h.score - float(exact[h.key])) < 1e-6
    assert [h.key for h in hits] == [int(i) for i in np.argsort(-exact)[:10]]


def test_caption_and_mmr_rerankers(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    q = vecs["img"][30]
    base = retrieval.search(conn, "items", "img", q, 50)
    cq = vecs["cap"][base[-1].key]
    hits = retrieval.search(
        conn,
        "items",
        "img",
        q,
        5,
        rerank="caption",
        rerank_depth=50,
        rerank_params={"caption_space": "cap", "caption_query": cq, "weight": 0.9},
    )
    assert hits[0].key == base[-1].key
    div = retrieval.diversify_search(conn, "items", "img", q, 10, lambda_=0.3)
    assert len(div) == 10 and div[0].key == 30
    assert [h.key for h in div] != [h.key for h in base[:10]]


def test_diversify_and_its_deprecated_mmr_names(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    """Maximal Marginal Relevance is mmr.diversify_search and the reranker 'diversify'
    (mmr.rerank_diversify); the old names (mmr.mmr_search, reranker 'mmr', mmr.rerank_mmr)
    stay for one release and return the same rows."""
    conn, vecs = items
    from pgvector import Vector

    q = Vector(vecs["img"][30])
    a = {"q": q}
    div = conn.execute(
        "SELECT key, score FROM mmr.diversify_search('items', 'img', %(q)s, 10, 0.3)", a
    ).fetchall()
    assert len(div) == 10 and div[0][0] == 30
    plain = conn.execute("SELECT key, score FROM mmr.search('items', 'img', %(q)s, 10)", a)
    assert [k for k, _ in div] != [k for k, _ in plain.fetchall()]
    same = [
        "SELECT key, score FROM mmr.mmr_search('items', 'img', %(q)s, 10, 0.3)",
        "SELECT key, score FROM mmr.search('items', 'img', %(q)s, 10, rerank => 'diversify', "
        "rerank_depth => 50, rerank_params => '{\"lambda\": 0.3}')",
        "SELECT key, score FROM mmr.search('items', 'img', %(q)s, 10, rerank => 'mmr', "
        "rerank_depth => 50, rerank_params => '{\"lambda\": 0.3}')",
    ]
    for sql in same:
        assert conn.execute(sql, a).fetchall() == div, sql
    assert (
        retrieval.diversify_search(conn, "items", "img", vecs["img"][30], 10, lambda_=0.3)[0].key
        == 30
    )
    fns = dict(
        conn.execute(
            "SELECT name, function::text FROM mmr.rerankers WHERE name IN ('diversify', 'mmr')"
        ).fetchall()
    )
    assert set(fns.values()) == {
        "mmr.rerank_diversify(text,text,vector,jsonb[],double precision[],jsonb)"
    }
    (comment,) = conn.execute(
        "SELECT obj_description('mmr.mmr_search'::regproc, 'pg_proc')"
    ).fetchone() or (None,)
    assert comment is not None and "deprecated" in comment


def test_sql_and_python_reranker_registry(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    conn, vecs = items
    conn.execute(
        "CREATE FUNCTION public.rev(collection text, space text, query vector, keys jsonb[], "
        "scores float8[], params jsonb) RETURNS TABLE (key jsonb, score float8) LANGUAGE sql AS "
        "$$ SELECT k, s FROM unnest(keys, scores) WITH ORDINALITY u(k, s, o) ORDER BY o DESC $$"
    )
    retrieval.register_reranker(conn, "rev", "public.rev(text,text,vector,jsonb[],float8[],jsonb)")
    q = vecs["img"][40]
    base = retrieval.search(conn, "items", "img", q, 20)
    rev = retrieval.search(conn, "items", "img", q, 5, rerank="rev", rerank_depth=20)
    assert [h.key for h in rev] == [h.key for h in reversed(base)][:5]
    with pytest.raises(MMRError, match="reranker signature"):
        retrieval.register_reranker(conn, "bad", "pg_catalog.now()")

    def by_key(query: retrieval.QueryInfo, cands: list[Hit]) -> list[Hit]:
        assert query.collection == "items" and query.vector is not None
        return sorted(cands, key=lambda h: h.key)

    register_reranker(FunctionReranker(by_key, "by_key"))
    hits = retrieval.search(conn, "items", "img", q, 3, rerank="by_key", rerank_depth=20)
    assert [h.key for h in hits] == sorted(h.key for h in base)[:3]
    comp = retrieval.composed_search(
        conn, "items", "img", q, vecs["img"][41], k=3, rerank=by_key, rerank_depth=20
    )
    assert [h.key for h in comp] == sorted(h.key for h in comp) and len(comp) == 3
    with pytest.raises(InputError, match="no reranker named"):
        retrieval.search(conn, "items", "img", q, 3, rerank="nope")


# --- multi-vector, dialog -----------------------------------------------------------------------


def test_multivector_maxsim(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, _vecs = items
    rng = np.random.default_rng(6)
    retrieval.add_multivector_space(conn, "items", "regions", D)
    parts = {i: n(rng.standard_normal((3, D))).astype(np.float32) for i in range(150)}
    for i, p in parts.items():
        retrieval.put_multivectors(conn, "items", "regions", i, p)
    qs = n(rng.standard_normal((2, D))).astype(np.float32)
    hits = retrieval.multivector_search(conn, "items", "regions", qs, 5, candidates=300)
    score = {
        i: float(sum((p.astype(np.float64) @ q.astype(np.float64)).max() for q in qs))
        for i, p in parts.items()
    }
    best = sorted(score, key=lambda i: -score[i])[:5]
    assert [h.key for h in hits] == best
    for h in hits:
        assert abs(h.score - score[h.key]) < 1e-5
    # The statement must keep the HNSW shape (ORDER BY distance LIMIT n).  On these 450 rows,
    # once autovacuum has analysed the new table, a sequential scan is rightly cheaper, so the
    # plan would depend on timing: analyse now, and ask whether the index can serve the
    # statement (sequential scans priced out for the EXPLAIN only).
    (table,) = conn.execute(
        "SELECT embedding_table::text FROM mmr._multivector WHERE name = 'regions'"
    ).fetchone() or (None,)
    conn.execute(f"ANALYZE {table}")
    conn.execute("SET enable_seqscan = off")
    try:
        plan = _one(
            conn,
            "SELECT mmr.explain_multivector('items', 'regions', %s::vector[])",
            ([vec(q) for q in qs],),
        )
    finally:
        conn.execute("RESET enable_seqscan")
    assert "_hnsw" in str(plan)


def test_dialog_search(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    turns = [vecs["img"][1], vecs["img"][2]]
    last = retrieval.dialog_search(conn, "items", "img", turns, 3, weighting="last")
    assert last[0].key == 2
    mean = retrieval.dialog_search(conn, "items", "img", turns, 3)
    q = n(n(turns[0]) + n(turns[1]))
    assert abs(mean[0].score - float(np.max(vecs["img"] @ q))) < 1e-5


# --- plans -----------------------------------------------------------------------------------


def _index_scans(plan: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("Node Type") == "Index Scan" and str(node.get("Index Name", "")).endswith(
                "_hnsw"
            ):
                out.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(plan)
    return out


@pytest.mark.parametrize(
    ("method", "params", "legs"),
    [
        ("image_only", {}, 1),
        ("text_only", {}, 1),
        ("weighted", {}, 1),
        ("slerp", {}, 1),
        ("pdv", {"reference_caption": [0.1] * D}, 1),
        ("weimocir", {}, 1),
        ("score_sum", {}, 2),
        ("product", {}, 2),
        ("weimocir", {"caption_space": "cap", "reference_captions": [[0.2] * D]}, 2),
    ],
)
def test_composed_plans_use_hnsw(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
    method: str,
    params: dict[str, Any],
    legs: int,
) -> None:
    conn, vecs = items
    plan = retrieval.explain_composed(
        conn, "items", "img", vecs["img"][0], vecs["img"][1], method=method, params=params
    )
    scans = _index_scans(plan)
    assert len(scans) == legs, (method, plan)
    assert all("Order By" in s for s in scans)


def test_basic_and_hybrid_plans(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    basis, mu_t = retrieval.basic_projection(vecs["cap"][:40], vecs["cap"][40:80])
    retrieval.store_basic_projection(conn, "items", "img", basis, mu_t)
    # At 1,500 rows the planner may sort a 10-row probe instead of walking the graph; with
    # sequential scans off, every leg and probe must be served by the index (its shape allows it).
    conn.execute("SET enable_seqscan = off")
    try:
        plan = retrieval.explain_composed(
            conn, "items", "img", vecs["img"][0], vecs["img"][1], method="basic"
        )
    finally:
        conn.execute("RESET enable_seqscan")
    assert len(_index_scans(plan)) == 4  # two legs + the two minimum probes
    hits = retrieval.composed_search(
        conn, "items", "img", vecs["img"][0], vecs["img"][1], method="basic", k=5
    )
    assert len(hits) == 5
    plan = retrieval.explain_hybrid(
        conn, "items", "red circle", [("img", vecs["img"][0]), ("cap", vecs["cap"][0])]
    )
    assert len(_index_scans(plan)) == 2
    assert "_mmr_tsv_" in str(plan)


def test_errors_are_clear(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, vecs = items
    with pytest.raises(MMRError, match="does not take parameter"):
        retrieval.composed_search(
            conn, "items", "img", vecs["img"][0], vecs["img"][1], params={"alpah": 0.3}
        )
    with pytest.raises(MMRError, match="needs the reference's caption embedding"):
        retrieval.composed_search(
            conn, "items", "img", vecs["img"][0], vecs["img"][1], method="pdv"
        )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown composed-search"):
        conn.execute(
            "SELECT * FROM mmr.composed_search('items', 'img', %s::vector, %s::vector, 'nope')",
            (vec(vecs["img"][0]), vec(vecs["img"][1])),
        )
    with pytest.raises(MMRError, match="zero or non-finite"):
        retrieval.composed_search(
            conn, "items", "img", vecs["img"][0], -vecs["img"][0], params={"alpha": 0.5}
        )
    with pytest.raises(MMRError, match="unknown fusion method"):
        retrieval.hybrid_search(conn, "items", "red", fusion="borda")


# --- install contract ---------------------------------------------------------------------------


def test_functions_pin_search_path_and_are_documented(conn: psycopg.Connection[Any]) -> None:
    unpinned = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.pronamespace = 'mmr'::regnamespace AND p.prokind = 'f' "
        "AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false) "
        "AND p.prosqlbody IS NULL"
    ).fetchall()
    assert unpinned == []
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sql = "".join(
        p.read_text()
        for p in sorted((root / "sql" / "idempotent").glob("*.sql"))
        # the retrieval files (numbered 050-089 before issue 14 moved some down); the worker
        # documents its functions in worker.md (and its role in security.md)
        if p.name[:3] in ("020", "022", "024", "036") or "050" <= p.name[:3] < "090"
        if p.name != "060-worker.sql"
    )
    public = set(re.findall(r"CREATE OR REPLACE (?:FUNCTION|VIEW) mmr\.([a-z]\w*)", sql))
    docs = (root / "docs" / "retrieval.md").read_text()
    missing = sorted(n for n in public if not re.search(rf"`mmr\.{re.escape(n)}[`(]", docs))
    assert missing == []
    admin = (
        "set_projection",
        "create_text_index",
        "register_reranker",
        "add_multivector_space",
        "put_multivectors",
    )
    for fn in admin:
        (allowed,) = conn.execute(
            "SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE')) FROM pg_proc p "
            "WHERE p.pronamespace = 'mmr'::regnamespace AND p.proname = %s",
            (fn,),
        ).fetchone() or (None,)
        assert allowed is False, fn


def test_t10_imagescope_stage1_as_weighted_combsum(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    """ImageScope stage 1, S(x) = (1/M)Σ_m[(1−τ)cos(t_m, v_x) + τ·cos(t_m, c_x)], is CombSUM
    without normalisation over legs (img, t_m) and (cap, t_m) weighted (1−τ)/M and τ/M."""
    conn, vecs = items
    rng = np.random.default_rng(9)
    descs = n(rng.standard_normal((3, D))).astype(np.float32)

    def run(ds: np.ndarray[Any, Any], tau: float) -> list[Hit]:
        legs, weights = [], []
        for t in ds:
            legs += [("img", t), ("cap", t)]
            weights += [(1 - tau) / len(ds), tau / len(ds)]
        return retrieval.hybrid_search(
            conn,
            "items",
            None,
            legs,
            k=10,
            fusion="combsum",
            weights=weights,
            params={"norm": "none", "candidates": 1000},
            # 900 rows pass: every leg holds all of them, so no row lacks a term.
            filter={"grp": {"<": 30}},
        )

    def exact(ds: np.ndarray[Any, Any], tau: float) -> np.ndarray[Any, Any]:
        s = np.mean([(1 - tau) * vecs["img"] @ t + tau * vecs["cap"] @ t for t in ds], axis=0)
        s[np.arange(N) % 50 >= 30] = -np.inf
        return np.asarray(s)

    for tau in (0.0, 0.15):
        s = exact(descs, tau)
        hits = run(descs, tau)
        assert [h.key for h in hits] == [int(i) for i in np.argsort(-s)[:10]]
        assert all(abs(h.score - s[h.key]) < 1e-5 for h in hits)
    same = run(np.stack([descs[0]] * 3), 0.15)
    single = run(descs[:1], 0.15)
    assert [h.key for h in same] == [h.key for h in single]
    assert all(abs(a.score - b.score) < 1e-6 for a, b in zip(same, single, strict=True))


def test_plugin_content_reranker(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    """A plugin-style reranker (``score(query_item, contents)``) applied by the client."""
    conn, vecs = items

    class Contains:
        name = "contains"

        def score(self, query: Any, candidates: Any) -> list[float]:
            return [1.0 if str(query) in str(c) else 0.0 for c in candidates]

    register_reranker(FunctionReranker(retrieval.plugin_reranker(conn, Contains()), "contains"))
    q = vecs["img"][50]
    base = retrieval.search(conn, "items", "img", q, 30)
    hits = retrieval.search(
        conn,
        "items",
        "img",
        q,
        5,
        rerank="contains",
        rerank_depth=30,
        query_item="triangle",
        rerank_params={"content_column": "caption"},
    )
    caps = dict(
        conn.execute(
            "SELECT id, caption FROM items WHERE id = ANY(%s)", ([h.key for h in base],)
        ).fetchall()
    )
    expected = [h.key for h in base if "triangle" in caps[h.key]][:5]
    assert [h.key for h in hits][: len(expected)] == expected
    with pytest.raises(InputError, match="scores content"):
        retrieval.search(conn, "items", "img", q, 5, rerank="contains")


def test_multivector_tables_go_with_their_collection(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE mvdrop (id int PRIMARY KEY)")
    conn.execute("INSERT INTO mvdrop VALUES (1)")
    mmr.create_collection(conn, "mvdrop", "mvdrop")
    table = retrieval.add_multivector_space(conn, "mvdrop", "parts", 4)
    retrieval.put_multivectors(conn, "mvdrop", "parts", 1, [[1, 0, 0, 0], [0, 1, 0, 0]])
    assert _one(conn, f"SELECT count(*) FROM {table}") == 2
    mmr.drop_collection(conn, "mvdrop")
    assert _one(conn, "SELECT to_regclass(%s)", (table,)) is None


def test_lexical_leg_without_index(items: tuple[psycopg.Connection[Any], dict[str, Any]]) -> None:
    conn, _vecs = items
    with_index = [h.key for h in retrieval.hybrid_search(conn, "items", "dark square", k=8)]
    retrieval.drop_text_index(conn, "items")
    try:
        plan = retrieval.explain_hybrid(conn, "items", "dark square")
        assert "_mmr_tsv_" not in str(plan)
        assert [h.key for h in retrieval.hybrid_search(conn, "items", "dark square", k=8)] == (
            with_index
        )
    finally:
        retrieval.create_text_index(conn, "items")


def test_reranker_registered_like_a_plugin_is_found_by_name(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    """A reranker in the plugin registry (what ``register_rerankers`` fills) is applied by
    name: candidates reordered by their content (word overlap of the caption with the query)."""
    from pg_mmretrieval.rerankers import Reranker
    from pg_mmretrieval.rerankers import register_reranker as register_plugin_reranker

    class Overlap(Reranker):
        name = "test-overlap"

        def score(self, query: Any, candidates: Any) -> list[float]:
            words = set(str(query).split())
            return [float(len(words & set(str(c).split()))) for c in candidates]

    register_plugin_reranker(Overlap())
    conn, vecs = items
    q = vecs["img"][7]
    (caption,) = conn.execute("SELECT caption FROM items WHERE id = 7").fetchone()  # type: ignore[misc]
    base = retrieval.search(conn, "items", "img", q, 50)
    hits = retrieval.search(
        conn,
        "items",
        "img",
        q,
        5,
        rerank="test-overlap",
        rerank_depth=50,
        query_item=caption,
        rerank_params={"content_column": "caption"},
    )
    caps = dict(conn.execute("SELECT id, caption FROM items").fetchall())
    words = set(caption.split())
    overlaps = [len(words & set(caps[h.key].split())) for h in hits]
    assert overlaps == sorted(overlaps, reverse=True) and overlaps[0] == 3
    assert {h.key for h in hits} <= {h.key for h in base}


def test_deprecated_names_and_a_reranker_instance(
    items: tuple[psycopg.Connection[Any], dict[str, Any]],
) -> None:
    """``mmr_search`` (now ``diversify_search``) and ``register_python_reranker`` still work
    and warn; a :class:`Reranker` instance is accepted as ``rerank=`` directly."""
    from pg_mmretrieval.rerankers import Reranker

    conn, vecs = items
    q = vecs["img"][30]
    with pytest.warns(DeprecationWarning, match="diversify_search"):
        old = retrieval.mmr_search(conn, "items", "img", q, 10, lambda_=0.3)
    assert old == retrieval.diversify_search(conn, "items", "img", q, 10, lambda_=0.3)

    def reverse(query: retrieval.QueryInfo, cands: list[Hit]) -> list[Hit]:
        return list(reversed(cands))

    base = retrieval.search(conn, "items", "img", q, 20)
    with pytest.warns(DeprecationWarning, match="register_python_reranker"):
        retrieval.register_python_reranker("test-reverse", reverse)
    hits = retrieval.search(conn, "items", "img", q, 5, rerank="test-reverse", rerank_depth=20)
    assert [h.key for h in hits] == [h.key for h in reversed(base)][:5]

    class Reverse(Reranker):
        name = "reverse-instance"

        def rerank(self, query: retrieval.QueryInfo, candidates: list[Hit]) -> list[Hit]:
            return list(reversed(candidates))

    inst = retrieval.search(conn, "items", "img", q, 5, rerank=Reverse(), rerank_depth=20)
    assert inst == hits
