"""The search fast paths (per-space statement cache, sql/idempotent/088-statement-cache.sql).

mmr.search and mmr.composed_search run a cached statement when there is no filter and no
reranker; every other call builds its statement per call (the general path).  Arguments equal
to their defaults (``max_scan_tuples`` 20000) keep the fast path; ``SET mmr.fast_path = off``
forces the general path, so each fast-path result can be compared with the general path's on the
same data: they must be identical, for every fast-path method, every storage and distance, and
single and composite keys.  Invalid arguments must raise the general path's errors.

Every test runs twice: with mmr.search and mmr.composed_search bound to the native module
(native/pg_mmretrieval.c, whose general path is the PL/pgSQL functions) and bound to the PL/pgSQL
reference functions themselves (a server without the library), see 089-native.sql.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval
from pg_mmretrieval.errors import MMRError
from pg_mmretrieval.search import Hit

from .fusion_synth import n

D = 24
N = 400
FORCE_GENERAL = 20000  # max_scan_tuples at its default (the general path: with _general)

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def db(db_url: str) -> Iterator[tuple[Conn, dict[str, np.ndarray[Any, Any]]]]:
    """Two collections: `fp` (int key) with spaces img (vector, cosine), imgh (halfvec, cosine),
    imgb (bit: binary-quantised index, exact rerank; the native module hands it to the PL/pgSQL
    path) and l2 (vector, l2); `fpc` (composite key) with space img."""
    rng = np.random.default_rng(7)
    vecs = {
        "img": n(rng.standard_normal((N, D))).astype(np.float32),
        "l2": rng.standard_normal((N, D)).astype(np.float32),
        "cap": n(rng.standard_normal((N, D))).astype(np.float32),
    }
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fp (id int PRIMARY KEY, caption text)")
        words = ["red", "blue", "green", "circle", "square", "star", "small", "large"]
        conn.cursor().executemany(
            "INSERT INTO fp VALUES (%s, %s)",
            [(i, " ".join(rng.choice(words, 3, replace=False))) for i in range(N)],
        )
        conn.execute("CREATE TABLE fpc (a text, b int, PRIMARY KEY (a, b))")
        conn.execute(f"INSERT INTO fpc SELECT 'k' || (i % 7), i FROM generate_series(0, {N - 1}) i")
        mmr.create_collection(conn, "fp", "fp", text_columns=["caption"])
        retrieval.create_text_index(conn, "fp")
        mmr.create_collection(conn, "fpc", "fpc")
        for name, storage, distance, v in (
            ("img", "vector", "cosine", vecs["img"]),
            ("imgh", "halfvec", "cosine", vecs["img"]),
            ("imgb", "bit", "cosine", vecs["img"]),
            ("l2", "vector", "l2", vecs["l2"]),
            ("cap", "vector", "cosine", vecs["cap"]),
        ):
            mmr.add_space(conn, "fp", name, "external", None, D, storage=storage, distance=distance)
            # Rows 0-19 have no caption embedding (a candidate may lack one).
            keys = list(range(20, N)) if name == "cap" else list(range(N))
            mmr.put_embeddings(conn, "fp", name, keys, v[keys])
        mmr.add_space(conn, "fpc", "img", "external", None, D)
        mmr.put_embeddings(
            conn, "fpc", "img", [{"a": f"k{i % 7}", "b": i} for i in range(N)], vecs["img"]
        )
        yield conn, vecs


@pytest.fixture(autouse=True, params=["native", "plpgsql"])
def binding(db_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Bind the public search functions natively or to the PL/pgSQL reference functions."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(%s)", (request.param == "native",))
    yield str(request.param)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr._bind_search(true)")


def test_the_binding_is_in_place(db_url: str, binding: str) -> None:
    """make test installs the native module into the embedded server: it must be usable there
    (089-native.sql binds to it at install), and each binding must take."""
    with mmr.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT mmr._native_unavailable()").fetchone() == (None,), (
            "the native module is not installed in this server: run `make native`"
        )
        langs = conn.execute(
            "SELECT p.oid::regprocedure::text, l.lanname FROM pg_proc p "
            "JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.pronamespace = 'mmr'::regnamespace "
            "AND p.proname IN ('search', 'composed_search', 'gqr_refine') ORDER BY 1"
        ).fetchall()
    want = "c" if binding == "native" else "plpgsql"
    # both overloads of composed_search, gqr_refine, search
    assert [lang for _sig, lang in langs] == [want] * 4, langs


def test_native_unavailable_names_the_reason(db_url: str, binding: str) -> None:
    """A role that may not create C functions keeps the PL/pgSQL functions, with a reason."""
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS mmr_not_super")
        conn.execute("CREATE ROLE mmr_not_super")
        try:
            conn.execute("GRANT EXECUTE ON FUNCTION mmr._native_unavailable() TO mmr_not_super")
            conn.execute("SET ROLE mmr_not_super")
            (why,) = conn.execute("SELECT mmr._native_unavailable()").fetchone() or (None,)
            conn.execute("RESET ROLE")
            assert why is not None and "permission denied" in why
        finally:
            conn.execute("RESET ROLE")
            conn.execute("REVOKE ALL ON FUNCTION mmr._native_unavailable() FROM mmr_not_super")
            conn.execute("DROP ROLE mmr_not_super")


def _general(fn: Callable[..., list[Hit]], conn: Conn, *args: Any, **kw: Any) -> list[Hit]:
    """fn(conn, ...) on the general path: the fast paths switched off for the call."""
    conn.execute("SET mmr.fast_path = off")
    try:
        return fn(conn, *args, **kw)
    finally:
        conn.execute("RESET mmr.fast_path")


def _as_is(fn: Callable[..., list[Hit]], conn: Conn, *args: Any, **kw: Any) -> list[Hit]:
    return fn(conn, *args, **kw)


def _same(fast: list[Hit], general: list[Hit]) -> None:
    assert [h.key for h in fast] == [h.key for h in general]
    assert np.allclose([h.score for h in fast], [h.score for h in general], atol=1e-9)


def test_statement_cache_is_filled_and_current(db: tuple[Conn, Any]) -> None:
    conn, _ = db
    rows = conn.execute(
        "SELECT s.id, s.statements, mmr._space_statements(s), "
        "       mmr._search_sql(c, s, NULL) "
        "  FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id"
    ).fetchall()
    assert len(rows) == 6
    for _id, stored, rebuilt, search_sql in rows:
        assert stored == rebuilt
        assert stored["search"] == search_sql
        assert set(stored) == {
            "search",
            "single_excl",
            "score_sum",
            "product",
            "score_sum_checked",
            "product_checked",
            "gqr_checked",
            "gqr",
            "leg_agg",
            "embedding_of",
            "weimocir_leg_1",
            "weimocir_leg_2",
            "weimocir_sims_1",
            "weimocir_sims_2",
            "weimocir_ref",
        }
    # A new version of a space gets its own statements (its own embedding table).
    mmr.add_space(conn, "fp", "img", "external", None, D, new_version=True)
    row = conn.execute(
        "SELECT statements ->> 'search', embedding_table::text FROM mmr._space "
        "WHERE name = 'img' AND version = 2 AND collection_id = "
        "(SELECT id FROM mmr._collection WHERE name = 'fp')"
    ).fetchone()
    assert row is not None and row[1] in row[0]
    mmr.drop_space(conn, "fp", "img", version=2)


@pytest.mark.parametrize("space", ["img", "imgh", "imgb", "l2"])
def test_search_fast_path_equals_general_path(db: tuple[Conn, Any], space: str) -> None:
    conn, vecs = db
    rng = np.random.default_rng(1)
    base = vecs["l2" if space == "l2" else "img"]
    for i in rng.integers(0, N, 8):
        q = base[i] + 0.05 * rng.standard_normal(D).astype(np.float32)
        for k in (1, 10, 60):
            fast = retrieval.search(conn, "fp", space, q, k)
            general = _general(
                retrieval.search, conn, "fp", space, q, k, max_scan_tuples=FORCE_GENERAL
            )
            assert len(fast) == k
            _same(fast, general)
        assert retrieval.search(conn, "fp", space, base[i], 1)[0].key == int(i)


FAST_METHODS: list[tuple[str, dict[str, Any]]] = [
    ("image_only", {}),
    ("text_only", {}),
    ("weighted", {}),
    ("weighted", {"alpha": 0.3}),
    ("slerp", {"alpha": 0.7}),
    ("score_sum", {}),
    ("product", {"candidates": 60}),
    ("weimocir", {"alpha": 0.6}),
    ("gqr", {}),
    ("gqr", {"alpha": 0.4, "a": 0.7, "temperature": 0.5, "lr": 0.01, "steps": 5, "candidates": 12}),
]


@pytest.mark.parametrize(
    "params",
    [
        {"caption_space": "cap"},
        {"caption_space": "cap", "alpha": 0.5, "beta": 0.6, "candidates": 50},
        {"caption_space": "l2", "beta": 0.3},
    ],
)
def test_weimocir_caption_fast_path_equals_general_path(
    db: tuple[Conn, Any], params: dict[str, Any]
) -> None:
    conn, vecs = db
    rng = np.random.default_rng(4)
    refs = [*rng.integers(0, N, 6).tolist(), 3]  # row 3 has no caption embedding: general error
    for r in refs:
        m = vecs["img"][rng.integers(0, N)]
        for excl in (True, False):
            args: dict[str, Any] = {
                "method": "weimocir",
                "params": dict(params, exclude_reference=excl),
                "reference_key": int(r),
            }
            if r < 20 and params["caption_space"] == "cap":
                for extra in ({}, {"max_scan_tuples": FORCE_GENERAL}):
                    with pytest.raises(MMRError, match="has no embedding in space 'cap'"):
                        call = _general if extra else _as_is
                        call(retrieval.composed_search, conn, "fp", "img", None, m, **args, **extra)
                continue
            fast = retrieval.composed_search(conn, "fp", "img", None, m, **args)
            general = _general(
                retrieval.composed_search,
                conn,
                "fp",
                "img",
                None,
                m,
                max_scan_tuples=FORCE_GENERAL,
                **args,
            )
            assert len(fast) == 10
            _same(fast, general)
            assert (int(r) in [h.key for h in fast]) is (
                False if excl else int(r) in [h.key for h in general]
            )


@pytest.mark.parametrize(("method", "params"), FAST_METHODS)
def test_composed_fast_path_equals_general_path(
    db: tuple[Conn, Any], method: str, params: dict[str, Any]
) -> None:
    conn, vecs = db
    img = vecs["img"]
    rng = np.random.default_rng(2)
    for space in ("img", "imgh"):
        for _ in range(5):
            r, m = rng.integers(0, N, 2)
            args: dict[str, Any] = {"method": method, "params": params, "k": 10}
            fast = retrieval.composed_search(conn, "fp", space, img[r], img[m], **args)
            general = _general(
                retrieval.composed_search,
                conn,
                "fp",
                space,
                img[r],
                img[m],
                max_scan_tuples=FORCE_GENERAL,
                **args,
            )
            assert len(fast) == 10
            _same(fast, general)
            # By stored key: the reference is excluded unless exclude_reference is false.
            for excl in (True, False):
                kp = dict(params, exclude_reference=excl)
                by_key = {**args, "params": kp}
                fast = retrieval.composed_search(
                    conn, "fp", space, None, img[m], reference_key=int(r), **by_key
                )
                general = _general(
                    retrieval.composed_search,
                    conn,
                    "fp",
                    space,
                    None,
                    img[m],
                    reference_key=int(r),
                    max_scan_tuples=FORCE_GENERAL,
                    **by_key,
                )
                _same(fast, general)
                keys = [h.key for h in fast]
                if excl:
                    assert int(r) not in keys
                elif method == "image_only":
                    assert keys[0] == int(r)


# The by-key overload's fast-path cases: every fast method (GQR has none by key) and WeiMoCIR
# with a caption space, k 10 and 100 (a caption leg of 400 candidates on a space of 380 rows
# comes back short: the plan's plain statement reruns with iterative scans).
KEY_CASES: list[tuple[str, dict[str, Any]]] = [
    *[(m, p) for m, p in FAST_METHODS if m != "gqr"],
    ("weimocir", {"caption_space": "cap"}),
    ("weimocir", {"caption_space": "cap", "alpha": 0.5, "beta": 0.6, "candidates": 50}),
]
BY_KEY = (
    "SELECT * FROM mmr.composed_search('fp', 'img', %(r)s::jsonb, %(m)s, %(method)s, %(k)s, "
    "%(p)s::jsonb)"
)
KEY_PLAN = (
    "SELECT p.exclude, p.rest FROM mmr._composed_key_exec_plan('fp', 'img', %(r)s::jsonb, "
    "%(m)s, %(method)s, %(k)s, %(p)s::jsonb, NULL, NULL, NULL, NULL, NULL, NULL) p"
)


@pytest.mark.parametrize(("method", "params"), KEY_CASES)
def test_by_key_planner_plan_equals_general_path(
    db: tuple[Conn, Any], binding: str, method: str, params: dict[str, Any]
) -> None:
    """The by-key overload runs its SQL planner's plan (mmr._composed_key_exec_plan) in both
    bindings, never its general path, with the same rows as the general path (mmr.fast_path
    off), the reference left out unless exclude_reference is false."""
    conn, vecs = db
    from pgvector import Vector

    rng = np.random.default_rng(5)
    two_legs = method in ("score_sum", "product") or "caption_space" in params
    for r in rng.integers(20, N, 3).tolist():
        for k in (10, 100):
            for excl in (True, False):
                a = {
                    "r": str(r),
                    "m": Vector(vecs["img"][rng.integers(0, N)]),
                    "method": method,
                    "k": k,
                    "p": json.dumps(dict(params, exclude_reference=excl)),
                }
                assert conn.execute(KEY_PLAN, a).fetchall() == [
                    (r if excl else None, "rerun" if two_legs else "offset")
                ]
                calls = _calls(conn, BY_KEY, a)
                # the planner is inlined SQL: WeiMoCIR with a caption space plans without a
                # PL/pgSQL planner, every other method with the by-vector planner's plan
                vector_planned = "_composed_key_vector_plan" in calls
                assert vector_planned != ("caption_space" in params), calls
                assert ("_composed_exec_plan" in calls) == vector_planned, calls
                assert "_composed_search_key_general" not in calls, calls
                if k == 100 and params == {"caption_space": "cap"}:
                    # the caption leg (380 rows) short of 400 candidates: the plain form reruns
                    assert "_exec_rest" in calls, calls
                fast = conn.execute(BY_KEY, a).fetchall()
                conn.execute("SET mmr.fast_path = off")
                try:
                    calls = _calls(conn, BY_KEY, a)
                    assert "_composed_search_key_general" in calls, calls
                    assert "_composed_key_vector_plan" not in calls, calls
                    general = conn.execute(BY_KEY, a).fetchall()
                finally:
                    conn.execute("RESET mmr.fast_path")
                assert len(fast) == k
                assert [x[0] for x in fast] == [x[0] for x in general]
                assert np.allclose([x[1] for x in fast], [x[1] for x in general], atol=1e-9)
                if excl:
                    assert r not in [x[0] for x in fast]
    # No plan (the general path decides): a filter, GQR, a non-boolean exclude_reference.
    a = {"r": "50", "m": Vector(vecs["img"][9]), "method": method, "k": 10, "p": "{}"}
    none = (
        "SELECT count(*) FROM mmr._composed_key_exec_plan('fp', 'img', %(r)s::jsonb, %(m)s, "
        "%(method)s, %(k)s, %(p)s::jsonb, %(f)s::jsonb, NULL, NULL, NULL, NULL, NULL)"
    )
    assert conn.execute(none, dict(a, f='{"caption": "red"}')).fetchone() == (0,)
    assert conn.execute(none, dict(a, method="gqr", f=None)).fetchone() == (0,)
    bad = json.dumps(dict(params, exclude_reference="yes"))
    assert conn.execute(none, dict(a, p=bad, f=None)).fetchone() == (0,)


KEY_PLAN_GENERIC = (
    "SELECT p FROM mmr._composed_key_exec_plan($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    "$12, $13) p"
)


def test_weimocir_by_key_plans_without_a_plpgsql_planner(
    db: tuple[Conn, Any], binding: str
) -> None:
    """WeiMoCIR with a caption space by key is planned by the by-key planner's inlined SQL
    branch: in the kept generic plan (the native executor's) the other branch's PL/pgSQL
    planner (mmr._composed_key_vector_plan) is never run, the planner reads no embedding (the
    statement reads the reference's two itself: no mmr._kept_vector) and, natively, the
    statement's two texts come from the memo once each (mmr._memo_get) with no PL/pgSQL call
    but mmr._candidates; the rows are the general path's."""
    conn, vecs = db
    from pgvector import Vector

    a = {
        "r": "77",
        "m": Vector(vecs["img"][31]),
        "method": "weimocir",
        "k": 10,
        "p": json.dumps({"caption_space": "cap", "beta": 0.3}),
    }
    first = conn.execute(BY_KEY, a).fetchall()  # the memo filled, the plans kept
    for _ in range(5):
        # a memo hit (another session's invalidation, e.g. autovacuum's, empties the memo)
        calls = _calls(conn, BY_KEY, a)
        if binding != "native" or "_weimocir_key_text" not in calls:
            break
    plpgsql = {
        r[0]
        for r in conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
            "WHERE p.pronamespace = 'mmr'::regnamespace AND l.lanname = 'plpgsql'"
        ).fetchall()
    }
    assert "_composed_key_vector_plan" not in calls and "_composed_exec_plan" not in calls
    assert "_composed_search_key_general" not in calls and "_kept_vector" not in calls, calls
    if binding == "native":
        assert calls.get("_memo_get") == 2 and "_weimocir_key_text" not in calls, calls
        assert {f for f in calls if f in plpgsql} == {"_candidates"}, calls
    else:  # the PL/pgSQL binding memoizes nothing: the texts are built per call
        assert calls.get("_weimocir_key_text") == 2, calls
    with conn.transaction():
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # arguments bound client-side: $1 ... are the prepared statement's parameters
        cur = psycopg.ClientCursor(conn)
        cur.execute(
            "PREPARE key_plan(text, text, jsonb, vector, text, int, jsonb, jsonb, int, int, "
            "text, int, jsonb) AS " + KEY_PLAN_GENERIC
        )
        try:
            explain = "\n".join(
                r[0]
                for r in cur.execute(
                    "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF, BUFFERS OFF) "
                    "EXECUTE key_plan('fp', 'img', %(r)s, %(m)s, %(method)s, %(k)s, %(p)s, "
                    "NULL, NULL, NULL, NULL, NULL, NULL)",
                    a,
                ).fetchall()
            )
        finally:
            cur.execute("DEALLOCATE key_plan")
    scans = [line.strip() for line in explain.splitlines() if "Function Scan" in line]
    # the planner inlined; the other branch's PL/pgSQL planner behind a one-time condition
    assert "_composed_key_exec_plan" not in explain, explain
    assert (
        [s for s in scans if "_composed_key_vector_plan" in s]
        == [s for s in scans if "_composed_key_vector_plan" in s and "never executed" in s]
        != []
    ), explain
    conn.execute("SET mmr.fast_path = off")
    try:
        general = conn.execute(BY_KEY, a).fetchall()
    finally:
        conn.execute("RESET mmr.fast_path")
    assert len(first) == 10 and [x[0] for x in first] == [x[0] for x in general]
    assert np.allclose([x[1] for x in first], [x[1] for x in general], atol=1e-9)
    assert 77 not in [x[0] for x in first]


def test_the_by_key_planner_statement_keeps_a_generic_plan(
    db: tuple[Conn, Any], binding: str
) -> None:
    """A prepared statement calling the inlined by-key planner with its names as constants and
    the other arguments as parameters (bench/key_planner.py's) gets its generic plan after the
    five custom ones PostgreSQL tries first, rather than the planner planned on every call
    (its PL/pgSQL branch is declared ROWS 1: at 1000 rows the generic plan cost more)."""
    conn, vecs = db
    from pgvector import Vector

    cur = psycopg.ClientCursor(conn)
    cur.execute(
        "PREPARE key_plan_auto(jsonb, vector, text, jsonb) AS SELECT count(*) FROM "
        "mmr._composed_key_exec_plan('fp', 'img', $1, $2, $3, 10, $4, NULL, NULL, NULL, NULL, "
        "NULL, NULL)"
    )
    cases = [("weimocir", '{"caption_space": "cap"}'), ("weighted", "{}"), ("score_sum", "{}")]
    try:
        for i in range(9):
            method, params = cases[i % 3]
            cur.execute(
                "EXECUTE key_plan_auto(%s, %s, %s, %s)",
                (str(20 + i), Vector(vecs["img"][i]), method, params),
            )
            assert cur.fetchone() == (1,)
        plans = cur.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE name = 'key_plan_auto'"
        ).fetchone()
    finally:
        cur.execute("DEALLOCATE key_plan_auto")
    assert plans == (4, 5), plans


