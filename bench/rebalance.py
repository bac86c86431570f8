"""Grow a local Citus cluster while searches run: `mmr cluster add-node` + `mmr cluster rebalance`.

A coordinator and one worker (in a data directory of their own, under
``.mmr-test-data/citus-rebalance``, so a cluster started by ``mmr cluster start`` or the tests is
left alone), a distributed collection of N clustered unit vectors (one external space, HNSW per
shard, loaded as bench/scale.py loads it), then one client thread runs ``mmr.search`` (k=10,
default settings) back to back while a second worker node is added and the shards are
rebalanced onto it.  Prints the searches answered and their p50/p99 before, during and after
the rebalance, the errors, the time each step took, and recall@10 before and after.

    CITUS_SRC=/path/to/citus-14.0.1.tar.gz .venv/bin/python bench/rebalance.py --n 100000

docs/operations.md, "Citus".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ["MMR_DATA_DIR"] = str(REPO / ".mmr-test-data" / "citus-rebalance")

from scale import load, search, vectors  # noqa: E402

from pg_mmretrieval import citus, citus_nodes, install  # noqa: E402


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="vectors")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--shards", type=int, default=8, help="citus.shard_count")
    ap.add_argument("--port", type=int, default=6501, help="the coordinator's port")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds searched before/after")
    ap.add_argument("--mode", default="auto", choices=citus_nodes.TRANSFER_MODES)
    args = ap.parse_args()
    reason = citus.availability()
    if reason is not None:
        sys.exit(f"bench/rebalance.py needs Citus: {reason}")
    if citus.cluster_status().nodes:
        citus.stop_cluster()
        import shutil

        shutil.rmtree(Path(os.environ["MMR_DATA_DIR"]) / "citus")  # start from 1 worker
    vecs = vectors(args.n, args.dim)
    st = citus.start_cluster(workers=1, port=args.port)
    try:
        name = f"rebal_{uuid.uuid4().hex[:8]}"
        url = citus.create_database(st, name)
        install.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} SET citus.shard_count = {args.shards}")
        load_s = load(url, vecs, True)
        recall_before = search(url, vecs, 100)["recall"]
        done: list[tuple[float, float]] = []  # (end time, ms)
        errors: list[tuple[float, str]] = []
        stop = threading.Event()

        def searcher() -> None:
            rng = np.random.default_rng(11)
            conn = psycopg.connect(url, autocommit=True)
            register_vector(conn)
            stmt = "SELECT key FROM mmr.search('items', 'vec', %s, 10)"
            while not stop.is_set():
                q = vecs[int(rng.integers(len(vecs)))]
                t = time.monotonic()
                try:
                    conn.execute(stmt, (q,)).fetchall()
                    done.append((time.monotonic(), (time.monotonic() - t) * 1000))
                except psycopg.Error as e:
                    errors.append((time.monotonic(), f"{type(e).__name__}: {e}"))
                    if conn.broken:
                        conn = psycopg.connect(url, autocommit=True)
                        register_vector(conn)
            conn.close()

        thread = threading.Thread(target=searcher, daemon=True)
        thread.start()
        t0 = time.monotonic()
        time.sleep(args.settle)
        t1 = time.monotonic()
        node = citus_nodes.add_node()
        t2 = time.monotonic()
        moved = citus_nodes.rebalance(database=name, mode=args.mode)
        t3 = time.monotonic()
        time.sleep(args.settle)
        stop.set()
        thread.join(timeout=60)
        recall_after = search(url, vecs, 100)["recall"]

        def window(a: float, b: float) -> dict[str, Any]:
            ms = [d[1] for d in done if a <= d[0] < b]
            return {"searches": len(ms), "p50_ms": _pct(ms, 0.5), "p99_ms": _pct(ms, 0.99),
                    "max_ms": round(max(ms, default=0.0), 1)}  # fmt: skip

        report = {
            "n": args.n, "dim": args.dim, "shards": args.shards, "mode": args.mode,
            "load_s": round(load_s, 1), "new_node": node.url,
            "add_node_s": round(t2 - t1, 1), "rebalance_s": round(t3 - t2, 1),
            "moves": moved[0].moves,
            "before": window(t0, t1), "during_add_node": window(t1, t2),
            "during_rebalance": window(t2, t3), "after": window(t3, t3 + args.settle + 1),
            "errors": len(errors), "first_errors": [e[1] for e in errors[:3]],
            "recall@10_before": recall_before, "recall@10_after": recall_after,
        }  # fmt: skip
        print(json.dumps(report, indent=1))
        citus.drop_database(citus.cluster_status(), name)
    finally:
        citus.stop_cluster()


if __name__ == "__main__":
    main()
