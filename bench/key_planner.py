"""The by-key planner alone: p50 of ``mmr._composed_key_exec_plan`` per call, each call its own
autocommit transaction on one connection (what every mmr.composed_search by reference key pays
before its statement runs, PL/pgSQL's per-transaction costs included).

    .venv/bin/python bench/key_planner.py --reuse bench_xxxxxxxx [--calls 300]

Needs a database bench/search.py built and kept (``--setup-only``: ``items`` with spaces img and
cap).  Every round runs WeiMoCIR with the caption space, weighted and score_sum by key (random
stored keys and modifiers), and a bare ``SELECT 1`` (the round trip's floor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db  # noqa: E402

CASES = {
    "weimocir+cap": ("weimocir", '{"caption_space": "cap", "beta": 0.1}'),
    "weighted": ("weighted", "{}"),
    "score_sum": ("score_sum", "{}"),
}
PLANNER = (
    "SELECT count(*) FROM mmr._composed_key_exec_plan('items', 'img', %s::jsonb, %s, %s, 10, "
    "%s::jsonb, NULL, NULL, NULL, NULL, NULL, NULL)"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reuse", metavar="DATABASE", required=True)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    from tests.conftest import _with_database

    with psycopg.connect(_with_database(db.resolve_url(), args.reuse), autocommit=True) as conn:
        register_vector(conn)
        rows, dim = conn.execute(
            "SELECT count(*), max(vector_dims(embedding)) FROM mmr._emb_1"
        ).fetchone() or (0, 0)
        rng = np.random.default_rng(5)
        mods = rng.standard_normal((args.calls, dim)).astype(np.float32)
        mods /= np.linalg.norm(mods, axis=1, keepdims=True)
        keys = rng.integers(0, rows, args.calls)
        lat: dict[str, list[float]] = {c: [] for c in [*CASES, "round trip (SELECT 1)"]}
        for i in range(args.calls):
            for case, (method, params) in CASES.items():
                t = time.perf_counter()
                got = conn.execute(PLANNER, (str(int(keys[i])), Vector(mods[i]), method, params))
                assert got.fetchone() == (1,), case  # a plan: the fast path
                lat[case].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            lat["round trip (SELECT 1)"].append((time.perf_counter() - t) * 1000)
    skip = min(20, args.calls // 10)  # the session's first calls build its caches
    for case, xs in lat.items():
        print(f"{case:24s} p50 {statistics.median(xs[skip:]):.3f} ms")


if __name__ == "__main__":
    main()