def test_composite_keys_on_the_fast_path(db: tuple[Conn, Any]) -> None:
    conn, vecs = db
    img = vecs["img"]
    key = {"a": "k3", "b": 10}
    hits = retrieval.search(conn, "fpc", "img", img[10], 5)
    assert hits[0].key == key
    _same(
        hits,
        _general(retrieval.search, conn, "fpc", "img", img[10], 5, max_scan_tuples=FORCE_GENERAL),
    )
    for method in ("weighted", "score_sum"):
        fast = retrieval.composed_search(
            conn, "fpc", "img", None, img[11], reference_key=key, method=method
        )
        assert key not in [h.key for h in fast]
        general = _general(
            retrieval.composed_search,
            conn,
            "fpc",
            "img",
            None,
            img[11],
            reference_key=key,
            method=method,
            max_scan_tuples=FORCE_GENERAL,
        )
        _same(fast, general)


def test_fast_path_scopes_ef_search_and_returns_k_rows(db: tuple[Conn, Any]) -> None:
    conn, vecs = db
    conn.execute("SET hnsw.ef_search = 5")
    try:
        # k above the session's ef_search and above the default 40: the call raises it.
        assert len(retrieval.search(conn, "fp", "img", vecs["img"][0], 100)) == 100
        assert (
            len(retrieval.composed_search(conn, "fp", "img", vecs["img"][0], vecs["img"][1], k=100))
            == 100
        )
        assert (
            len(
                retrieval.composed_search(
                    conn, "fp", "img", vecs["img"][0], vecs["img"][1], method="score_sum", k=100
                )
            )
            == 100
        )
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("5",)
    finally:
        conn.execute("RESET hnsw.ef_search")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "SELECT * FROM mmr.search('fp', 'img', %(short)s)",
            "has 3 dimensions, but the space has 24",
        ),
        ("SELECT * FROM mmr.search('fp', 'img', %(zero)s)", "zero vector"),
        ("SELECT * FROM mmr.search('nope', 'img', %(q)s)", "collection 'nope' does not exist"),
        ("SELECT * FROM mmr.search('fp', 'nope', %(q)s)", "space 'nope' (version active)"),
        ("SELECT * FROM mmr.search('fp', 'img', %(q)s, 0)", "k must be between 1 and 1000"),
        (
            "SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(zero)s)",
            "the modifier vector is a zero vector",
        ),
        (
            "SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(q)s, 'weighted', 10, "
            '\'{"alpha": "x"}\')',
            "alpha",
        ),
        (
            "SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(q)s, 'score_sum', 10, "
            "'{\"beta\": 1}')",
            "does not take parameter(s) 'beta'",
        ),
        (
            "SELECT * FROM mmr.composed_search('fp', 'img', '12345'::jsonb, %(q)s)",
            "has no embedding in space 'img'",
        ),
    ],
)
def test_fast_path_arguments_get_the_general_errors(
    db: tuple[Conn, Any], call: str, message: str
) -> None:
    conn, vecs = db
    from pgvector import Vector

    args = {
        "q": Vector(vecs["img"][0]),
        "short": Vector(np.ones(3, dtype=np.float32)),
        "zero": Vector(np.zeros(D, dtype=np.float32)),
    }
    with pytest.raises(psycopg.Error) as err:
        conn.execute(call, args).fetchall()
    assert message in str(err.value)
    # The Python client maps it to an MMRError with the same message.
    with pytest.raises(MMRError, match="zero vector"):
        retrieval.search(conn, "fp", "img", np.zeros(D, dtype=np.float32))


