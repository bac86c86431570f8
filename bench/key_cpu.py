"""Where the server's CPU goes in a WeiMoCIR + caption search by reference key, against the bare
queries of its two legs: ``perf record`` on the connection's backend while one loop alternates,
per query, the search (``mmr.composed_search`` by key) and the two bare legs (the fused image
query on ``img``, the fused caption query on ``cap``, ``LIMIT 10`` each, as bench/search.py's
baselines). Every sample is given to the search when the native module's entry point is on its
stack (``ENTRY``: the frames of this and earlier versions of the module), else to the bare
queries, and to the first category of its stack below (planner,
HNSW scan, scores by key, ...). Prints CPU ms per call for each side and category, and the
ratio of the two sides: interleaving makes the machine's speed drift weigh on both alike, which
wall-clock ratios on a shared 2-core machine do not.

    .venv/bin/python bench/key_cpu.py --reuse bench_xxxxxxxx [--calls 1000] [--freq 1000]

Needs a database bench/search.py built and kept (``--setup-only``: ``items`` with spaces img and
cap), the native module, and Linux ``perf`` allowed to record another process (root, or
``kernel.perf_event_paranoid`` <= 1); the embedded server must run on this machine. The protocol
work of each statement (parse, bind, send) is outside the entry point and counts for the bare
side: the search's share is a lower bound of its cost, the bare side's an upper bound.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import db  # noqa: E402

SEARCH = (
    "SELECT * FROM mmr.composed_search('items', 'img', %s::jsonb, %s, 'weimocir', 10, "
    '\'{"caption_space": "cap", "beta": 0.1}\')'
)
# The native entry point's frames (a tail call may hide mmr_composed_search_key itself):
# search_entry since the executor-only module, run_key_fast / run_weimocir_key before it.
ENTRY = {"mmr_composed_search_key", "search_entry", "run_key_fast", "run_weimocir_key"}
# The first frame found on a sample's stack names its category (checked in this order).
CATEGORIES = [
    ("plpgsql_call_handler", "planner (PL/pgSQL)"),
    ("hnswgettuple", "HNSW scan"),
    ("fmgr_sql", "SQL functions"),
    ("btgettuple", "btree look-ups (scores by key)"),
    ("heapam_index_fetch_tuple", "heap fetches"),
    ("standard_ExecutorStart", "executor start"),
    ("standard_ExecutorEnd", "executor end"),
    ("GetCachedPlan", "plan cache"),
    ("ExecSort", "fusion (sort, join)"),
    ("ExecIncrementalSort", "legs' ordered aggregates"),
    ("ExecAgg", "legs' ordered aggregates"),
]


def fused(a: np.ndarray, m: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    q = (1 - alpha) * a + alpha * m
    return (q / np.linalg.norm(q)).astype(np.float32)


def classify(script: str) -> dict[str, collections.Counter[str]]:
    sides: dict[str, collections.Counter[str]] = {
        "search": collections.Counter(),
        "bare legs": collections.Counter(),
    }
    for sample in script.split("\n\n"):
        frames = [line.split()[-1] for line in sample.strip().splitlines() if line.strip()]
        if not frames:
            continue
        on = set(frames)
        side = sides["search" if on & ENTRY else "bare legs"]
        side[next((name for frame, name in CATEGORIES if frame in on), "other")] += 1
    return sides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reuse", metavar="DATABASE", required=True)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--freq", type=int, default=1000, help="perf samples per second")
    args = ap.parse_args()
    perf = shutil.which("perf")
    if perf is None:
        sys.exit("bench/key_cpu.py needs Linux perf (apt install linux-perf)")
    from tests.conftest import _with_database

    with psycopg.connect(_with_database(db.resolve_url(), args.reuse), autocommit=True) as conn:
        register_vector(conn)
        rows, dim = conn.execute(
            "SELECT count(*), max(vector_dims(embedding)) FROM mmr._emb_1"
        ).fetchone() or (0, 0)
        rng = np.random.default_rng(11)
        keys = rng.integers(0, rows, args.calls)
        mods = rng.standard_normal((args.calls, dim)).astype(np.float32)
        mods /= np.linalg.norm(mods, axis=1, keepdims=True)

        # the references' embeddings in each space: one query per space
        stored = {
            table: {
                key: np.asarray(v.to_list(), dtype=np.float32)
                for key, v in conn.execute(
                    f"SELECT id, embedding FROM mmr.{table} WHERE id = ANY(%s)",
                    ([int(r) for r in keys],),
                )
            }
            for table in ("_emb_1", "_emb_2")
        }
        legs = [
            (
                Vector(fused(stored["_emb_1"][int(r)], mods[i])),
                Vector(fused(stored["_emb_2"][int(r)], mods[i])),
            )
            for i, r in enumerate(keys)
        ]

        def one(i: int) -> None:
            conn.execute(SEARCH, (Jsonb(int(keys[i])), Vector(mods[i]))).fetchall()
            for table, q in zip(("_emb_1", "_emb_2"), legs[i], strict=True):
                conn.execute(
                    f"SELECT id FROM mmr.{table} ORDER BY embedding <=> %s LIMIT 10", (q,)
                ).fetchall()

        for i in range(min(50, args.calls)):  # warm: kept plans, caches
            one(i)
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        with tempfile.TemporaryDirectory() as tmp:
            data = str(Path(tmp) / "perf.data")
            rec = subprocess.Popen(
                [
                    perf,
                    "record",
                    "-F",
                    str(args.freq),
                    "--call-graph",
                    "dwarf,16384",
                    "-o",
                    data,
                    "-p",
                    str(pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            for i in range(args.calls):
                one(i)
            rec.send_signal(signal.SIGINT)
            rec.wait()
            script = subprocess.run(
                [perf, "script", "-i", data, "-F", "ip,sym"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    ms = 1000.0 / args.freq / args.calls  # CPU ms per call of one sample
    sides = classify(script)
    total = {side: sum(c.values()) * ms for side, c in sides.items()}
    for side, counts in sides.items():
        print(f"{side}: {total[side]:.3f} CPU ms per call")
        for name, n in counts.most_common():
            print(f"  {name:32s} {n * ms:7.3f}")
    hnsw = {side: sides[side]["HNSW scan"] * ms for side in sides}
    print(
        f"# search / bare legs, CPU: {total['search'] / total['bare legs']:.2f} "
        f"(HNSW scans alone: {hnsw['search'] / max(hnsw['bare legs'], 1e-9):.2f}); "
        f"search outside its HNSW scans: {total['search'] - hnsw['search']:.3f} ms per call"
    )


if __name__ == "__main__":
    main()
