"""Filtered search: the plan mmr.search picks against the two bare plans (issue 18).

    .venv/bin/python bench/filtered.py --quick              # 10k rows, a few minutes
    .venv/bin/python bench/filtered.py --n 100000 --keep    # prints the database to --reuse
    .venv/bin/python bench/filtered.py --reuse bench_f_xxxxxxxx --n 100000

A table of N rows x 384-d clustered unit vectors (numpy, fixed seeds) in an external space
(HNSW m 16, ef_construction 64, built after the load), a ``category`` column of 100 values
(mostly the vector's cluster: filters correlate with content, as in real catalogues) and a
uniform ``r`` column (0-999), both with a btree.  Filters: ``category = 7`` (1 %), ``r < t``
(t / 10 %).  For each filter, first a ladder pass: recall@10 of the bare relaxed plan at
ef_search 40, 60, 80, 100, 120, 160, 200 (``--ladder-queries``; ``--ladder-stop`` ends it at a
recall; ``--ladder-only`` prints only the ladders: the calibration of mmr._filter_ef_search).
Then every variant runs once per query, in a fresh random order per query, on autocommit
connections; recall@10 is against exact search over the filtered rows (numpy), ``rows`` the mean
number of rows returned.  Ratios: ``x bare`` to the better of the two bare plans of issue 18
(exact, hnsw relaxed at ef 40), ``x same ef`` to the bare relaxed plan at mmr.search's ef_search,
``x bare.95`` to the better bare plan of recall >= 0.95 (exact, or relaxed at the ladder's ef):

* ``mmr.search``: ``SELECT key, score FROM mmr.search(...)`` with the filter
* ``mmr.search uncached``: the same with the session's plan cache emptied before each call
  (outside the timer): every call estimates its filter (what the cache saves)
* ``exact (btree)``: ``... WHERE <filter> ORDER BY (embedding <=> q) + 0 LIMIT k`` (the bare exact
  plan over the user's btree)
* ``hnsw relaxed``: pgvector with ``hnsw.iterative_scan = relaxed_order`` (ef_search 40, results
  re-sorted in a materialized CTE, as pgvector's README shows)
* ``hnsw relaxed, same ef``: the same at the ef_search mmr.search chose for the filter
* ``hnsw relaxed, ef .95``: the same at the ladder's smallest ef of recall >= 0.95 (200 if none)
* ``forced exact`` / ``forced index``: mmr.search with ``mmr.exact_filter_rows`` set to 10^6 / 0
  (the sweep: where the switch should happen)
"""

from __future__ import annotations

import argparse
import os
import random
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
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db, install  # noqa: E402

DIM = 384