HYBRID_CASES: list[tuple[str, list[str], str, dict[str, Any], list[float] | None]] = [
    ("red circle", ["img"], "rrf", {}, None),
    ("red circle", ["img", "l2"], "rrf", {"rrf_k": 10}, [2.0, 1.0, 0.5]),
    ("blue", [], "rrf", {}, None),
    ("", ["img", "imgh"], "rrf", {"candidates": 70}, None),
    ("green star", ["img"], "combsum", {}, None),
    ("green star", ["img", "l2"], "combmnz", {"norm": "zscore"}, [1.0, 0.5, 2.0]),
    ("large", ["imgh"], "combsum", {"norm": "none"}, None),
]


@pytest.mark.parametrize(("text", "spaces", "fusion", "params", "weights"), HYBRID_CASES)
def test_hybrid_fast_path_equals_general_path(
    db: tuple[Conn, Any],
    text: str,
    spaces: list[str],
    fusion: str,
    params: dict[str, Any],
    weights: list[float] | None,
) -> None:
    conn, vecs = db
    rng = np.random.default_rng(3)
    for i in rng.integers(0, N, 4):
        legs = [(sp, vecs["l2" if sp == "l2" else "img"][i]) for sp in spaces]
        args: dict[str, Any] = {"k": 10, "fusion": fusion, "params": params, "weights": weights}
        fast = retrieval.hybrid_search(conn, "fp", text, legs, **args)
        general = _general(
            retrieval.hybrid_search, conn, "fp", text, legs, max_scan_tuples=FORCE_GENERAL, **args
        )
        assert len(fast) == 10
        _same(fast, general)


