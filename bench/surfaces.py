"""Overhead of the application surfaces over a plain ``mmr.search`` call.

Same database, same queries, same k, in one run; prints per-query latency and the ratio to
the baseline (raw psycopg calling ``mmr.search``).  Rows: N rows with D-dimensional external
vectors; queries: Q random vectors (seeded).

    .venv/bin/python bench/surfaces.py [--rows 20000] [--dim 128] [--queries 300] [--k 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pg_mmretrieval as mmr
from pg_mmretrieval import db, install
from pg_mmretrieval.sqlalchemy import Collection, SpaceSpec, nearest


class Base(DeclarativeBase):
    pass


def _model(dim: int) -> type[Any]:
    class Item(Base):
        __tablename__ = "bench_items"
        id: Mapped[int] = mapped_column(primary_key=True)
        price: Mapped[int]

        mmr = Collection(spaces=[SpaceSpec("vec", "external", dimensions=dim)])

    return Item


def _time(label: str, fn: Callable[[np.ndarray[Any, Any]], Any], queries: Any) -> float:
    for q in queries[:10]:  # warm caches and prepared plans
        fn(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times) * 1000
    print(f"{label:<44} median {med:7.3f} ms", end="")
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    server = db.resolve_url()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + f"/{name}" if "?" not in server else None
    if url is None:
        base, query = server.split("?", 1)
        url = base.rsplit("/", 1)[0] + f"/{name}?{query}"
    try:
        install.upgrade(url)
        item = _model(args.dim)
        engine = sa.create_engine(install._sa_url(url))
        Base.metadata.create_all(engine)
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
        with mmr.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO bench_items SELECT g, g %% 100 FROM generate_series(1, %s) g",
                (args.rows,),
            )
            for start in range(0, args.rows, 5000):
                keys = list(range(start + 1, min(start + 5000, args.rows) + 1))
                mmr.put_embeddings(conn, "bench_items", "vec", keys, vecs[start : start + 5000])
            conn.execute("ANALYZE")
        queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        k = args.k
        print(f"{args.rows} rows, {args.dim} dims, {args.queries} queries, k={k}")

        with mmr.connect(url, autocommit=True) as conn:
            base = _time(
                "baseline: psycopg SELECT mmr.search(...)",
                lambda q: mmr.search(conn, "bench_items", "vec", q, k),
                queries,
            )
            print()
        with mmr.Client(url) as client:
            coll = client.collection("bench_items")
            r = _time("Client.search", lambda q: coll.search("vec", q, k=k), queries)
            print(f"   x{r / base:.2f}")
            r = _time(
                "Client.search_rows (hits + rows)",
                lambda q: coll.search_rows("vec", q, k=k),
                queries,
            )
            print(f"   x{r / base:.2f}")
        with Session(engine) as session:
            r = _time(
                "SQLAlchemy nearest() -> ORM objects",
                lambda q: session.execute(nearest(item, "vec", q, k=k)).all(),
                queries,
            )
            print(f"   x{r / base:.2f}")
            r = _time(
                "SQLAlchemy nearest().where(price < 10)",
                lambda q: session.execute(
                    nearest(item, "vec", q, k=k).where(item.price < 10)
                ).all(),
                queries,
            )
            print(f"   x{r / base:.2f}")
        with mmr.connect(url, autocommit=True) as conn:
            r = _time(
                "mmr.search(filter price < 10) (SQL API)",
                lambda q: mmr.search(conn, "bench_items", "vec", q, k, filter={"price": {"<": 10}}),
                queries,
            )
            print(f"   x{r / base:.2f}")

        async def run_async() -> None:
            aeng = create_async_engine(install._sa_url(url).replace("+psycopg", "+psycopg_async"))
            async with AsyncSession(aeng) as s:
                stmt = [nearest(item, "vec", q, k=k) for q in queries]
                for st in stmt[:10]:
                    (await s.execute(st)).all()
                times = []
                for st in stmt:
                    t0 = time.perf_counter()
                    (await s.execute(st)).all()
                    times.append(time.perf_counter() - t0)
            await aeng.dispose()
            med = statistics.median(times) * 1000
            print(
                f"{'SQLAlchemy async nearest() (statement prebuilt)':<44} median {med:7.3f} ms"
                f"   x{med / base:.2f}"
            )

        asyncio.run(run_async())
        engine.dispose()
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
