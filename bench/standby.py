"""Search on a streaming hot standby vs on the primary, same run (issue 15, item 5).

    .venv/bin/python bench/standby.py [--n 20000] [--dim 384] [--queries 300]

Builds a collection of ``--n`` random unit vectors (an external space, HNSW) in a fresh database
of the embedded server (the primary), starts a hot standby of it on a free 127.0.0.1 port
(``pg_mmretrieval.standby``: pg_basebackup -R), then runs ``mmr.search`` (k=10) on both, each
round on both servers in a random order, and prints p50/p99 per server and the ratio
standby/primary.  It also times replication: a batch of rows written on the primary until the
standby has replayed it (``pg_last_wal_replay_lsn()``), and the whole path of issue 15: a row
inserted on the primary, embedded there by a running worker (``mmr-test`` encoder, as role
``mmr_worker``), until ``mmr.search`` on the standby returns it.  The standby and the database
are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

import pg_mmretrieval as mmr  # noqa: E402
from pg_mmretrieval import db, install, standby  # noqa: E402
from pg_mmretrieval.encoders import get_encoder  # noqa: E402
from pg_mmretrieval.worker import Worker, WorkerConfig  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) * 1000


def _worker_path(primary: str, replica: str, rows: int = 10) -> str:
    """Median seconds from an INSERT's commit on the primary until mmr.search on the standby
    returns the row, with a worker (on the primary) serving the queue."""
    enc = get_encoder("mmr-test")
    with db.connect(primary, autocommit=True) as c:
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        mmr.create_collection(c, "notes", "notes", text_columns=["body"])
        mmr.add_space(c, "notes", "t", "mmr-test", "body", 32)
    worker = Worker(db.with_user(primary, db.WORKER_ROLE), WorkerConfig(collections=("notes",)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    stmt = "SELECT key FROM mmr.search('notes', 't', %s::vector, 1)"
    took = []
    try:
        with db.connect(primary, autocommit=True) as p, db.connect(replica, autocommit=True) as s:
            for i in range(rows):
                text = f"note number {i} {uuid.uuid4().hex}"
                q = str([float(x) for x in next(enc.embed_batch([text]))])
                t0 = time.perf_counter()
                p.execute("INSERT INTO notes VALUES (%s, %s)", (i, text))
                while s.execute(stmt, (q,)).fetchall() != [(i,)]:
                    if time.perf_counter() - t0 > 60:
                        raise SystemExit(f"row {i} not searchable on the standby after 60 s")
                    time.sleep(0.005)
                took.append(time.perf_counter() - t0)
    finally:
        worker.stop()
        thread.join(30)
    return f"median {np.median(took) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms ({rows} rows)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    from tests.conftest import _with_database

    admin = db.resolve_url()
    name = f"bench_standby_{uuid.uuid4().hex[:8]}"
    with db.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    primary = _with_database(admin, name)
    port = _free_port()
    try:
        install.upgrade(primary)
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((args.n, args.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        t0 = time.perf_counter()
        with db.connect(primary, autocommit=True) as c:
            c.execute("CREATE TABLE items (id int PRIMARY KEY)")
            c.execute(f"INSERT INTO items SELECT generate_series(0, {args.n - 1})")
            mmr.create_collection(c, "items", "items")
            mmr.add_space(c, "items", "v", "external", None, args.dim)
            for i in range(0, args.n, 2000):
                ids = list(range(i, min(i + 2000, args.n)))
                mmr.put_embeddings(c, "items", "v", ids, vecs[ids[0] : ids[-1] + 1])
        print(f"loaded {args.n} x {args.dim} in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        standby.start(port)
        replica = f"postgresql://postgres@127.0.0.1:{port}/{name}"
        standby.wait_for_replay(primary, replica)
        print(f"standby on port {port} (base backup + start) in {time.perf_counter() - t0:.1f} s")
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        conns = {
            "primary": db.connect(primary, autocommit=True),
            "standby": db.connect(replica, autocommit=True),
        }
        stmt = "SELECT key, score FROM mmr.search('items', 'v', %s::vector, 10)"
        for c in conns.values():  # warm both caches
            for q in queries[:50]:
                c.execute(stmt, (str(q.tolist()),)).fetchall()
        times: dict[str, list[float]] = {k: [] for k in conns}
        same = 0
        for q in queries:
            text = str(q.tolist())
            order = list(conns)
            random.shuffle(order)
            got = {}
            for k in order:
                t = time.perf_counter()
                got[k] = conns[k].execute(stmt, (text,)).fetchall()
                times[k].append(time.perf_counter() - t)
            same += got["primary"] == got["standby"]
        print(f"\nmmr.search k=10, {args.queries} queries, same results: {same}/{args.queries}")
        print(f"{'server':10} {'p50 ms':>8} {'p99 ms':>8}")
        for k, ts in times.items():
            print(f"{k:10} {_pct(ts, 50):8.3f} {_pct(ts, 99):8.3f}")
        ratio = _pct(times["standby"], 50) / _pct(times["primary"], 50)
        print(f"ratio standby/primary p50: {ratio:.2f}")
        lags = []
        with db.connect(primary, autocommit=True) as c:
            for i in range(5):
                ids = list(range(args.n + i * 100, args.n + (i + 1) * 100))
                c.execute("INSERT INTO items SELECT unnest(%s::int[])", (ids,))
                mmr.put_embeddings(c, "items", "v", ids, vecs[:100])
                lags.append(standby.wait_for_replay(primary, replica))
        print(
            "replication: 100 rows + embeddings committed on the primary, replayed on the "
            f"standby after {np.median(lags) * 1000:.1f} ms (median of 5)"
        )
        path = _worker_path(primary, replica)
        print(f"insert on the primary -> searchable on the standby, worker running: {path}")
        for c in conns.values():
            c.close()
    finally:
        standby.stop(port, remove=True)
        with db.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