def _calls(
    conn: Conn, sql: str, args: dict[str, Any], by_signature: bool = False
) -> dict[str, int]:
    """The mmr functions a statement called: pg_stat_xact_user_functions before and after it,
    in one transaction (the view also shows calls not yet flushed from earlier ones).  With
    args["mst"] == FORCE_GENERAL, on the general path (mmr.fast_path off for the statement).
    by_signature: keyed by signature (overloads apart), else by name."""
    count = (
        f"SELECT {'funcid::regprocedure::text' if by_signature else 'funcname'}, calls "
        "FROM pg_stat_xact_user_functions WHERE schemaname = 'mmr'"
    )
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")
        if args.get("mst") == FORCE_GENERAL:
            conn.execute("SET LOCAL mmr.fast_path = off")
        before = dict(conn.execute(count).fetchall())
        conn.execute(sql, args).fetchall()
        after = dict(conn.execute(count).fetchall())
    return {f: c - before.get(f, 0) for f, c in after.items() if c > before.get(f, 0)}


def test_the_fast_paths_are_taken(db: tuple[Conn, Any], binding: str) -> None:
    conn, vecs = db
    from pgvector import Vector

    a = {"q": Vector(vecs["img"][5]), "m": Vector(vecs["img"][9]), "mst": None}
    general = dict(a, mst=FORCE_GENERAL)
    search = "SELECT * FROM mmr.search('fp', 'img', %(q)s, 10, max_scan_tuples => %(mst)s)"
    assert "_search_sql" not in _calls(conn, search, a)
    assert "_search_sql" in _calls(conn, search, general)
    for method, params in (("weighted", "{}"), ("score_sum", "{}")):
        composed = (
            f"SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(m)s, '{method}', 10, "
            f"'{params}', max_scan_tuples => %(mst)s)"
        )
        fast = _calls(conn, composed, a)
        assert "_composed_plan" not in fast
        # Both bindings run the method's builder (named by mmr._composed_fast_planner, which
        # the native executor asks once per method and session; the builders are inlined SQL):
        # weighted fuses with mmr.vec_lerp, the two-leg score_sum checks its candidates
        # (mmr._candidates).  The by-key planner is not called by vector.
        if binding == "plpgsql":
            assert "_composed_fast_planner" in fast
        assert "_composed_key_exec_plan" not in fast
        assert ("_candidates" in fast) == (method == "score_sum")
        if method == "weighted":
            assert "vec_normalize" in fast
        assert "_top_up_scan" not in fast  # complete scans: no second one
        assert "_composed_plan" in _calls(conn, composed, general)
    # By stored key: natively the PL/pgSQL reference function is not called at all (in the
    # PL/pgSQL binding the public function is its copy).
    for method in ("weighted", "score_sum", "weimocir"):
        params = '{"caption_space": "cap"}' if method == "weimocir" else "{}"
        by_key = (
            f"SELECT * FROM mmr.composed_search('fp', 'img', '50'::jsonb, %(m)s, '{method}', 10, "
            f"'{params}', max_scan_tuples => %(mst)s)"
        )
        fast = _calls(conn, by_key, a)
        assert "_composed_plan" not in fast
        assert "_composed_search_key_plpgsql" not in fast, method
        assert "_composed_plan" in _calls(conn, by_key, general)
    gqr = (
        "SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(m)s, 'gqr', 10, '{}', "
        "max_scan_tuples => %(mst)s)"
    )
    fast = _calls(conn, gqr, a)
    assert "gqr_refine" in fast
    # Both bindings take GQR's fast path (the planner's cached GQR statement).
    assert "_composed_plan" not in fast
    assert "_composed_plan" in _calls(conn, gqr, general)
    wmc = (
        "SELECT * FROM mmr.composed_search('fp', 'img', '50'::jsonb, %(m)s, 'weimocir', 10, "
        '\'{"caption_space": "cap"}\', max_scan_tuples => %(mst)s)'
    )
    fast = _calls(conn, wmc, a)
    # the candidates each leg did not return, once per leg (the planner does not copy the
    # call to each use of its result, _weimocir_key_sql)
    assert "_composed_plan" not in fast and fast.get("_keys_except") == 2, fast
    # Both bindings run the by-key planner's plan: one statement (legs, scores by key, fusion),
    # planned by its inlined SQL branch (no PL/pgSQL planner).
    assert "_composed_search_key_general" not in fast
    assert "_composed_key_vector_plan" not in fast and "_composed_exec_plan" not in fast
    assert "_composed_plan" in _calls(conn, wmc, general)
    hybrid = (
        "SELECT * FROM mmr.hybrid_search('fp', 'red', ARRAY['img'], ARRAY[%(q)s::vector], 10, "
        "max_scan_tuples => %(mst)s)"
    )
    assert "_hybrid_plan" not in _calls(conn, hybrid, a)
    assert "_hybrid_plan" in _calls(conn, hybrid, general)


