"""Latency of every search function vs a bare ``ORDER BY embedding <=> q LIMIT k`` on the same
HNSW index, in the same run, with recall@10 against exact (numpy) search.

Two baselines, both run in the same interleaved rounds: ``bare (reference)`` searches the
reference vector itself (a stored row, the easiest query an HNSW graph gets), and, for the
composed methods whose (first) query vector is a fusion, ``bare (same q)`` searches exactly that
fused vector, computed in numpy with the method's formula.  A fused vector lies between
clusters, where the graph walk is longer, so the same-query baseline is what a user would run by
hand for that method; "x same q" is each function's ratio to it, "x ref" to the reference.

    .venv/bin/python bench/search.py --n 100000 --dim 512 --queries 200

Builds a fresh database on the server the tests use (or MMR_DATABASE_URL): a table of N rows
with a short caption, two external spaces (img, cap) of clustered unit vectors, the HNSW
indexes (built after the bulk load) and the full-text GIN index.  Prints one row per function:
p50/p99 latency (ms), ratio to the bare query's p50, target ratio, recall@10.

The installing role owns the embedding tables, so row-level security does not apply to it;
``--role ROLE`` times every query (the bare ones too) as an existing role instead (``SET ROLE``
after the setup; the benchmark grants it SELECT on the table), i.e. with the embedding tables'
policies (row visibility and the column-privilege check, docs/security.md):

    .venv/bin/python bench/search.py --n 20000 --dim 128 --queries 100 --role mmr_bench
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db, install  # noqa: E402
from pg_mmretrieval import retrieval as rt  # noqa: E402

WORDS = [f"w{i}" for i in range(400)]


def n(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


def data(num: int, dim: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], ...]:
    rng = np.random.default_rng(seed)
    centers = n(rng.standard_normal((max(10, num // 100), dim)))
    lab = rng.integers(0, len(centers), num)
    img = n(centers[lab] + 0.6 * rng.standard_normal((num, dim)) / np.sqrt(dim) * 4)
    cap = n(centers[lab] + 0.8 * rng.standard_normal((num, dim)) / np.sqrt(dim) * 4)
    return img.astype(np.float32), cap.astype(np.float32), centers


def setup(url: str, img: np.ndarray[Any, Any], cap: np.ndarray[Any, Any]) -> dict[str, str]:
    num, dim = img.shape
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, caption text)")
        with conn.cursor().copy("COPY items (id, caption) FROM STDIN") as cp:
            for i in range(num):
                cp.write_row((i, " ".join(rng.choice(WORDS, 4))))
        conn.execute("SELECT mmr.create_collection('items', 'items', text_columns => '{caption}')")
        tables = {}
        for name, vecs in (("img", img), ("cap", cap)):
            t = conn.execute(
                "SELECT mmr.add_space('items', %s, 'external', NULL, %s)::text", (name, dim)
            ).fetchone()
            assert t is not None
            tables[name] = str(t[0])
            conn.execute(f"DROP INDEX {tables[name]}_hnsw")
            with conn.cursor().copy(
                f"COPY {tables[name]} (id, embedding, model_id) FROM STDIN WITH (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["int4", "vector", "text"])
                for i in range(num):
                    cp.write_row((i, vecs[i], "external"))
        t1 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        for t in tables.values():
            conn.execute(
                f"CREATE INDEX {t.split('.')[-1]}_hnsw ON {t} USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
        t2 = time.perf_counter()
        conn.execute("SELECT mmr.create_text_index('items')")
        conn.execute("VACUUM ANALYZE items")
        for t in tables.values():
            conn.execute(f"VACUUM ANALYZE {t}")
    print(
        f"# load {t1 - t0:.1f}s, HNSW builds {t2 - t1:.1f}s, total {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return tables


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    ap.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="run the queries on a database kept by an earlier --keep run with the same --n and "
        "--dim (skips the load and the HNSW builds); it is kept",
    )
    ap.add_argument("--setup-only", action="store_true", help="build and keep; run no queries")
    ap.add_argument(
        "--via",
        choices=("sql", "client"),
        default="sql",
        help="time the SQL functions, each call sent like the bare query (default), or the "
        "Python client functions (adds building the call and decoding hits)",
    )
    ap.add_argument(
        "--role",
        help="time the queries as this existing role (SET ROLE after the setup; it is granted "
        "SELECT on the table), so the embedding tables' row-level security applies",
    )
    ap.add_argument(
        "--binding",
        choices=("installed", "plpgsql"),
        default="installed",
        help="time mmr.search/composed_search as installed (the native module when the server "
        "has it) or bound to their PL/pgSQL reference functions (what the C module saves)",
    )
    args = ap.parse_args()
    img, cap, centers = data(args.n, args.dim)
    rng = np.random.default_rng(2)
    nq = args.queries
    refs = rng.integers(0, args.n, nq)
    mods = n(
        centers[rng.integers(0, len(centers), nq)]
        + 0.3 * rng.standard_normal((nq, args.dim)) / np.sqrt(args.dim) * 4
    ).astype(np.float32)
    ref_vecs = img[refs]
    words = [" ".join(rng.choice(WORDS, 2)) for _ in range(nq)]

    server = db.resolve_url()
    from tests.conftest import _with_database

    keep = args.keep or args.setup_only or args.reuse is not None
    name = args.reuse or f"bench_{uuid.uuid4().hex[:8]}"
    url = _with_database(server, name)
    if args.reuse is None:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    try:
        install.upgrade(url)
        if args.reuse is None:
            setup(url, img, cap)
        conn = db.connect(url, autocommit=True)
        if args.binding == "plpgsql":
            conn.execute("SELECT mmr._bind_search(false)")
        rows, dims = conn.execute(
            "SELECT count(*), max(vector_dims(embedding)) FROM mmr._emb_1"
        ).fetchone() or (0, 0)
        if (rows, dims) != (args.n, args.dim):
            sys.exit(f"database {name} holds {rows} x {dims}, not --n {args.n} --dim {args.dim}")
        print(f"# database {name}" + (" (kept)" if keep else ""), flush=True)
        if args.setup_only:
            return
        k = args.k
        basis, mu_t = rt.basic_projection(cap[:300], cap[300:600])
        rt.store_basic_projection(conn, "items", "img", basis, mu_t)
        if args.role:
            role = psycopg.sql.Identifier(args.role)
            conn.execute(psycopg.sql.SQL("GRANT SELECT ON items TO {}").format(role))
            conn.execute(psycopg.sql.SQL("SET ROLE {}").format(role))
        conn.execute("SET hnsw.ef_search = 40")
        bare_sql = "SELECT id FROM mmr._emb_1 ORDER BY embedding <=> %s LIMIT %s"

        def bare(i: int) -> list[Any]:
            return [r[0] for r in conn.execute(bare_sql, (Vector(ref_vecs[i]), k)).fetchall()]

        Stmt = Callable[[int], rt.SearchStatement]

        def run(build: Stmt, rerank: str | None = None) -> Callable[[int], list[Any]]:
            """The function a row times: the SQL function (--via sql: its statement, built
            before timing, sent like the bare query) or the Python client call (--via client:
            building the statement, running it, decoding hits; what rt.search & co. do)."""
            if args.via == "client":
                return lambda i: [h.key for h in rt._run(conn, build(i), rerank)]
            queries = [build(i).query(rerank, False) for i in range(nq)]
            return lambda i: [r[0] for r in conn.execute(*queries[i]).fetchall()]

        def sql_row(sql: str, vecs: np.ndarray[Any, Any]) -> Callable[[int], list[Any]]:
            """Functions without a statement builder: the SQL call, or the client function."""
            return lambda i: [r[0] for r in conn.execute(sql, (Vector(vecs[i]), k)).fetchall()]

        def comp(method: str, params: dict[str, Any] | None = None) -> Callable[[int], list[Any]]:
            return run(
                lambda i: rt.composed_statement(
                    "items", "img", ref_vecs[i], mods[i], method=method, k=k, params=params
                )
            )

        def comp_key(method: str) -> Callable[[int], list[Any]]:
            """The by-key overload: the reference is the stored row refs[i] (left out)."""
            return run(
                lambda i: rt.composed_statement(
                    "items", "img", None, mods[i], reference_key=int(refs[i]), method=method, k=k
                )
            )

        def search_stmt(i: int, rerank_depth: int | None = None) -> rt.SearchStatement:
            return rt.search_statement("items", "img", ref_vecs[i], k, rerank_depth=rerank_depth)

        # The methods' own query vectors (formulas of FUSION.md, defaults of docs/retrieval.md).
        weighted_q = n(0.5 * n(ref_vecs) + 0.5 * n(mods)).astype(np.float32)
        weimocir_q = n(0.2 * img[refs] + 0.8 * mods).astype(np.float32)
        # WeiMoCIR's second leg: the same fusion of the reference's caption embedding, searched
        # in the caption space (its own bare query, for the legs' floor printed at the end).
        weimocir_cap_q = n(0.2 * cap[refs] + 0.8 * mods).astype(np.float32)
        (cap_table,) = conn.execute(
            "SELECT s.embedding_table::text FROM mmr._space s JOIN mmr._collection c "
            "ON c.id = s.collection_id WHERE c.name = 'items' AND s.name = 'cap' AND s.active"
        ).fetchone() or ("",)
        bare_cap_sql = f"SELECT id FROM {cap_table} ORDER BY embedding <=> %s LIMIT %s"

        def bare_with(qs: np.ndarray[Any, Any]) -> Callable[[int], list[Any]]:
            def f(i: int) -> list[Any]:
                return [r[0] for r in conn.execute(bare_sql, (Vector(qs[i]), k)).fetchall()]

            return f

        def weighted_exact(i: int) -> np.ndarray[Any, Any]:
            return np.argsort(-(img @ weighted_q[i]))[:k]

        def sum_exact(i: int) -> np.ndarray[Any, Any]:
            return np.argsort(-(img @ ref_vecs[i] + img @ mods[i]))[:k]

        client = args.via == "client"
        funcs: list[tuple[str, Callable[[int], list[Any]], float, Callable[[int], Any] | None]] = [
            ("bare (reference)", bare, 1.0, lambda i: np.argsort(-(img @ ref_vecs[i]))[:k]),
            ("bare (same q: weighted)", bare_with(weighted_q), 1.0, weighted_exact),
            (
                "bare (same q: weimocir)",
                bare_with(weimocir_q),
                1.0,
                lambda i: np.argsort(-(img @ weimocir_q[i]))[:k],
            ),
            (
                "bare (caption leg: weimocir)",
                lambda i: [
                    r[0]
                    for r in conn.execute(bare_cap_sql, (Vector(weimocir_cap_q[i]), k)).fetchall()
                ],
                1.0,
                lambda i: np.argsort(-(cap @ weimocir_cap_q[i]))[:k],
            ),
            (
                "mmr.search",
                run(search_stmt),
                1.10,
                lambda i: np.argsort(-(img @ ref_vecs[i]))[:k],
            ),
            (
                "composed image_only",
                comp("image_only"),
                1.10,
                lambda i: np.argsort(-(img @ ref_vecs[i]))[:k],
            ),
            ("composed weighted", comp("weighted"), 1.10, weighted_exact),
            ("composed slerp", comp("slerp"), 1.10, weighted_exact),
            ("composed score_sum", comp("score_sum"), 2.5, sum_exact),
            ("composed product", comp("product"), 2.5, None),
            (
                "composed weimocir+cap",
                run(
                    lambda i: rt.composed_statement(
                        "items",
                        "img",
                        None,
                        mods[i],
                        reference_key=int(refs[i]),
                        method="weimocir",
                        k=k,
                        params={"caption_space": "cap", "beta": 0.1},
                    )
                ),
                2.5,
                None,
            ),
            ("composed weighted (by key)", comp_key("weighted"), 1.10, None),
            ("composed score_sum (by key)", comp_key("score_sum"), 2.5, None),
            ("composed basic", comp("basic"), 2.5, None),
            ("composed gqr", comp("gqr"), 2.5, None),
            (
                "hybrid rrf (lex + img)",
                run(lambda i: rt.hybrid_statement("items", words[i], [("img", ref_vecs[i])], k=k)),
                2.0,
                None,
            ),
            (
                "hybrid rrf (lex + img + cap)",
                run(
                    lambda i: rt.hybrid_statement(
                        "items", words[i], [("img", ref_vecs[i]), ("cap", mods[i])], k=k
                    )
                ),
                2.5,
                None,
            ),
            (
                "search + exact rerank",
                run(lambda i: search_stmt(i, rerank_depth=40), rerank="exact"),
                2.0,
                lambda i: np.argsort(-(img @ ref_vecs[i]))[:k],
            ),
            (
                "mmr_search (λ=0.5, 50)",
                (
                    lambda i: [
                        h.key for h in rt.diversify_search(conn, "items", "img", ref_vecs[i], k)
                    ]
                )
                if client
                else sql_row(
                    "SELECT key FROM mmr.mmr_search('items', 'img', %s::vector, %s)", ref_vecs
                ),
                3.0,
                None,
            ),
            (
                "rocchio_search (PRF 10)",
                (lambda i: [h.key for h in rt.rocchio_search(conn, "items", "img", ref_vecs[i], k)])
                if client
                else sql_row(
                    "SELECT key FROM mmr.rocchio_search('items', 'img', %s::vector, %s)", ref_vecs
                ),
                2.5,
                None,
            ),
        ]
        # Interleave: each round runs every function once, so drift hits all alike.
        lat: dict[str, list[float]] = {f[0]: [] for f in funcs}
        outs: dict[str, list[Any]] = {f[0]: [] for f in funcs}
        for i in range(min(10, nq)):
            for _name, fn, _t, _e in funcs:
                fn(i)
        # Each round runs the functions in a fresh (seeded) random order, so no function always
        # meets the round's query first, with cold caches, or last, with warm ones.
        order_rng = np.random.default_rng(3)
        outs_at: dict[str, dict[int, Any]] = {f[0]: {} for f in funcs}
        for i in range(nq):
            for j in order_rng.permutation(len(funcs)):
                fname, fn = funcs[j][0], funcs[j][1]
                t = time.perf_counter()
                outs_at[fname][i] = fn(i)
                lat[fname].append((time.perf_counter() - t) * 1000)
        for fname in outs:
            outs[fname] = [outs_at[fname][i] for i in range(nq)]
        base = statistics.median(lat[funcs[0][0]])
        # Same-query baseline of each function (the reference one where the query is the
        # reference itself, or where the method has no single fused vector).
        same_q = {
            "composed weighted": "bare (same q: weighted)",
            "composed slerp": "bare (same q: weighted)",
            "composed gqr": "bare (same q: weighted)",
            "composed weimocir+cap": "bare (same q: weimocir)",
        }
        print(
            f"# N={args.n} dim={args.dim} queries={nq} k={k} ef_search=40 via={args.via} "
            f"(one connection, interleaved rounds)"
        )
        print(
            f"{'function':32s} {'p50 ms':>8s} {'p99 ms':>8s} {'x ref':>6s} {'x same q':>8s} "
            f"{'target':>7s} {'recall@10':>9s}"
        )
        for fname, _fn, target, exact in funcs:
            p50, p99 = statistics.median(lat[fname]), pct(lat[fname], 99)
            own = statistics.median(lat[same_q.get(fname, funcs[0][0])])
            rec = "-"
            if exact is not None:
                r = [
                    len(set(map(int, outs[fname][i])) & set(map(int, exact(i)))) / k
                    for i in range(nq)
                ]
                rec = f"{np.mean(r):.3f}"
            print(
                f"{fname:32s} {p50:8.2f} {p99:8.2f} {p50 / base:6.2f} {p50 / own:8.2f} "
                f"{target:7.2f} {rec:>9s}",
                flush=True,
            )
        legs = statistics.median(lat["bare (same q: weimocir)"]) + statistics.median(
            lat["bare (caption leg: weimocir)"]
        )
        print(
            f"# weimocir+cap: {statistics.median(lat['composed weimocir+cap']) / legs:.2f} x the "
            f"sum of its two legs' bare queries ({legs / base:.2f} x the reference)"
        )
        conn.close()
    finally:
        if not keep:
            with psycopg.connect(server, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
