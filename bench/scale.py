"""One node vs a local Citus cluster (coordinator + 2 workers on 127.0.0.1), same data, same run.

For each target, a fresh database with the mmr schema: a table of N rows (distributed by its key
on the cluster, ``--shards`` shards), one external space of clustered unit vectors loaded by COPY
with its HNSW index built after the load (one index per shard on the cluster), then:

* ``mmr.search`` (k=10, default settings): p50/p99 latency over ``--queries`` queries and
  recall@10 against exact search (numpy), and the cluster's ratio to the single node;
* the worker: ``--rows`` text rows embedded by ``mmr worker --once`` (the mmr-test encoder, so
  the database side dominates) with 1 and 2 worker processes per data node (1 data node alone,
  2 on the cluster), rows per second.

    CITUS_SRC=/path/to/citus-14.0.1.tar.gz .venv/bin/python bench/scale.py --n 20000 --dim 64

Citus comes from the embedded server or CITUS_SRC (docs/operations.md, "Citus").  On one
machine the cluster's nodes share its cores, so this measures Citus's overhead, not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import citus, db, install  # noqa: E402


def vectors(num: int, dim: int, seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(10, num // 100), dim))
    x = centers[rng.integers(0, len(centers), num)] + 0.5 * rng.standard_normal((num, dim))
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def load(url: str, vecs: np.ndarray[Any, Any], distributed: bool) -> float:
    num, dim = vecs.shape
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, body text)")
        if distributed:
            conn.execute("SELECT create_distributed_table('items', 'id')")
        with conn.cursor().copy("COPY items (id, body) FROM STDIN") as cp:
            for i in range(num):
                cp.write_row((i, f"row {i}"))
        conn.execute("SELECT mmr.create_collection('items', 'items', create_view => false)")
        emb = conn.execute(
            "SELECT mmr.add_space('items', 'vec', 'external', NULL, %s)::text", (dim,)
        ).fetchone()
        assert emb is not None
        conn.execute(f"DROP INDEX {emb[0]}_hnsw")
        with conn.cursor().copy(
            f"COPY {emb[0]} (id, embedding, model_id) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int8", "vector", "text"])
            for i in range(num):
                cp.write_row((i, vecs[i], "external"))
        conn.execute(
            f"CREATE INDEX {emb[0].split('.')[-1]}_hnsw ON {emb[0]} USING hnsw "
            "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        conn.execute(f"ANALYZE {emb[0]}")
        conn.execute("ANALYZE items")
    return time.perf_counter() - t0


def search(url: str, vecs: np.ndarray[Any, Any], queries: int) -> dict[str, float]:
    rng = np.random.default_rng(7)
    qs = vecs[rng.choice(len(vecs), queries, replace=False)] + 0.05 * rng.standard_normal(
        (queries, vecs.shape[1])
    ).astype(np.float32)
    qs = np.asarray(qs / np.linalg.norm(qs, axis=1, keepdims=True), dtype=np.float32)
    exact = np.argsort(-(qs @ vecs.T), axis=1)[:, :10]
    times: list[float] = []
    hits = 0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        stmt = "SELECT (key #>> '{}')::bigint FROM mmr.search('items', 'vec', %s, 10)"
        for q in qs[:5]:  # warm the caches and the plan
            conn.execute(stmt, (q,)).fetchall()
        for i, q in enumerate(qs):
            t = time.perf_counter()
            got = [r[0] for r in conn.execute(stmt, (q,)).fetchall()]
            times.append((time.perf_counter() - t) * 1000)
            hits += len(set(got) & set(exact[i].tolist()))
    times.sort()
    return {
        "p50": statistics.median(times),
        "p99": times[min(len(times) - 1, int(0.99 * len(times)))],
        "recall": hits / (10 * queries),
    }


def worker_throughput(url: str, rows: int, procs: int, distributed: bool) -> float:
    name = f"w{uuid.uuid4().hex[:6]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        if distributed:
            conn.execute("SELECT create_distributed_table(%s, 'id')", (name,))
        conn.execute(
            f"INSERT INTO {name} SELECT g, 'text ' || g::text FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute(
            "SELECT mmr.create_collection(%s, %s, text_columns => '{body}', create_view => false)",
            (name, name),
        )
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    env = {
        **os.environ,
        "MMR_DATABASE_URL": url,
        "MMR_WORKER_DATABASE_URL": db.with_user(url, db.WORKER_ROLE),
    }
    cmd = [sys.executable, "-m", "pg_mmretrieval.cli", "worker", "--collection", name, "--once"]
    t0 = time.perf_counter()
    running = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(procs)
    ]
    for p in running:
        p.wait(timeout=1800)
    wall = time.perf_counter() - t0
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT embedded, missing, stale, duplicate FROM mmr.check(%s)", (name,)
        ).fetchone()
    assert row is not None and tuple(row) == (rows, 0, 0, 0), f"mmr.check after the run: {row}"
    return rows / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="vectors (the issue's target: 100000)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rows", type=int, default=3000, help="rows the worker runs embed")
    ap.add_argument("--shards", type=int, default=32, help="citus.shard_count on the cluster")
    ap.add_argument("--port", type=int, default=6201, help="the cluster's coordinator port")
    args = ap.parse_args()
    reason = citus.availability()
    if reason is not None:
        sys.exit(f"bench/scale.py needs Citus: {reason}")
    vecs = vectors(args.n, args.dim)
    results: dict[str, dict[str, float]] = {}
    dbname = f"scale_{uuid.uuid4().hex[:8]}"

    single_admin = db.resolve_url()
    with psycopg.connect(single_admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {dbname}")
    single = single_admin.replace("@/mmr?", f"@/{dbname}?", 1)
    cluster = citus.start_cluster(workers=2, port=args.port)
    coord = citus.create_database(cluster, dbname)
    try:
        for label, url, dist in (("1 node", single, False), ("Citus 1+2", coord, True)):
            install.upgrade(url)
            if dist:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"ALTER DATABASE {dbname} SET citus.shard_count = {args.shards}")
            secs = load(url, vecs, dist)
            res = search(url, vecs, args.queries)
            res["load_s"] = secs
            data_nodes = 2 if dist else 1
            for per_node in (1, 2):
                res[f"rows/s {per_node}/node"] = worker_throughput(
                    url, args.rows, per_node * data_nodes, dist
                )
            results[label] = res
            print(f"# {label}: {res}", flush=True)
    finally:
        citus.drop_database(cluster, dbname)
        citus.stop_cluster()
        with psycopg.connect(single_admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    base = results["1 node"]
    print(
        f"\nn={args.n} dim={args.dim} queries={args.queries} shards={args.shards} "
        f"worker rows={args.rows} (cores: {os.cpu_count()})"
    )
    print(
        f"{'target':<11} {'load s':>7} {'p50 ms':>7} {'p99 ms':>7} {'x p50':>6} "
        f"{'recall':>6} {'rows/s 1/node':>14} {'rows/s 2/node':>14}"
    )
    for label, r in results.items():
        print(f"{label:<11} {r['load_s']:>7.1f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
              f"{r['p50'] / base['p50']:>6.2f} {r['recall']:>6.3f} "
              f"{r['rows/s 1/node']:>14.0f} {r['rows/s 2/node']:>14.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