def _outcome(conn: Conn, sql: str, args: dict[str, Any]) -> tuple[Any, ...]:
    """The rows a statement returns, or its error's SQLSTATE and message."""
    try:
        with conn.transaction():
            return ("rows", conn.execute(sql, args).fetchall())
    except psycopg.Error as e:
        return ("error", e.sqlstate, str(e).splitlines()[0])


@pytest.mark.parametrize(
    ("case", "ref", "mod"),
    [
        ("no such row", "987654", "img"),
        ("no caption embedding", "7", "img"),  # rows 0-19 have none in cap
        ("zero modifier", "77", "zero"),
        ("wrong dimension", "77", "short"),
        ("valid", "77", "img"),
    ],
)
def test_weimocir_by_key_statement_reads_its_reference(
    db: tuple[Conn, Any], binding: str, case: str, ref: str, mod: str
) -> None:
    """WeiMoCIR with a caption space by key: its statement reads the reference's two stored
    embeddings and fuses the queries itself; a reference it cannot use returns no row from the
    checked form, and the plain form hands the call to the general path, so every call answers
    as with the fast path off: the same rows, or the same error (an invalid modifier the
    planner declines itself)."""
    conn, vecs = db
    from pgvector import Vector

    m = {
        "img": Vector(vecs["img"][31]),
        "zero": Vector(np.zeros(D, dtype=np.float32)),
        "short": Vector(np.ones(3, dtype=np.float32)),
    }[mod]
    a = {
        "r": ref,
        "m": m,
        "method": "weimocir",
        "k": 10,
        "p": json.dumps({"caption_space": "cap", "beta": 0.3, "exclude_reference": False}),
    }
    fast = _outcome(conn, BY_KEY, a)
    conn.execute("SET mmr.fast_path = off")
    try:
        general = _outcome(conn, BY_KEY, a)
    finally:
        conn.execute("RESET mmr.fast_path")
    if fast[0] == "rows":
        assert general[0] == "rows" and [r[0] for r in fast[1]] == [r[0] for r in general[1]]
        assert np.allclose([r[1] for r in fast[1]], [r[1] for r in general[1]], atol=1e-9)
    else:
        assert fast == general
    if case == "valid":
        assert fast[0] == "rows" and len(fast[1]) == 10
        assert "_composed_search_key_general" not in _calls(conn, BY_KEY, a)
    else:
        # the general path's explanatory error, by way of the plain form (the reference) or
        # of the planner (the modifier)
        assert fast[0] == "error", fast


