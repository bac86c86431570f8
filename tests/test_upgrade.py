"""Upgrade harness: installing at head == installing an older revision, then upgrading.

For every released revision (today: 0001 and 0003) the test installs that revision with the
idempotent SQL it shipped with (frozen under tests/fixtures/sql_<rev>/), creates a
collection with data using those functions, upgrades to head, and compares a catalog dump
of schema ``mmr`` and of the collection's objects with a fresh install at head that created
the same collection.  Per-collection objects (queue tables, trigger functions) created before
the upgrade must end up exactly like ones created after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pg_mmretrieval import db, install
from pg_mmretrieval.worker import Worker, WorkerConfig
from tests.helpers import worker_url

FIXTURES = Path(__file__).parent / "fixtures"
RELEASED = ["0001", "0003"]

# The catalog of schema mmr and of the user's table (triggers), as comparable text rows.
DUMP = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
               coalesce(c.relacl::text, '')
          FROM pg_class c WHERE c.relnamespace = 'mmr'::regnamespace ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname,
               row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS position,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
               a.attstorage, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'mmr'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 3""",
    "indexes": """
        SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i
          JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace = 'mmr'::regnamespace ORDER BY 1""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE connamespace = 'mmr'::regnamespace ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_functiondef(p.oid), coalesce(p.proacl::text, '')
          FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace ORDER BY 1, 2""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c
         WHERE c.relkind = 'v' AND c.relnamespace IN ('mmr'::regnamespace,
                                                      'public'::regnamespace) ORDER BY 1""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
         WHERE NOT tgisinternal AND tgrelid = 'public.items'::regclass ORDER BY 1""",
    "policies": """
        SELECT tablename, policyname, qual FROM pg_policies
         WHERE schemaname = 'mmr' ORDER BY 1, 2""",
    "version": "SELECT version_num FROM mmr.alembic_version",
}


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {k: conn.execute(q).fetchall() for k, q in DUMP.items()}


def _make_collection(url: str) -> None:
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, body text, img bytea)")
        conn.execute(
            "SELECT mmr.create_collection('items', 'public.items', image_column => 'img', "
            "text_columns => ARRAY['body'])"
        )
        conn.execute("SELECT mmr.add_space('items', 'body_vec', 'mmr-test', 'body', 32)")
        conn.execute(
            "INSERT INTO public.items SELECT g, 'row ' || g, NULL FROM generate_series(1, 20) g"
        )


def _install_released(url: str, revision: str) -> None:
    """Install ``revision`` exactly as it was released: its versioned files (Alembic), then
    the idempotent files it shipped with (frozen under tests/fixtures/sql_<rev>/)."""
    install.upgrade(url, revision=revision)
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted((FIXTURES / f"sql_{revision}").glob("*.sql")):
            install.apply_sql_file(conn, path)


@pytest.fixture()
def make_db(server_url: str) -> Iterator[Any]:
    names: list[str] = []

    def make() -> str:
        name = f"u_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server_url, count=1)

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("revision", RELEASED)
def test_upgrade_equals_fresh_install(make_db: Any, revision: str) -> None:
    fresh = make_db()
    install.upgrade(fresh)
    _make_collection(fresh)

    old = make_db()
    _install_released(old, revision)
    _make_collection(old)  # with the functions of the old revision
    with psycopg.connect(old) as conn:
        before = conn.execute("SELECT count(*) FROM mmr._queue_1").fetchone()
    install.upgrade(old)

    a, b = _dump(fresh), _dump(old)
    for key in DUMP:
        assert a[key] == b[key], f"{key} differ after upgrading from {revision}"
    # The queue made before the upgrade has the worker's columns and still holds its work.
    cols = [r[1] for r in b["columns"] if r[0] == "_queue_1"]
    assert cols[-4:] == ["mmr_claimed_by", "mmr_claimed_until", "mmr_claims", "mmr_errors"]
    with psycopg.connect(old) as conn:
        assert conn.execute("SELECT count(*) FROM mmr._queue_1").fetchone() == before == (20,)


def test_upgraded_collection_is_served(make_db: Any) -> None:
    url = make_db()
    install.upgrade(url, revision="0001")
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted((FIXTURES / "sql_0001").glob("*.sql")):
            install.apply_sql_file(conn, path)
    _make_collection(url)
    install.upgrade(url)
    Worker(worker_url(url), WorkerConfig(once=True, lease_s=5)).run()
    with db.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE public.items SET body = body || '!' WHERE id <= 5")
        Worker(worker_url(url), WorkerConfig(once=True, lease_s=5)).run()
        report = conn.execute(
            "SELECT missing, stale, duplicate, orphan, embedded FROM mmr.check('items')"
        )
        assert report.fetchall() == [(0, 0, 0, 0, 20)]


def test_dump_sees_differences(make_db: Any) -> None:
    """The comparison can fail: a changed default is caught."""
    a = make_db()
    install.upgrade(a)
    _make_collection(a)
    before = _dump(a)
    with psycopg.connect(a, autocommit=True) as conn:
        conn.execute("ALTER TABLE mmr._queue_1 ALTER COLUMN mmr_claims SET DEFAULT 1")
    assert _dump(a)["columns"] != before["columns"]


# Issue 14 (must hold): `mmr db upgrade` from revision 0003, with data, keeps the data and
# search.  Vectors the application computed ('external' space), so no encoder is involved.
_DIMS = 8


def _vectors(n: int) -> list[list[float]]:
    import random

    rng = random.Random(14)
    return [[rng.uniform(-1, 1) for _ in range(_DIMS)] for _ in range(n)]


