"""Storage options of a space: recall@10, p50 and index size of 'vector', 'halfvec' and 'bit'.

    .venv/bin/python bench/quantization.py            # 20k vectors at 384-d and 512-d
    .venv/bin/python bench/quantization.py --quick    # 5k vectors
    .venv/bin/python bench/quantization.py --oversample 4,10,20   # bit candidates per row

Data: synthetic clustered unit vectors with a fixed seed (100 random centres, Gaussian spread
around each; held-out queries drawn the same way), stored through ``mmr.put_embeddings`` in one
space per storage.  Recall@10 is against the exact top 10 (numpy, float32); p50 is the latency
of ``SELECT key, score FROM mmr.search(...)`` on one connection, queries interleaved round-robin
over the storages so that noise hits each alike.  Index size is ``pg_relation_size`` of the
space's HNSW index.  ``--oversample`` replaces ``mmr._bit_oversample()`` in the bench's own
database only, to choose the default (docs/retrieval.md, "Storage").

Prints a Markdown table (one row per dimension, storage and oversampling factor); ``--json``
writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

import pg_mmretrieval as mmr  # noqa: E402
from pg_mmretrieval import db, install  # noqa: E402

STORAGES = ("vector", "halfvec", "bit")


def clustered(n: int, d: int, rng: np.random.Generator, centres: np.ndarray[Any, Any]) -> Any:
    """Unit vectors around the given centres (spread 1.0 per dimension around unit-scaled
    centres of norm sqrt(d)/2: neighbours share a cluster but are not near-duplicates)."""
    v = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def with_database(url: str, name: str) -> str:
    from tests.conftest import _with_database

    return str(_with_database(url, name))


def run(
    conn: psycopg.Connection[Any], d: int, n: int, nq: int, k: int, factors: list[int]
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(d)
    centres = rng.standard_normal((100, d)) * 0.5
    data = clustered(n, d, rng, centres)
    queries = clustered(nq, d, rng, centres)
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]
    coll = f"q{d}"
    conn.execute(f"CREATE TABLE {coll} (id int PRIMARY KEY)")
    conn.execute(f"INSERT INTO {coll} SELECT generate_series(0, %s)", (n - 1,))
    mmr.create_collection(conn, coll, coll)
    sizes: dict[str, int] = {}
    loads: dict[str, float] = {}
    for st in STORAGES:
        mmr.add_space(conn, coll, st, "external", None, d, storage=st)
        t0 = time.perf_counter()
        mmr.put_embeddings(conn, coll, st, list(range(n)), data)
        loads[st] = time.perf_counter() - t0
        row = conn.execute(
            "SELECT pg_relation_size(format('mmr.%%I', '_emb_' || s.id || '_hnsw')::regclass) "
            "FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
            "WHERE c.name = %s AND s.name = %s",
            (coll, st),
        ).fetchone()
        sizes[st] = int(row[0]) if row else 0
    out: list[dict[str, Any]] = []
    variants = [("vector", 0), ("halfvec", 0)] + [("bit", f) for f in factors]
    lat: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    hits: dict[tuple[str, int], int] = {v: 0 for v in variants}
    for st, f in variants:  # warm-up, and the recall of each variant
        if st == "bit":
            set_oversample(conn, f)
        for i, q in enumerate(queries):
            got = conn.execute(
                "SELECT key FROM mmr.search(%s, %s, %s, %s)", (coll, st, Vector(q), k)
            ).fetchall()
            hits[(st, f)] += len({int(r[0]) for r in got} & set(truth[i].tolist()))
    for st, f in variants:  # latency, interleaved over the queries
        if st == "bit":
            set_oversample(conn, f)
        for q in queries:
            t0 = time.perf_counter()
            conn.execute(
                "SELECT key, score FROM mmr.search(%s, %s, %s, %s)", (coll, st, Vector(q), k)
            ).fetchall()
            lat[(st, f)].append(time.perf_counter() - t0)
    for st, f in variants:
        out.append(
            {
                "dims": d,
                "rows": n,
                "storage": st,
                "oversample": f or None,
                "recall_at_10": hits[(st, f)] / (nq * k),
                "p50_ms": 1000 * statistics.median(lat[(st, f)]),
                "index_mb": sizes[st] / 2**20,
                "load_s": loads[st],
            }
        )
    return out


def set_oversample(conn: psycopg.Connection[Any], f: int) -> None:
    conn.execute(
        "CREATE OR REPLACE FUNCTION mmr._bit_oversample() RETURNS int LANGUAGE sql IMMUTABLE "
        f"PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$ SELECT {int(f)} $$"
    )
    conn.execute("UPDATE mmr._space SET statements = NULL")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5k vectors, 100 queries")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dims", default="384,512")
    ap.add_argument("--oversample", default="20", help="bit candidates per row, e.g. 4,10,20")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    n, nq = (5000, 100) if args.quick else (args.rows, args.queries)
    factors = [int(x) for x in args.oversample.split(",")]
    base = db.resolve_url()
    name = f"bench_q_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = with_database(base, name)
    try:
        install.upgrade(url)
        rows: list[dict[str, Any]] = []
        with mmr.connect(url, autocommit=True) as conn:
            for d in (int(x) for x in args.dims.split(",")):
                rows += run(conn, d, n, nq, 10, factors)
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{n} rows, {nq} queries, k = 10, {time.strftime('%Y-%m-%d')}")
    print("| dims | storage | oversample | recall@10 | p50 ms | index MB | load s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dims']} | {r['storage']} | {r['oversample'] or '–'} | "
            f"{r['recall_at_10']:.3f} | {r['p50_ms']:.2f} | {r['index_mb']:.1f} | "
            f"{r['load_s']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