def test_default_valued_arguments_take_the_same_path(db: tuple[Conn, Any], binding: str) -> None:
    """A search with arguments equal to their defaults runs exactly what it runs without them
    (issue 14): the same functions, the same number of times."""
    conn, vecs = db
    from pgvector import Vector

    a = {"q": Vector(vecs["img"][5]), "m": Vector(vecs["img"][9])}
    defaults = "ef_search => NULL, max_scan_tuples => 20000, rerank => NULL, rerank_depth => NULL"
    calls = [
        "mmr.search('fp', 'img', %(q)s{})",
        "mmr.search('fp', 'img', %(q)s, k => 10, filter => NULL{})",
        "mmr.composed_search('fp', 'img', %(q)s, %(m)s{})",
        "mmr.composed_search('fp', 'img', %(q)s, %(m)s, method => 'weighted', params => '{{}}'{})",
        "mmr.composed_search('fp', 'img', %(q)s, %(m)s, 'score_sum'{})",
        "mmr.composed_search('fp', 'img', '50'::jsonb, %(m)s, 'weighted'{})",
        "mmr.hybrid_search('fp', 'red', ARRAY['img'], ARRAY[%(q)s::vector]{})",
    ]
    for call in calls:
        without, with_defaults = (
            "SELECT * FROM " + call.format(extra) for extra in ("", ", " + defaults)
        )
        for sql in (without, with_defaults):  # warm: constants folded once per session
            conn.execute(sql, a).fetchall()
        bare = _calls(conn, without, a, by_signature=True)
        assert bare, call
        assert _calls(conn, with_defaults, a, by_signature=True) == bare, call


