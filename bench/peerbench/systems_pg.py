"""The PostgreSQL systems, on one database of the server the tests use (or MMR_DATABASE_URL).

* ``mmr.search``: a collection over a source table ``docs (id int, cat int)``, an external
  space of the corpus's dimension filled through the public bulk path ``mmr.put_embeddings``
  (batches of ``PUT_BATCH``), searched with ``mmr.search`` in SQL (the filtered search with
  ``filter => {"cat": c}``).
* ``pgvector (bare)``: a table ``bare (id int, cat int, embedding vector(d))`` loaded with
  COPY (binary vectors), then ``CREATE INDEX ... USING hnsw (embedding vector_cosine_ops)``, as
  pgvector's documentation recommends for initial loads; searched by a prepared statement with
  ``hnsw.ef_search`` set per session; filtered search with ``WHERE cat = $2`` and
  ``hnsw.iterative_scan = strict_order`` (what ``mmr.search`` uses under a filter).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import Vector
from pgvector.psycopg import register_vector

from .base import EF_CONSTRUCTION, Array, M, System

PUT_BATCH = 2000


class Database:
    """A fresh database with the mmr schema, dropped by :meth:`drop` (unless kept)."""

    def __init__(self, url: str | None = None, name: str | None = None) -> None:
        from pg_mmretrieval import db, install

        self.server = db.resolve_url(url)
        self.name = name or f"bench_peers_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        self.url = _with_database(self.server, self.name)
        install.upgrade(self.url)

    def connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        register_vector(conn)
        return conn

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _with_database(url: str, dbname: str) -> str:
    """``url`` (a postgresql:// URL, as the embedded server gives) naming another database."""
    base, sep, query = url.partition("?")
    return re.sub(r"/[^/]*$", f"/{dbname}", base) + sep + query


def _copy_source(conn: psycopg.Connection[Any], table: str, cats: Array) -> None:
    with conn.cursor().copy(f"COPY {table} (id, cat) FROM STDIN") as cp:
        for i, c in enumerate(cats):
            cp.write_row((i, int(c)))


def _index_bytes(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
        "WHERE i.indrelid = %s::regclass AND a.amname = 'hnsw'",
        (table,),
    ).fetchone()
    return int(row[0]) if row else 0


class MmrSearch(System):
    name = "mmr.search (SQL)"
    kind = "SQL"
    knob = "ef_search"

    def __init__(self, workdir: Path, database: Database) -> None:
        super().__init__(workdir)
        self.db = database
        self.conn = database.connect()
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "load": "mmr.put_embeddings"}

    def build(self, vectors: Array, cats: Array) -> None:
        from pg_mmretrieval import collections as col

        conn = self.conn
        n, dim = vectors.shape
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, cat int NOT NULL)")
        _copy_source(conn, "docs", cats)
        conn.execute("CREATE INDEX docs_cat ON docs (cat)")  # as on the bare table
        col.create_collection(conn, "docs", "docs")
        col.add_space(conn, "docs", "emb", "external", None, dim)
        for lo in range(0, n, PUT_BATCH):
            hi = min(n, lo + PUT_BATCH)
            col.put_embeddings(conn, "docs", "emb", list(range(lo, hi)), vectors[lo:hi])
        row = conn.execute(
            "SELECT s.embedding_table::text FROM mmr._space s "
            "JOIN mmr._collection c ON c.id = s.collection_id "
            "WHERE c.name = 'docs' AND s.name = 'emb' AND s.active"
        ).fetchone()
        assert row is not None
        self.table = str(row[0])
        conn.execute("VACUUM ANALYZE docs")
        conn.execute(f"VACUUM ANALYZE {self.table}")

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        rows = self.conn.execute(
            "SELECT key FROM mmr.search('docs', 'emb', %s, %s, NULL, %s)",
            (Vector(q), k, knob),
            prepare=True,
            binary=True,
        ).fetchall()
        return [int(r[0]) for r in rows]

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        rows = self.conn.execute(
            "SELECT key FROM mmr.search('docs', 'emb', %s, %s, jsonb_build_object('cat', %s), %s)",
            (Vector(q), k, cat, knob),
            prepare=True,
            binary=True,
        ).fetchall()
        return [int(r[0]) for r in rows]

    def index_bytes(self) -> int | None:
        return _index_bytes(self.conn, self.table)

    def close(self) -> None:
        self.conn.close()


