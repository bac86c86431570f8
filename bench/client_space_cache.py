"""What the client's space cache saves per search (issue 14: the Python client resolved the
space with a catalog query on every search).

    .venv/bin/python bench/client_space_cache.py [--rows 2000] [--queries 600]

In a scratch database (dropped afterwards) with one collection (an external 64-dimension
space and an ``mmr-test`` text space), every variant runs once per round, in a fresh random
order per round, on one client:

* ``before, vector``: what ``Collection.search`` did before the cache: the catalog query of
  ``Collection.space`` then ``mmr.search`` (``pg_mmretrieval.search.search``)
* ``after, vector``: ``Collection.search`` (space from the cache, no guard: the query is the
  caller's vector)
* ``before, text`` / ``after, text``: the same with a text query encoded by the space's
  encoder (after: the statement carries the guard that checks the cached space)

The table gives p50/p90 in ms and the ratio of each ``after`` to its ``before``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
if not os.environ.get("MMR_DATABASE_URL"):
    os.environ.setdefault("MMR_DATA_DIR", str(REPO / ".mmr-test-data"))

from pg_mmretrieval import Client, SpaceSpec, db, install  # noqa: E402
from pg_mmretrieval.client._query import encode_query  # noqa: E402
from pg_mmretrieval.search import search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=600, help="rounds (one query per variant)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    from tests.conftest import _with_database
    from tests.surfaces_helpers import drain_queue

    server = db.resolve_url()
    name = f"bench_cache_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _with_database(server, name)
        install.upgrade(url)
        with Client(url) as client:
            run(client, args.rows, args.queries, args.k, drain_queue)
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(client: Client, rows: int, rounds: int, k: int, drain: Callable[..., int]) -> None:
    client.conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    coll = client.create_collection(
        "docs",
        "docs",
        text_columns=["body"],
        spaces=[SpaceSpec("ext", "external", dimensions=64), SpaceSpec("txt", "mmr-test", "body")],
    )
    keys = coll.insert([{"id": i, "body": f"document {i}"} for i in range(1, rows + 1)])
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((rows, 64)).astype(np.float32)
    coll.put_embeddings("ext", keys, list(vecs))
    drain(client.conn, "docs")
    client.conn.execute("ANALYZE")
    qs = [vecs[int(i)] for i in rng.integers(0, rows, rounds)]
    texts = [f"document {int(i)}" for i in rng.integers(1, rows, rounds)]
    conn = client.conn

    def before_vector(i: int) -> object:
        info = coll.space("ext")
        return search(conn, "docs", "ext", encode_query(info, qs[i], None, None), k)

    def before_text(i: int) -> object:
        info = coll.space("txt")
        return search(conn, "docs", "txt", encode_query(info, None, texts[i], None), k)

    variants: dict[str, Callable[[int], object]] = {
        "before, vector": before_vector,
        "after, vector": lambda i: coll.search("ext", qs[i], k=k),
        "before, text": before_text,
        "after, text": lambda i: coll.search("txt", text=texts[i], k=k),
    }
    for fn in variants.values():  # warm up: plans, caches, the encoder
        for i in range(20):
            fn(i)
    times: dict[str, list[float]] = {n: [] for n in variants}
    order = list(variants)
    for i in range(rounds):
        random.Random(i).shuffle(order)
        for n in order:
            t = time.perf_counter()
            variants[n](i)
            times[n].append((time.perf_counter() - t) * 1000)
    p50 = {n: float(np.percentile(v, 50)) for n, v in times.items()}
    print(f"{rounds} rounds, {rows} rows, k={k}")
    print(f"{'variant':<16} {'p50 ms':>8} {'p90 ms':>8} {'vs before':>10}")
    for n, v in times.items():
        base = p50[n.replace("after", "before")]
        print(f"{n:<16} {p50[n]:8.3f} {np.percentile(v, 90):8.3f} {p50[n] / base:9.2f}x")
    for kind in ("vector", "text"):
        saved = p50[f"before, {kind}"] - p50[f"after, {kind}"]
        print(f"saved per {kind} search (p50): {saved:.3f} ms")


if __name__ == "__main__":
    main()
