"""Where the fixed cost of a single-vector search goes (companion of bench/search.py).

    .venv/bin/python bench/search.py --n 100000 --dim 512 --setup-only   # prints DB name
    .venv/bin/python bench/search_overhead.py --reuse bench_xxxxxxxx [--queries 400]

On a database built by ``bench/search.py``, every variant below runs once per round, in a fresh
random order per round, on one autocommit connection; the table gives p50 and the ratio to the
bare statement.  Variants, from the bare statement to the Python client:

* ``bare``: ``SELECT id ... ORDER BY embedding <=> q LIMIT k`` (session ef_search 40)
* ``bare, iterative scan``: the same with ``hnsw.iterative_scan = strict_order`` (what every
  search paid before the fast paths scanned without it)
* ``cached statement``: the space's cached ``search`` statement (jsonb key + score) sent by the
  client itself
* ``plpgsql wrapper`` / ``sql wrapper``: that statement inside a minimal PL/pgSQL set-returning
  function (``RETURN QUERY EXECUTE``) / an inlinable LANGUAGE sql function, created in
  ``pg_temp`` (nothing is left behind)
* ``mmr.search``: ``SELECT key, score FROM mmr.search(collection, space, q, k)``
* ``client search``: ``pg_mmretrieval.retrieval.search`` (adds decoding and hit objects)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pgvector import Vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db  # noqa: E402
from pg_mmretrieval import retrieval as rt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reuse", required=True, metavar="DATABASE", help="a bench/search.py database")
    ap.add_argument("--queries", type=int, default=400, help="rounds (one query each)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    from tests.conftest import _with_database

    url = _with_database(db.resolve_url(), args.reuse)
    conn = db.connect(url, autocommit=True)
    strict = db.connect(url, autocommit=True)
    row = conn.execute(
        "SELECT s.statements ->> 'search', s.embedding_table::text, s.dimensions "
        "FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
        "WHERE c.name = 'items' AND s.name = 'img' AND s.active"
    ).fetchone()
    if row is None or row[0] is None:
        sys.exit(f"{args.reuse}: no space items/img with a cached statement (run bench/search.py)")
    stmt, table, dim = str(row[0]), str(row[1]), int(row[2])
    for c in (conn, strict):
        c.execute("SET hnsw.ef_search = 40")
    strict.execute("SET hnsw.iterative_scan = strict_order")
    ret = "RETURNS TABLE (key jsonb, score float8)"
    conn.execute(
        f"CREATE FUNCTION pg_temp.wrap_plpgsql(q vector, k int) {ret} LANGUAGE plpgsql STABLE "
        f"AS $f$ BEGIN RETURN QUERY EXECUTE {_literal(stmt)} USING q, k; END $f$"
    )
    inlined = stmt.replace("$1", "q").replace("$2", "k")
    conn.execute(
        f"CREATE FUNCTION pg_temp.wrap_sql(q vector, k int) {ret} LANGUAGE sql STABLE "
        f"AS $f$ {inlined} $f$"
    )
    rng = np.random.default_rng(5)
    qs = rng.standard_normal((args.queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    vs = [Vector(q) for q in qs]
    k = args.k
    bare = f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT %s"
    direct = stmt.replace("$1", "%(q)s").replace("$2", "%(k)s")
    variants: dict[str, Callable[[int], Any]] = {
        "bare": lambda i: conn.execute(bare, (vs[i], k)).fetchall(),
        "bare, iterative scan": lambda i: strict.execute(bare, (vs[i], k)).fetchall(),
        "cached statement": lambda i: conn.execute(direct, {"q": vs[i], "k": k}).fetchall(),
        "plpgsql wrapper": lambda i: conn.execute(
            "SELECT key, score FROM pg_temp.wrap_plpgsql(%s, %s)", (vs[i], k)
        ).fetchall(),
        "sql wrapper": lambda i: conn.execute(
            "SELECT key, score FROM pg_temp.wrap_sql(%s, %s)", (vs[i], k)
        ).fetchall(),
        "mmr.search": lambda i: conn.execute(
            "SELECT key, score FROM mmr.search(%s, %s, %s::vector, %s)",
            ("items", "img", vs[i], k),
        ).fetchall(),
        "client search": lambda i: rt.search(conn, "items", "img", qs[i], k),
    }
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(min(20, args.queries)):  # warm-up
        for n in names:
            variants[n](i)
    for r in range(args.queries):
        random.shuffle(names)
        for n in names:
            t0 = time.perf_counter()
            variants[n](r)
            times[n].append(time.perf_counter() - t0)
    base = float(np.median(times["bare"]))
    print(f"# {args.reuse}: {args.queries} rounds, k={k}, ef_search 40, random order per round")
    print(f"{'variant':24s} {'p50 ms':>8s} {'x bare':>7s}")
    for n in variants:
        p50 = float(np.median(times[n]))
        print(f"{n:24s} {p50 * 1e3:8.3f} {p50 / base:7.3f}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


if __name__ == "__main__":
    main()