def _exact_top(vecs: list[list[float]], q: list[float], k: int) -> list[int]:
    def cos(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    ranked = sorted(range(len(vecs)), key=lambda i: -cos(vecs[i], q))
    return [i + 1 for i in ranked[:k]]  # row ids start at 1


def _vec(v: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in v) + "]"


def _search(conn: psycopg.Connection[Any], q: list[float], k: int) -> list[int]:
    rows = conn.execute(
        "SELECT key, score FROM mmr.search('docs', 'vec', %s::vector, k => %s, ef_search => 100)",
        (_vec(q), k),
    ).fetchall()
    return [int(key) for key, _ in rows]


_DATA = {
    "source": "SELECT id, body FROM public.docs ORDER BY id",
    "embeddings": "SELECT id, embedding::text, content_hash, model_id FROM mmr._emb_1 ORDER BY id",
    "collection": "SELECT id, name, source::text, text_columns FROM mmr._collection ORDER BY id",
    "spaces": "SELECT id, name, encoder, dimensions, distance, active FROM mmr._space ORDER BY id",
}


def test_upgrade_from_0003_keeps_data_and_search(make_db: Any) -> None:
    url = make_db()
    _install_released(url, "0003")
    vecs = _vectors(40)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO public.docs SELECT g, 'doc ' || g FROM generate_series(1, 40) g")
        conn.execute(
            "SELECT mmr.create_collection('docs', 'public.docs', text_columns => ARRAY['body'])"
        )
        conn.execute("SELECT mmr.add_space('docs', 'vec', 'external', NULL, %s)", (_DIMS,))
        stored = conn.execute(
            "SELECT mmr.put_embeddings('docs', 'vec', %s::jsonb[], %s::vector[])",
            ([str(i + 1) for i in range(40)], [_vec(v) for v in vecs]),  # keys: the ids
        ).fetchone()
        assert stored == (40,)
        assert conn.execute("SELECT embedding_table::text FROM mmr._space").fetchone() == (
            "mmr._emb_1",
        )
        before = {k: conn.execute(q).fetchall() for k, q in _DATA.items()}
        assert len(before["embeddings"]) == 40
        assert conn.execute("SELECT version_num FROM mmr.alembic_version").fetchone() == ("0003",)

    # The real CLI, as an operator runs it.
    done = subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", "db", "upgrade"],
        env={**os.environ, "MMR_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr

    with psycopg.connect(url, autocommit=True) as conn:
        head = install.head_revision()
        assert conn.execute("SELECT version_num FROM mmr.alembic_version").fetchone() == (head,)
        after = {k: conn.execute(q).fetchall() for k, q in _DATA.items()}
        assert after == before
        # Search works on the data stored before the upgrade: the exact top 5, the query's
        # own row first.
        for row in (3, 17, 40):
            q = vecs[row - 1]
            found = _search(conn, q, 5)
            assert found[0] == row
            assert found == _exact_top(vecs, q, 5)
        # ... and on data stored after it.
        new = [0.5] * _DIMS
        conn.execute("INSERT INTO public.docs VALUES (41, 'doc 41')")
        conn.execute("SELECT mmr.put_embedding('docs', 'vec', '41', %s::vector)", (_vec(new),))
        assert _search(conn, new, 1) == [41]


# Revision 0008 (issue 18, the filtered fast path): the plan type mmr._exec_plan gains the fields
# iterative and planning; an upgrade from 0007 adds them (and its file runs twice harmlessly),
# and filtered searches then take the fast path.
PLAN_FIELDS = """
    SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
     WHERE attrelid = 'mmr._exec_plan'::regclass AND attnum > 0 AND NOT attisdropped"""


def test_upgrade_from_0007_adds_the_plan_fields(make_db: Any) -> None:
    url = make_db()
    install.upgrade(url, revision="0007")
    with psycopg.connect(url) as conn:
        fields = conn.execute(PLAN_FIELDS).fetchone()
    assert fields is not None and fields[0][-1] == "options", fields
    install.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(PLAN_FIELDS).fetchone() == (fields[0] + ["iterative", "planning"],)
        sql_dir = Path(__file__).parent.parent / "sql" / "incremental"
        install.apply_sql_file(conn, sql_dir / "008-00-filtered-plan.sql")  # again: no error
        assert conn.execute(PLAN_FIELDS).fetchone() == (fields[0] + ["iterative", "planning"],)
    vecs = _vectors(40)
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.docs (id int PRIMARY KEY, tag int)")
        conn.execute("INSERT INTO public.docs SELECT g, g % 2 FROM generate_series(1, 40) g")
        conn.execute("SELECT mmr.create_collection('docs', 'public.docs')")
        conn.execute("SELECT mmr.add_space('docs', 'vec', 'external', NULL, %s)", (_DIMS,))
        conn.execute(
            "SELECT mmr.put_embeddings('docs', 'vec', %s::jsonb[], %s::vector[])",
            ([str(i + 1) for i in range(40)], [_vec(v) for v in vecs]),
        )
        plan = conn.execute(
            "SELECT p.planning, p.iterative FROM mmr._search_exec_plan('docs', 'vec', "
            "%s::vector, 5, '{\"tag\": 1}', NULL, NULL, NULL, NULL, NULL) p",
            (_vec(vecs[2]),),
        ).fetchall()
        assert plan == [("custom", "strict_order")]  # 20 rows pass: the exact plan
        rows = conn.execute(
            "SELECT key FROM mmr.search('docs', 'vec', %s::vector, 5, '{\"tag\": 1}')",
            (_vec(vecs[2]),),
        ).fetchall()
        odd = [i for i in range(1, 41) if i % 2 == 1]  # tag 1
        ranked = _exact_top([vecs[i - 1] for i in odd], vecs[2], 5)  # positions in odd, from 1
        assert [int(k) for (k,) in rows] == [odd[j - 1] for j in ranked]