def data(num: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Clustered unit vectors of a low intrinsic dimension (a 48-d mixture of 100 clusters
    mapped to 384-d, plus noise: top-10 cosine similarities around 0.7, random pairs around 0,
    like sentence embeddings), their category (the cluster for 70 % of rows) and r."""
    rng = np.random.default_rng(18)
    lat = 48
    centers = rng.standard_normal((100, lat))
    lab = rng.integers(0, 100, num)
    z = centers[lab] + 0.9 * rng.standard_normal((num, lat))
    w = rng.standard_normal((lat, DIM)) / np.sqrt(lat)
    v = z @ w + 0.25 * rng.standard_normal((num, DIM))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    cat = np.where(rng.random(num) < 0.7, lab, rng.integers(0, 100, num))
    r = rng.integers(0, 1000, num)
    return v, cat, r


def setup(url: str, v: np.ndarray[Any, Any], cat: np.ndarray[Any, Any], r: Any) -> str:
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, category int, r int)")
        with conn.cursor().copy("COPY items (id, category, r) FROM STDIN") as cp:
            for i in range(len(v)):
                cp.write_row((i, int(cat[i]), int(r[i])))
        conn.execute("CREATE INDEX ON items (category)")
        conn.execute("CREATE INDEX ON items (r)")
        conn.execute("SELECT mmr.create_collection('items', 'items')")
        row = conn.execute(
            "SELECT mmr.add_space('items', 'v', 'external', NULL, %s)::text", (DIM,)
        ).fetchone()
        assert row is not None
        table = str(row[0])
        # loading into a live HNSW index is slow: load, then build it (as bench/search.py)
        conn.execute(f"DROP INDEX {table}_hnsw")
        with conn.cursor().copy(
            f"COPY {table} (id, embedding, model_id) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int4", "vector", "text"])
            for i in range(len(v)):
                cp.write_row((i, v[i], "external"))
        t1 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(
            f"CREATE INDEX {table.split('.')[-1]}_hnsw ON {table} USING hnsw "
            "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        t2 = time.perf_counter()
        conn.execute("VACUUM ANALYZE items")
        conn.execute(f"VACUUM ANALYZE {table}")
    print(f"# load {t1 - t0:.1f}s, HNSW build {t2 - t1:.1f}s", flush=True)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="10k rows, 50 queries")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--reuse", metavar="DATABASE", help="a database this script built (--keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--setup-only", action="store_true", help="build and keep; run no queries")
    ap.add_argument(
        "--ladder-only",
        action="store_true",
        help="only the ef_search ladder of the bare relaxed plan per r filter (calibration)",
    )
    ap.add_argument("--no-category", action="store_true", help="only the r filters")
    ap.add_argument(
        "--ladder-queries", type=int, default=0, help="queries of the ladder pass (0: all)"
    )
    ap.add_argument(
        "--ladder-stop", type=float, default=1.1, help="stop a ladder at this recall (1.1: never)"
    )
    ap.add_argument(
        "--ladder-samples",
        type=int,
        default=1,
        help="split the ladder's queries into this many samples: the ef for .95 is the smallest "
        "at which every sample reaches 0.95 (the guarantee mmr.search's ef is chosen for)",
    )
    ap.add_argument(
        "--sweep",
        default="1,3,10,30,50,100,200,500,1000",
        help="thresholds t of the filters r < t (per mille of rows)",
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.queries = 10_000, 50
    v, cat, r = data(args.n)
    rng = np.random.default_rng(7)
    picks = rng.integers(0, args.n, args.queries)
    qs = v[picks] + 0.05 * rng.standard_normal((args.queries, DIM)).astype(np.float32)
    qs = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
    qv = [Vector(q) for q in qs]

    server = db.resolve_url()
    from tests.conftest import _with_database

    name = args.reuse or f"bench_f_{uuid.uuid4().hex[:8]}"
    url = _with_database(server, name)
    if args.reuse is None:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    try:
        install.upgrade(url)
        table = setup(url, v, cat, r) if args.reuse is None else "mmr._emb_1"
        conn = db.connect(url, autocommit=True)
        nrows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        if nrows is None or nrows[0] != args.n:
            sys.exit(f"{name} holds {nrows} rows, not --n {args.n}")
        print(f"# database {name}" + (" (kept)" if args.keep or args.reuse else ""), flush=True)
        if args.setup_only:
            return
        run(conn, table, v, cat, r, qv, qs, args)
    finally:
        if not (args.keep or args.reuse or args.setup_only):
            with psycopg.connect(server, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


LADDER = (40, 60, 80, 100, 120, 160, 200)


def run(
    conn: Any,
    table: str,
    v: np.ndarray[Any, Any],
    cat: np.ndarray[Any, Any],
    r: np.ndarray[Any, Any],
    qv: list[Vector],
    qs: np.ndarray[Any, Any],
    args: Any,
) -> None:
    k = args.k
    dsn = conn.info.dsn
    conn.execute("SET hnsw.ef_search = 40")
    forced_exact = db.connect(dsn, autocommit=True)
    forced_exact.execute("SET mmr.exact_filter_rows = 1000000")
    forced_index = db.connect(dsn, autocommit=True)
    forced_index.execute("SET mmr.exact_filter_rows = 0")
    uncached = db.connect(dsn, autocommit=True)
    relaxed: dict[int, Any] = {}

    def relaxed_at(ef: int) -> Any:
        """One autocommit connection per ef_search of the bare relaxed plan."""
        if ef not in relaxed:
            c = db.connect(dsn, autocommit=True)
            c.execute(f"SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {ef}")
            relaxed[ef] = c
        return relaxed[ef]

    conns = {"default": conn, "exact": forced_exact, "index": forced_index, "uncached": uncached}
    filters: list[tuple[str, dict[str, Any], str, Any]] = []
    if not (args.ladder_only or args.no_category):
        filters.append(("category = 7", {"category": 7}, "s.category = 7", cat == 7))
    for t in (int(x) for x in args.sweep.split(",")):
        filters.append((f"r < {t}", {"r": {"<": t}}, f"s.r < {t}", r < t))
    print(
        f"# {args.n} rows x {DIM}-d, {len(qv)} queries, k={k}; one shared 2-core machine; "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC; load {os.getloadavg()[0]:.1f}"
    )
    if not args.ladder_only:
        print(
            f"{'filter':14s} {'pass %':>7s} {'variant':22s} {'recall':>7s} {'p50 ms':>8s} "
            f"{'rows':>6s} {'x bare':>7s} {'x same ef':>9s} {'x bare.95':>9s} plan"
        )
        # unfiltered: mmr.search against the bare HNSW statement
        uv: dict[str, Callable[[int], list[int]]] = {
            "bare hnsw": lambda i: [
                x[0]
                for x in conn.execute(
                    f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT %s", (qv[i], k)
                ).fetchall()
            ],
            "mmr.search": lambda i: [
                x[0]
                for x in conn.execute(
                    "SELECT key FROM mmr.search('items', 'v', %s::vector, %s)", (qv[i], k)
                ).fetchall()
            ],
        }
        measure(uv, {}, "none", np.ones(len(v), bool), v, qs, "bare hnsw")
    for label, fj, where, mask in filters:
        plan = conn.execute(
            "SELECT mmr.explain_search('items', 'v', %s::vector, %s, %s) -> 0 -> 'mmr'",
            (qv[0], k, Jsonb(fj)),
        ).fetchone()
        info = plan[0] if plan else {}
        sel = float(mask.mean())
        title = f"{label} ({sel * 100:.1f}%)"
        truth = truth_sets(mask, v, qs, k)
        steps = ladder(relaxed_at, relaxed_statement(table, where), qv, truth, k, args)
        print(
            f"# ladder {title}: "
            + ", ".join(
                f"ef {ef} {rec:.3f}" + (f" (min {low:.3f})" if args.ladder_samples > 1 else "")
                for ef, rec, low in steps
            )
            + f"; mmr.search: {info.get('filter_plan')} ef {info.get('ef_search')}",
            flush=True,
        )
        if args.ladder_only:
            continue
        ef95 = next((ef for ef, _, low in steps if low >= 0.95), steps[-1][0])
        same_ef = int(info.get("ef_search") or 40)
        note = (
            f"{info.get('filter_plan')} (est {info.get('estimated_rows')}, "
            f"ef {info.get('ef_search')}; bare same ef {same_ef}, ef for .95 {ef95})"
        )
        variants = filtered_variants(conns, relaxed_at, table, fj, where, qv, k, same_ef, ef95)
        # "mmr.search uncached": the plan cache emptied before each call (outside the timed
        # call), so every call estimates its filter again: what the session cache saves
        prep = {"mmr.search uncached": lambda: uncached.execute("RESET mmr._filter_plan")}
        measure(variants, prep, title, mask, v, qs, None, note, truth)


def relaxed_statement(table: str, where: str) -> str:
    """The bare relaxed-order HNSW plan, re-sorted in a materialized CTE (pgvector's README)."""
    return (
        f"WITH x AS MATERIALIZED (SELECT s.id, e.embedding <=> %s AS d FROM items s JOIN "
        f"{table} e ON e.id = s.id WHERE {where} ORDER BY d LIMIT %s) "
        "SELECT id FROM x ORDER BY d"
    )


def ladder(
    relaxed_at: Callable[[int], Any],
    sql: str,
    qv: list[Vector],
    truth: list[set[int]],
    k: int,
    args: Any,
) -> list[tuple[int, float, float]]:
    """Recall@k of the bare relaxed plan at each ef_search of LADDER, lowest first, on the
    first --ladder-queries queries: (ef, recall, the lowest recall of the --ladder-samples
    consecutive samples they are split into); stops once every sample is above --ladder-stop
    (the ef ladder of the calibration of mmr._filter_ef_search and the "ef for .95" variant)."""
    nq = min(len(qv), args.ladder_queries or len(qv))
    samples = max(1, min(args.ladder_samples, nq))
    out = []
    for ef in LADDER:
        c = relaxed_at(ef)
        per = []
        for i in range(nq):
            got = [x[0] for x in c.execute(sql, (qv[i], k)).fetchall()]
            per.append(len(set(got) & truth[i]) / max(1, min(k, len(truth[i]))))
        lowest = min(float(np.mean(part)) for part in np.array_split(per, samples))
        out.append((ef, float(np.mean(per)), lowest))
        if lowest >= args.ladder_stop:
            break
    return out


def filtered_variants(
    conns: dict[str, Any],
    relaxed_at: Callable[[int], Any],
    table: str,
    fj: dict[str, Any],
    where: str,
    qv: list[Vector],
    k: int,
    same_ef: int,
    ef95: int,
) -> dict[str, Callable[[int], list[int]]]:
    exact_sql = (
        f"SELECT s.id FROM items s JOIN {table} e ON e.id = s.id WHERE {where} "
        "ORDER BY (e.embedding <=> %s) + 0 LIMIT %s"
    )
    relaxed_sql = relaxed_statement(table, where)

    def run(c: Any, sql: str, args: Callable[[int], tuple[Any, ...]]) -> Callable[[int], list[int]]:
        return lambda i: [x[0] for x in c.execute(sql, args(i)).fetchall()]

    search = "SELECT key FROM mmr.search('items', 'v', %s::vector, %s, %s)"
    with_filter = lambda i: (qv[i], k, Jsonb(fj))  # noqa: E731
    bare = lambda i: (qv[i], k)  # noqa: E731
    return {
        "mmr.search": run(conns["default"], search, with_filter),
        "mmr.search uncached": run(conns["uncached"], search, with_filter),
        "exact (btree)": run(conns["default"], exact_sql, bare),
        "hnsw relaxed": run(relaxed_at(40), relaxed_sql, bare),
        "hnsw relaxed, same ef": run(relaxed_at(same_ef), relaxed_sql, bare),
        "hnsw relaxed, ef .95": run(relaxed_at(ef95), relaxed_sql, bare),
        "forced exact": run(conns["exact"], search, with_filter),
        "forced index": run(conns["index"], search, with_filter),
    }


def truth_sets(
    mask: np.ndarray[Any, Any], v: np.ndarray[Any, Any], qs: np.ndarray[Any, Any], k: int
) -> list[set[int]]:
    """The exact top k of each query over the rows that pass (numpy)."""
    idx = np.flatnonzero(mask)
    return [set(int(x) for x in idx[np.argsort(-(v[idx] @ q))[:k]]) for q in qs]


def measure(
    variants: dict[str, Callable[[int], list[int]]],
    prep: dict[str, Callable[[], Any]],
    label: str,
    mask: np.ndarray[Any, Any],
    v: np.ndarray[Any, Any],
    qs: np.ndarray[Any, Any],
    base: str | None,
    note: str = "",
    truth: list[set[int]] | None = None,
) -> None:
    k = 10
    truth = truth if truth is not None else truth_sets(mask, v, qs, k)
    names = list(variants)
    nq = len(qs)
    # a slow variant (an exact scan of most rows) runs on a tenth of the queries
    times: dict[str, list[float]] = {n: [] for n in names}
    recall: dict[str, list[float]] = {n: [] for n in names}
    rows: dict[str, list[int]] = {n: [] for n in names}
    for i in range(min(3, nq)):  # warm-up
        for n in names:
            variants[n](i)
    for i in range(nq):
        random.shuffle(names)
        for n in names:
            if i >= max(5, nq // 10) and times[n] and np.median(times[n]) > 0.05:
                continue
            if n in prep:
                prep[n]()
            t0 = time.perf_counter()
            got = variants[n](i)
            times[n].append(time.perf_counter() - t0)
            want = truth[i]
            recall[n].append(len(set(got) & want) / max(1, min(k, len(want))))
            rows[n].append(len(got))
    p50 = {n: float(np.median(times[n])) for n in variants}
    rec = {n: float(np.mean(recall[n])) for n in variants}
    bare = [n for n in ("exact (btree)", "hnsw relaxed", "bare hnsw") if n in p50]
    best = p50[base] if base else min(p50[n] for n in bare)
    same = p50.get("hnsw relaxed, same ef")
    # the better bare plan of recall >= 0.95: exact, or relaxed at the ladder's ef for 0.95
    eq = [n for n in ("exact (btree)", "hnsw relaxed, ef .95") if n in p50 and rec[n] >= 0.95]
    best95 = min(p50[n] for n in eq) if eq else None
    pct = f"{mask.mean() * 100:.1f}"

    def ratio(x: float | None, y: float) -> str:
        return f"{y / x:.2f}" if x else "-"

    for n in variants:
        print(
            f"{label[:14]:14s} {pct:>7s} {n:22s} {rec[n]:7.3f} "
            f"{p50[n] * 1e3:8.2f} {np.mean(rows[n]):6.1f} {p50[n] / best:7.2f} "
            f"{ratio(same, p50[n]):>9s} {ratio(best95, p50[n]):>9s} "
            f"{note if n == 'mmr.search' else ''}",
            flush=True,
        )


if __name__ == "__main__":
    main()