def test_a_plan_without_its_statement_takes_the_general_path(
    db: tuple[Conn, Any], binding: str
) -> None:
    """The composed planners read a space's cached statement once and leave the check that the
    cache holds it to the executors: a plan whose statement is missing (a cache from another
    release, or tampered with) is no plan, and the call takes the general path with the same
    rows, never a crash of the native executor (a NULL statement read as text)."""
    conn, vecs = db
    img = vecs["img"]
    methods = ("image_only", "weighted", "slerp", "score_sum", "gqr")
    expected = {
        m: retrieval.composed_search(conn, "fp", "img", img[3], img[4], method=m, k=5)
        for m in methods
    }
    with conn.transaction():
        # the trigger would rebuild the cache on UPDATE: off for this transaction only
        conn.execute("ALTER TABLE mmr._space DISABLE TRIGGER _space_statements")
        conn.execute(
            "UPDATE mmr._space s SET statements = s.statements - 'search' - 'score_sum_checked' "
            "- 'gqr_checked' FROM mmr._collection c "
            "WHERE c.id = s.collection_id AND c.name = 'fp' AND s.name = 'img'"
        )
        for m in methods:
            got = retrieval.composed_search(conn, "fp", "img", img[3], img[4], method=m, k=5)
            _same(got, expected[m])
        from pgvector import Vector

        a = {"q": Vector(img[3]), "m": Vector(img[4]), "mst": None}
        assert "_composed_plan" in _calls(
            conn,
            "SELECT * FROM mmr.composed_search('fp', 'img', %(q)s, %(m)s, 'weighted', 5, '{}', "
            "max_scan_tuples => %(mst)s)",
            a,
        )
        raise psycopg.Rollback()