class BarePgvector(System):
    name = "pgvector, bare prepared SQL"
    kind = "SQL"
    knob = "ef_search"

    def __init__(self, workdir: Path, database: Database) -> None:
        super().__init__(workdir)
        self.conn = database.connect()
        self.fconn = database.connect()  # filtered search: iterative scans on
        self.settings = {"m": M, "ef_construction": EF_CONSTRUCTION, "load": "COPY, CREATE INDEX"}
        self._ef: dict[int, int | None] = {}

    def build(self, vectors: Array, cats: Array) -> None:
        conn = self.conn
        dim = vectors.shape[1]
        conn.execute(
            f"CREATE TABLE bare (id int PRIMARY KEY, cat int NOT NULL, embedding vector({dim}))"
        )
        with conn.cursor().copy(
            "COPY bare (id, cat, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int4", "int4", "vector"])
            for i, v in enumerate(vectors):
                cp.write_row((i, int(cats[i]), np.asarray(v, dtype=np.float32)))
        conn.execute(
            f"CREATE INDEX bare_hnsw ON bare USING hnsw (embedding vector_cosine_ops) "
            f"WITH (m = {M}, ef_construction = {EF_CONSTRUCTION})"
        )
        conn.execute("CREATE INDEX bare_cat ON bare (cat)")
        conn.execute("VACUUM ANALYZE bare")
        self.fconn.execute("SET hnsw.iterative_scan = strict_order")

    def _on(self, conn: psycopg.Connection[Any], knob: int | None) -> psycopg.Connection[Any]:
        if self._ef.get(id(conn), -1) != knob:
            conn.execute(f"SET hnsw.ef_search = {int(knob or 40)}")
            self._ef[id(conn)] = knob
        return conn

    def search(self, q: Array, k: int, knob: int | None) -> list[int]:
        rows = (
            self._on(self.conn, knob)
            .execute(
                "SELECT id FROM bare ORDER BY embedding <=> %s LIMIT %s",
                (Vector(q), k),
                prepare=True,
                binary=True,
            )
            .fetchall()
        )
        return [int(r[0]) for r in rows]

    def search_filtered(self, q: Array, k: int, knob: int | None, cat: int) -> list[int]:
        rows = (
            self._on(self.fconn, knob)
            .execute(
                "SELECT id FROM bare WHERE cat = %s ORDER BY embedding <=> %s LIMIT %s",
                (cat, Vector(q), k),
                prepare=True,
                binary=True,
            )
            .fetchall()
        )
        return [int(r[0]) for r in rows]

    def index_bytes(self) -> int | None:
        return _index_bytes(self.conn, "bare")

    def close(self) -> None:
        self.conn.close()
        self.fconn.close()


def cost_breakdown(
    database: Database, queries: Array, k: int, ef_search: int | None
) -> dict[str, float]:
    """Where a bare query's time goes, p50 over ``queries`` (ms), interleaved per query:

    * ``round trip``: a prepared ``SELECT 1`` (client, protocol, socket, executor start-up);
    * ``bare prepared``: the bare search as the benchmark sends it (client-side time);
    * ``planning`` / ``execution``: the server's own times for the same query from
      ``EXPLAIN (ANALYZE, TIMING OFF)`` (planning of an unprepared statement; execution is the
      HNSW scan and the heap fetches of the k rows, without the protocol).
    """
    import json
    import time

    conn = database.connect()
    try:
        conn.execute(f"SET hnsw.ef_search = {int(ef_search or 40)}")
        out: dict[str, list[float]] = {
            "round trip": [], "bare prepared": [], "planning": [], "execution": []
        }  # fmt: skip
        sql = "SELECT id FROM bare ORDER BY embedding <=> %s LIMIT %s"
        for q in queries[: min(WARMUP_BREAKDOWN, len(queries))]:
            conn.execute(sql, (Vector(q), k), prepare=True, binary=True).fetchall()
        for q in queries:
            t0 = time.perf_counter()
            conn.execute("SELECT 1", prepare=True).fetchall()
            out["round trip"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            conn.execute(sql, (Vector(q), k), prepare=True, binary=True).fetchall()
            out["bare prepared"].append(time.perf_counter() - t0)
            row = conn.execute(
                "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, (Vector(q), k)
            ).fetchone()
            assert row is not None
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            out["planning"].append(plan[0]["Planning Time"] / 1e3)
            out["execution"].append(plan[0]["Execution Time"] / 1e3)
        return {name: float(np.median(v)) * 1e3 for name, v in out.items()}
    finally:
        conn.close()


WARMUP_BREAKDOWN = 20
