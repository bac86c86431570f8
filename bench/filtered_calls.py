"""Where a filtered mmr.search's time goes, against the bare plan at the same ef_search.

    .venv/bin/python bench/filtered_calls.py --reuse bench_f_xxxxxxxx [--below 500] [--ef 100]

Needs a database bench/filtered.py built and kept (``--n 100000 --keep``: ``items`` with a
uniform ``r`` in 0..999 and a btree on it, space ``v``).  The filter is ``r < BELOW`` (500:
50 %, 100: 10 %).  On one connection (one backend, so the variants share its caches) every
query runs every variant in a fresh random order, ``--rounds`` times; p50 ratios to the bare
relaxed plan at the same ef_search (what a psycopg user gets: a prepared statement, planned per
call because its custom plans are cheaper):

* ``bare``: pgvector's relaxed-order iterative scan at ``--ef``, re-sorted in a materialized CTE
  (pgvector's README), the filter as a literal;
* ``bare generic``: the same, planned once (``plan_cache_mode = force_generic_plan``);
* ``statement generic``: the statement mmr.search's planner returns for the filter, run directly
  with a generic plan (what the native executor keeps);
* ``planner``: ``mmr._search_exec_plan`` alone (the filter's decision and the statement's text,
  from the statement memo after the first call);
* ``mmr.search``: the whole call (index plan at the filter's ef_search).

mmr.search picks its own ef_search; pass ``--ef`` equal to it (explain_search says which) to
compare like with like.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", required=True, metavar="DATABASE", help="a bench/filtered.py DB")
    ap.add_argument("--below", type=int, default=500, help="the filter r < BELOW (0..1000)")
    ap.add_argument("--ef", type=int, default=100, help="ef_search of the bare plans")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not 1 <= args.below <= 1000 or not 1 <= args.ef <= 1000 or args.queries < 1:
        ap.error("--below and --ef must be in 1..1000, --queries at least 1")
    from tests.conftest import _with_database

    url = _with_database(db.resolve_url(), args.reuse)
    install.upgrade(url)
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    generic = psycopg.connect(url, autocommit=True, prepare_threshold=0)
    for c in (conn, generic):
        register_vector(c)
        c.execute("SET hnsw.iterative_scan = relaxed_order")
        c.execute(f"SET hnsw.ef_search = {args.ef}")
    generic.execute("SET plan_cache_mode = force_generic_plan")
    queries = sample_queries(conn, args.queries)
    flt = Jsonb({"r": {"<": args.below}})
    planned = conn.execute(
        "SELECT sql, ef_search FROM mmr._search_exec_plan('items', 'v', %s, 10, %s, "
        "NULL, NULL, NULL, NULL, NULL)",
        (queries[0], flt),
    ).fetchone()
    if planned is None:
        sys.exit("mmr.search takes its general path for this filter: nothing to compare")
    statement = planned[0].replace("$1", "%(q)s").replace("$2", "%(k)s").replace("$3", "%(f)s")
    bare = (
        "WITH x AS MATERIALIZED (SELECT s.id, e.embedding <=> %(q)s AS d FROM items s "
        f"JOIN mmr._emb_1 e ON e.id = s.id WHERE s.r < {args.below} ORDER BY d LIMIT %(k)s) "
        "SELECT id FROM x ORDER BY d"
    )
    variants: dict[str, tuple[str, psycopg.Connection[Any]]] = {
        "bare": (bare, conn),
        "bare generic": (bare, generic),
        "statement generic": (statement, generic),
        "planner": (
            "SELECT sql IS NULL FROM mmr._search_exec_plan('items', 'v', %(q)s, %(k)s, "
            "%(f)s, NULL, NULL, NULL, NULL, NULL)",
            conn,
        ),
        "mmr.search": ("SELECT key FROM mmr.search('items', 'v', %(q)s, %(k)s, %(f)s)", conn),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for i, q in enumerate(queries):
            order = list(variants)
            random.Random(r * 100_003 + i).shuffle(order)
            for name in order:
                sql, c = variants[name]
                t = time.perf_counter()
                c.execute(sql, {"q": q, "k": 10, "f": flt}).fetchall()
                times[name].append(time.perf_counter() - t)
    print(
        f"# r < {args.below}, bare plans at ef_search {args.ef}; mmr.search's planner chose "
        f"ef_search {planned[1]}; {args.queries} queries x {args.rounds} rounds, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    base = statistics.median(times["bare"])
    for name, t in times.items():
        p50 = statistics.median(t)
        print(f"{name:20s} p50 {p50 * 1000:7.3f} ms   x bare {p50 / base:5.2f}")


def sample_queries(conn: psycopg.Connection[Any], n: int) -> list[Vector]:
    """Stored vectors with a little noise (fixed seeds): near neighbours exist, none is exact."""
    rng = np.random.default_rng(7)
    rows = conn.execute(
        "SELECT embedding FROM mmr._emb_1 ORDER BY id LIMIT %s OFFSET 1000", (n,)
    ).fetchall()
    out = []
    for (v,) in rows:
        x = np.asarray(v.to_list(), dtype=np.float32)
        x = x + rng.normal(0, 0.02, x.shape).astype(np.float32)
        out.append(Vector(x / np.linalg.norm(x)))
    return out


if __name__ == "__main__":
    main()