def test_fast_paths_top_up_past_invisible_index_entries(db_url: str) -> None:
    """The fast paths scan without iterative scans; when the ef_search nearest index entries are
    dead rows (deleted, not yet vacuumed), they must still return k rows, the same as the
    general path (which scans iteratively), and leave the session's settings alone."""
    rng = np.random.default_rng(11)
    img = n(rng.standard_normal((N, D))).astype(np.float32)
    cap = n(img + 0.3 * rng.standard_normal((N, D))).astype(np.float32)
    q, m = img[0], img[1]
    with mmr.connect(db_url, autocommit=True) as conn:
        # run once per binding on the module's database
        conn.execute("SELECT mmr.drop_collection(name) FROM mmr._collection WHERE name = 'fpd'")
        conn.execute("DROP TABLE IF EXISTS fpd")
        conn.execute("CREATE TABLE fpd (id int PRIMARY KEY, caption text)")
        conn.execute(f"INSERT INTO fpd SELECT i, 'red circle' FROM generate_series(0, {N - 1}) i")
        mmr.create_collection(conn, "fpd", "fpd", text_columns=["caption"])
        retrieval.create_text_index(conn, "fpd")
        tables = {}
        for name, v in (("img", img), ("cap", cap)):
            mmr.add_space(conn, "fpd", name, "external", None, D)
            mmr.put_embeddings(conn, "fpd", name, list(range(N)), v)
            row = conn.execute(
                "SELECT s.embedding_table::text FROM mmr._space s JOIN mmr._collection c "
                "ON c.id = s.collection_id WHERE c.name = 'fpd' AND s.name = %s",
                (name,),
            ).fetchone()
            assert row is not None
            tables[name] = row[0]
            conn.execute(f"ALTER TABLE {tables[name]} SET (autovacuum_enabled = false)")
        # Delete the 60 rows nearest to the query and to the weighted query, in both spaces:
        # their index entries stay until VACUUM, and they fill a plain scan's 40 candidates.
        wq = n(0.5 * q + 0.5 * m)
        dead = sorted(
            set(np.argsort(-(img @ q))[1:61].tolist()) | set(np.argsort(-(img @ wq))[2:62].tolist())
        )
        for t in tables.values():
            conn.execute(f"DELETE FROM {t} WHERE id = ANY(%s)", (dead,))
        from pgvector import Vector

        conn.execute("SET enable_seqscan = off")  # 400 rows: the planner would sort them all
        plain = conn.execute(
            f"SELECT id FROM {tables['img']} ORDER BY embedding <=> %s LIMIT 10", (Vector(q),)
        ).fetchall()
        assert len(plain) < 10  # the situation the top-up is for
        conn.execute("SET hnsw.iterative_scan = relaxed_order")
        try:
            fast = retrieval.search(conn, "fpd", "img", q, 10)
            general = _general(
                retrieval.search, conn, "fpd", "img", q, 10, max_scan_tuples=FORCE_GENERAL
            )
            assert len(fast) == 10
            _same(fast, general)
            live = [i for i in np.argsort(-(img @ q)).tolist() if i not in dead][:10]
            assert [h.key for h in fast] == live
            for method in ("weighted", "score_sum"):
                call = f"SELECT * FROM mmr.composed_search('fpd', 'img', %(q)s, %(m)s, '{method}')"
                assert "_top_up_scan" in _calls(conn, call, {"q": Vector(q), "m": Vector(m)})
            for method in ("weighted", "image_only", "score_sum", "product"):
                fast = retrieval.composed_search(conn, "fpd", "img", q, m, method=method, k=10)
                general = _general(
                    retrieval.composed_search,
                    conn,
                    "fpd",
                    "img",
                    q,
                    m,
                    method=method,
                    k=10,
                    max_scan_tuples=FORCE_GENERAL,
                )
                assert len(fast) == 10
                _same(fast, general)
            kw: dict[str, Any] = {"method": "weimocir", "params": {"caption_space": "cap"}}
            fast = retrieval.composed_search(conn, "fpd", "img", None, m, reference_key=0, **kw)
            general = _general(
                retrieval.composed_search,
                conn,
                "fpd",
                "img",
                None,
                m,
                reference_key=0,
                max_scan_tuples=FORCE_GENERAL,
                **kw,
            )
            assert len(fast) == 10
            _same(fast, general)
            fast = retrieval.hybrid_search(conn, "fpd", None, [("img", q)], k=10)
            general = _general(
                retrieval.hybrid_search,
                conn,
                "fpd",
                None,
                [("img", q)],
                k=10,
                max_scan_tuples=FORCE_GENERAL,
            )
            assert len(fast) == 10
            _same(fast, general)
            assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("relaxed_order",)
        finally:
            conn.execute("RESET hnsw.iterative_scan")
            conn.execute("RESET enable_seqscan")
