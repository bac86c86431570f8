"""Bulk load through the public path against pgvector's recipe, and batch queries.

    .venv/bin/python bench/bulk.py            # 100k x 384
    .venv/bin/python bench/bulk.py --quick    # 10k x 384
    .venv/bin/python bench/bulk.py --live 5000   # also the row-by-row path, on 5000 rows

In one run, on one fresh database, with the same vectors (random unit vectors, fixed seed):

* ``COPY + CREATE INDEX`` (run before and after the bulk path, the mean is the baseline):
  pgvector's documented recipe for an initial load: a bare table
  ``(id int PRIMARY KEY, embedding vector(d))`` filled by binary COPY, then one HNSW index
  (m 16, ef_construction 64, cosine) built with the same maintenance_work_mem and parallel
  maintenance workers as the bulk path uses (sql/idempotent/028-bulk.sql);
* ``mmr.put_embeddings``: the public bulk path (one call of all rows into a new external space,
  pg_mmretrieval.put_embeddings from Python: validation, key checks, normalisation, the heap
  writes, one index build);
* ``--worker N``: the worker draining a backlog of N rows for a new space (test encoder
  ``mmr-test``, 32-d, near-free, so the encoder is out of the figure) filled in bulk, against the
  same backlog drained into a live index (the fill ended by ``mmr.finish_bulk_fill`` before the
  drain);
* ``--live N``: N rows through the live index (a space that already holds rows), the path
  every load took before, scaled to the full row count for comparison.

Then batch queries: ``mmr.search`` one query per round trip against ``mmr.search_batch`` with
100 queries per call (same queries, k = 10), rounds interleaved; QPS of each and the ratio.

The ratio ``put_embeddings / (COPY + CREATE INDEX)`` is the figure issue 17 asks to keep at or
below 1.3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
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

import pg_mmretrieval as mmr  # noqa: E402
from pg_mmretrieval import db, install  # noqa: E402
from pg_mmretrieval.search import search_batch  # noqa: E402
from pg_mmretrieval.worker import Worker, WorkerConfig  # noqa: E402


def unit(n: int, d: int, seed: int) -> Any:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def copy_and_index(
    conn: psycopg.Connection[Any], vecs: Any, mwm: str, workers: int, table: str
) -> float:
    d = vecs.shape[1]
    t0 = time.perf_counter()
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, embedding vector({d}))")
    with conn.cursor().copy(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.set_types(["int4", "vector"])
        for i, v in enumerate(vecs):
            cp.write_row((i, v))
    with conn.transaction():
        conn.execute(f"SET LOCAL maintenance_work_mem = '{mwm}'")
        conn.execute(f"SET LOCAL max_parallel_maintenance_workers = {workers}")
        conn.execute(
            f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k rows")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--live", type=int, default=0, help="also time N rows row by row")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--worker", type=int, default=0, help="also a worker drain of N rows")
    args = ap.parse_args()
    n = 10_000 if args.quick else args.rows
    d = args.dim
    vecs = unit(n, d, seed=17)
    base = db.resolve_url()
    name = f"bench_bulk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    from tests.conftest import _with_database

    url = _with_database(base, name)
    try:
        install.upgrade(url)
        with mmr.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
            conn.execute("INSERT INTO items SELECT generate_series(0, %s)", (n - 1,))
            conn.execute("VACUUM ANALYZE items")
            mmr.create_collection(conn, "items", "items")
            mmr.add_space(conn, "items", "e", "external", None, d)
            # the settings the bulk path chooses for this many rows (028-bulk.sql)
            mwm_kb = (n * (4 * d + 8 + 2 * 16 * 12 + 100) * 5 // 4) // 1024
            mwm_kb = min(max(mwm_kb, 65536), 2097152)
            mwm_now = conn.execute(
                "SELECT pg_size_bytes(current_setting('maintenance_work_mem')) / 1024"
            ).fetchone()
            mwm = f"{max(mwm_kb, int(mwm_now[0]) if mwm_now else 0)}kB"
            w = conn.execute(
                "SELECT least(7, current_setting('max_parallel_workers')::int)"
            ).fetchone()
            workers = int(w[0]) if w else 0
            ids = list(range(n))
            # baseline before and after the bulk path: drift of a shared machine hits both
            t_copy1 = copy_and_index(conn, vecs, mwm, workers, "bare1")
            t0 = time.perf_counter()
            mmr.put_embeddings(conn, "items", "e", ids, vecs)
            t_put = time.perf_counter() - t0
            t_copy2 = copy_and_index(conn, vecs, mwm, workers, "bare2")
            t_copy = (t_copy1 + t_copy2) / 2
            t_live = None
            if args.live:
                m = min(args.live, n)
                mmr.add_space(conn, "items", "live", "external", None, d)
                mmr.put_embeddings(conn, "items", "live", [0], vecs[:1])  # not empty: live path
                t0 = time.perf_counter()
                for lo in range(1, m, 1000):
                    hi = min(lo + 1000, m)
                    mmr.put_embeddings(conn, "items", "live", ids[lo:hi], vecs[lo:hi])
                t_live = (time.perf_counter() - t0) * n / max(m - 1, 1)

            t_drain: dict[str, float] = {}
            if args.worker:
                conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
                conn.execute(
                    "INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, %s) g",
                    (args.worker,),
                )
                mmr.create_collection(conn, "docs", "docs", text_columns=["body"])
                for sp in ("bulk", "live"):
                    mmr.add_space(conn, "docs", sp, "mmr-test", "body", 32)
                    if sp == "live":
                        conn.execute("SELECT mmr.finish_bulk_fill('docs', 'live')")
                    cfg = WorkerConfig(once=True, collections=("docs",), spaces=(sp,))
                    t0 = time.perf_counter()
                    Worker(db.with_user(url, db.WORKER_ROLE), cfg).run()
                    t_drain[sp] = time.perf_counter() - t0

            # batch queries
            qs = unit(args.queries, d, seed=18)
            single_s = 0.0
            batch_s = 0.0
            for lo in range(0, len(qs), 100):
                chunk = qs[lo : lo + 100]
                t0 = time.perf_counter()
                for q in chunk:
                    conn.execute(
                        "SELECT key, score FROM mmr.search('items', 'e', %s, 10)", (Vector(q),)
                    ).fetchall()
                single_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                search_batch(conn, "items", "e", list(chunk), 10)
                batch_s += time.perf_counter() - t0
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"{n} x {d}, {time.strftime('%Y-%m-%d %H:%M')}, maintenance_work_mem {mwm}, "
        f"{workers} parallel maintenance workers"
    )
    print("| load path | seconds | ratio to COPY + CREATE INDEX |")
    print("|---|---|---|")
    print(
        f"| COPY + CREATE INDEX (bare pgvector; mean of {t_copy1:.1f} before and "
        f"{t_copy2:.1f} after) | {t_copy:.1f} | 1.00 |"
    )
    print(f"| mmr.put_embeddings (bulk path) | {t_put:.1f} | {t_put / t_copy:.2f} |")
    if t_live is not None:
        print(
            f"| live index, row by row (scaled from {args.live}) | {t_live:.1f} | "
            f"{t_live / t_copy:.2f} |"
        )
    if t_drain:
        print(
            f"| worker drain of {args.worker} rows, bulk fill | {t_drain['bulk']:.1f} | "
            f"live index: {t_drain['live']:.1f} s ({t_drain['live'] / t_drain['bulk']:.2f}x) |"
        )
    nq = len(qs)
    print()
    print("| queries | QPS | ratio |")
    print("|---|---|---|")
    print(f"| mmr.search, one per round trip | {nq / single_s:.0f} | 1.00 |")
    print(f"| mmr.search_batch, 100 per call | {nq / batch_s:.0f} | {single_s / batch_s:.2f} |")


if __name__ == "__main__":
    main()
