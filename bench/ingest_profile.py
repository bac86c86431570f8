"""Where the worker's time goes: per-phase wall and CPU time of one ``--once`` drain.

Wraps the worker's phases (claim, load, encode with its ONNX run, write with its vector
formatting, the writer hand-off) in timers, samples the CPU time of the PostgreSQL backends
(``/proc/<pid>/stat``; the server must run on this machine), and prints
a breakdown next to the encoder-alone time on the same inputs.  The CPU ratio (encoder alone
/ worker + server) is what a saturated machine's wall-clock ratio tends to; it moves much less
than wall time when other jobs share the CPUs.  Wall times of phases that
run on the writer thread overlap the encoder's; CPU times add up to what the two cores did.

    .venv/bin/python bench/ingest_profile.py --encoder minilm --rows 1000
    .venv/bin/python bench/ingest_profile.py --encoder minilm --rows 1000 --no-index
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import ingest  # noqa: E402
import psycopg  # noqa: E402

from pg_mmretrieval import db  # noqa: E402
from pg_mmretrieval.encoders import get_encoder  # noqa: E402
from pg_mmretrieval.worker import (  # noqa: E402
    Worker,
    WorkerConfig,
    claiming,
    loading,
    runner,
    serving,
    writing,
)

WALL: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_lock = threading.Lock()


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            with _lock:
                WALL[name] += time.perf_counter() - w0
                CPU[name] += time.thread_time() - c0
                CALLS[name] += 1

    return wrapper


def patch(obj: Any, attr: str, name: str) -> None:
    if hasattr(obj, attr):  # phases differ between versions of the worker
        setattr(obj, attr, timed(name, getattr(obj, attr)))


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def server_cpu(url: str) -> float:
    """CPU seconds of the whole PostgreSQL server so far: the postmaster, its live children
    (backends, WAL writer, checkpointer...) and the children that exited (cutime/cstime)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    assert row is not None
    master = int(Path(row[0], "postmaster.pid").read_text().split()[0])
    parts = _stat(master)
    total = sum(int(x) for x in parts[11:15])  # utime, stime, cutime, cstime
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = _stat(int(d))
            except OSError:
                continue
            if int(st[1]) == master:
                total += int(st[11]) + int(st[12])
    return total / _TICK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-index", action="store_true")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()

    enc = get_encoder(args.encoder)
    enc.batch_size = args.batch_size
    data = ingest.texts(args.rows, random.Random(0))
    list(enc.embed_batch(data[: args.batch_size]))
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    list(enc.embed_batch(data))
    t_enc, c_enc = time.perf_counter() - t0, time.process_time() - c0
    m_enc = time.thread_time() - m0

    patch(claiming, "claim", "claim")
    patch(writing, "write", "write (txn)")
    patch(writing, "_write_space", "write: statements")
    patch(runner, "encode_isolating", "encode (total)")
    patch(claiming.Claimer, "take_ahead", "claim ahead: wait")
    patch(loading.ItemLoader, "load", "load")
    patch(writing.JobWriter, "submit", "hand-off to writer")
    patch(runner.Worker, "_wait", "idle wait")
    patch(serving.ServedSpaces, "drained", "drained check")
    sess = getattr(enc, "session", None)
    if callable(sess):
        s = sess("text")
        patch(s, "run", "encode: onnx run")

    url = ingest.make_db(db.resolve_url())
    with db.connect(url, autocommit=True) as conn:
        t = f"p_{uuid.uuid4().hex[:6]}"
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, body text)")
        conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (t, t))
        table = conn.execute(
            "SELECT mmr.add_space(%s, 'v', %s, 'body', %s)::text", (t, enc.name, enc.dimension)
        ).fetchone()[0]  # type: ignore[index]
        if args.no_index:
            conn.execute(f"DROP INDEX {table}_hnsw")
        with conn.cursor().copy(f"COPY {t} (id, body) FROM STDIN") as cp:
            for i, x in enumerate(data):
                cp.write_row((i, x))
    pg0 = server_cpu(url)
    cfg = WorkerConfig(
        collections=(t,), once=True, batch_size=args.batch_size, pipeline=not args.no_pipeline
    )
    t0, c0 = time.perf_counter(), time.process_time()
    Worker(db.with_user(url, db.WORKER_ROLE), cfg).run()  # its least-privilege role
    t_w, c_w = time.perf_counter() - t0, time.process_time() - c0
    time.sleep(0.5)  # let the backends exit, so their CPU time lands in the postmaster's
    pg_cpu = server_cpu(url) - pg0

    n = args.rows
    print(
        f"{enc.name}, {n} rows, batch {args.batch_size}, index={'no' if args.no_index else 'hnsw'}"
    )
    print(
        f"encoder alone: {t_enc:.2f} s wall ({n / t_enc:.1f} rows/s), {c_enc:.2f} s CPU "
        f"({m_enc:.2f} s on the calling thread)"
    )
    print(f"worker:        {t_w:.2f} s wall ({n / t_w:.1f} rows/s), {c_w:.2f} s CPU (python)")
    print(f"               + {pg_cpu:.2f} s CPU in the PostgreSQL server (all processes)")
    print(
        f"ratio {t_enc / t_w:.2f} (wall); CPU ratio encoder / (worker + PostgreSQL) "
        f"{c_enc / (c_w + pg_cpu):.2f}"
    )
    print(f"{'phase':24} {'calls':>6} {'wall s':>8} {'cpu s':>8}")
    for k in sorted(WALL, key=lambda k: -WALL[k]):
        print(f"{k:24} {CALLS[k]:6d} {WALL[k]:8.3f} {CPU[k]:8.3f}")
    with psycopg.connect(db.resolve_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.split("/")[-1].split("?")[0]}" WITH (FORCE)')


if __name__ == "__main__":
    main()
