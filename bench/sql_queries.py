"""Queries from SQL alone: what ``mmr.embed`` costs inside a search (issue 13).

    .venv/bin/python bench/sql_queries.py [--rows 400] [--rounds 200] [--cold 5]

Builds the shapes world (the committed shapes-clip model; rows embedded by the worker as
``mmr_worker``) in a fresh database of the embedded server (or ``MMR_DATABASE_URL``), then, on
one warm autocommit connection, runs per round and in a fresh random order per round:

* ``search(embed(text))``: ``SELECT key, score FROM mmr.search(c, s, mmr.embed(c, s, $1), k)``
* ``embed(text)``: ``SELECT mmr.embed(c, s, $1)`` (the encoder alone, in the same backend)
* ``search(vector)``: ``SELECT key, score FROM mmr.search(c, s, $1::vector, k)`` with the text's
  vector computed beforehand

and prints the p50 of each and the ratio ``search(embed) / (embed + search(vector))`` (target
<= 1.15).  Then ``--cold`` new connections each time their first ``mmr.embed`` (the backend
imports pg_mmretrieval and loads the model) and their second, with the backend's resident
memory (``VmRSS`` of ``pg_backend_pid()``, read from /proc: the server must run on this machine)
before, after shapes-clip, and after MiniLM too (when ``onnx_models/minilm`` exists).  Timings
depend on the machine and its load: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

import psycopg  # noqa: E402

from pg_mmretrieval import db, install  # noqa: E402

C = "demo_shapes"
S = "clip_image"
TEXTS = [
    "a large red circle in the center",
    "two small yellow stars at the top",
    "a green triangle on the left",
    "three purple squares",
    "a blue circle",
    "a small orange star on the right",
    "a large square at the bottom",
    "two green circles",
]


def _rss_mb(conn: psycopg.Connection[Any]) -> float | None:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        status = Path(f"/proc/{row[0] if row else 0}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def _build(url: str, rows: int) -> None:
    from pg_mmretrieval.demo import _create_table
    from pg_mmretrieval.worker import Worker, WorkerConfig

    install.upgrade(url)
    with db.connect(url, autocommit=True) as conn:
        _create_table(conn, rows)
        conn.execute(
            f"SELECT mmr.create_collection('{C}', '{C}', image_column => 'image', "
            "text_columns => ARRAY['caption'])"
        )
        conn.execute(f"SELECT mmr.add_space('{C}', '{S}', 'shapes-clip', 'image', 128)")
        if (REPO / "onnx_models" / "minilm" / "manifest.json").is_file():
            conn.execute(
                f"SELECT mmr.add_space('{C}', 'words', 'minilm', 'caption', 384, backfill => false)"
            )
    worker = db.with_user(url, db.WORKER_ROLE)
    Worker(worker, WorkerConfig(collections=(C,), once=True)).run()


def _time(conn: psycopg.Connection[Any], sql: str, params: Any) -> float:
    t0 = time.perf_counter()
    conn.execute(sql, params).fetchall()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--cold", type=int, default=5, help="new connections timed cold")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the database")
    args = ap.parse_args()
    from tests.conftest import _with_database

    server = db.resolve_url()
    name = f"bench_sqlq_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server, name)
    try:
        _build(url, args.rows)
        out = _run(url, args)
    finally:
        if not args.keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out))


def _run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    k = args.k
    composed = f"SELECT key, score FROM mmr.search('{C}', '{S}', mmr.embed('{C}', '{S}', %s), {k})"
    encode = f"SELECT mmr.embed('{C}', '{S}', %s)"
    bare = f"SELECT key, score FROM mmr.search('{C}', '{S}', %s::vector, {k})"
    rng = random.Random(0)
    with db.connect(url, autocommit=True) as conn:
        vectors = {}
        for t in TEXTS:
            row = conn.execute(f"SELECT mmr.embed('{C}', '{S}', %s)::text", (t,)).fetchone()
            assert row is not None
            vectors[t] = row[0]
        for _ in range(20):  # warm: plans, sessions, caches
            for t in TEXTS[:2]:
                conn.execute(composed, (t,)).fetchall()
                conn.execute(bare, (vectors[t],)).fetchall()
        times: dict[str, list[float]] = {
            "search(embed(text))": [],
            "embed(text)": [],
            "search(vector)": [],
        }
        for i in range(args.rounds):
            t = TEXTS[i % len(TEXTS)]
            variants = [
                ("search(embed(text))", composed, (t,)),
                ("embed(text)", encode, (t,)),
                ("search(vector)", bare, (vectors[t],)),
            ]
            rng.shuffle(variants)
            for label, sql, params in variants:
                times[label].append(_time(conn, sql, params))
    p50 = {label: statistics.median(v) for label, v in times.items()}
    ratio = p50["search(embed(text))"] / (p50["embed(text)"] + p50["search(vector)"])
    print(f"warm, {args.rounds} rounds, k={k}, {args.rows} rows, space {S} (shapes-clip):")
    for label, v in p50.items():
        print(f"  {label:22s} p50 {v:7.2f} ms")
    print(f"  ratio search(embed) / (embed + search(vector)) = {ratio:.3f}  (target <= 1.15)")

    cold: list[dict[str, float | None]] = []
    for _ in range(args.cold):
        with db.connect(url, autocommit=True) as conn:
            conn.execute("SELECT 1")
            before = _rss_mb(conn)
            first = _time(conn, encode, (TEXTS[0],))
            second = _time(conn, encode, (TEXTS[1],))
            after_clip = _rss_mb(conn)
            minilm = None
            after_both = None
            if conn.execute(
                "SELECT 1 FROM mmr.spaces WHERE collection = %s AND space = 'words'", (C,)
            ).fetchone():
                minilm = _time(conn, f"SELECT mmr.embed('{C}', 'words', %s)", (TEXTS[0],))
                after_both = _rss_mb(conn)
            cold.append(
                {
                    "first_ms": first,
                    "second_ms": second,
                    "minilm_first_ms": minilm,
                    "rss_before_mb": before,
                    "rss_clip_mb": after_clip,
                    "rss_both_mb": after_both,
                }
            )
    print(f"cold, {args.cold} new backends (median):")
    summary: dict[str, float | None] = {}
    for key in cold[0] if cold else []:
        vals = [c[key] for c in cold if c[key] is not None]
        summary[key] = statistics.median(vals) if vals else None  # type: ignore[type-var]
        shown = "n/a" if summary[key] is None else f"{summary[key]:.1f}"
        print(f"  {key:18s} {shown}")
    return {
        "p50_ms": p50,
        "ratio": ratio,
        "cold": summary,
        "rounds": args.rounds,
        "rows": args.rows,
        "date": time.strftime("%Y-%m-%d"),
    }


if __name__ == "__main__":
    main()
