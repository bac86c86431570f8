"""kill -9 during bulk fills (issue 17, "Must hold"): exactly-once effect, and an index.

A shadow version of the chaos collection (tests/test_chaos.py: real worker processes as
``mmr_worker``, injected crashes at every point of a batch, external kill -9, concurrent inserts,
updates and deletes) is filled in bulk, i.e. without an HNSW index, while workers are killed at
random moments; then a worker is killed while it builds the index that ends the fill.  After a
clean drain, ``mmr check`` finds nothing missing, duplicated, stale or orphaned in any version,
and the shadow version has its index and answers through it after the switch.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from pg_mmretrieval import db
from pg_mmretrieval.worker import WorkerConfig
from pg_mmretrieval.worker.supervisor import _child
from tests.helpers import uses_hnsw, worker_url
from tests.test_chaos import FAULTS, LEASE_S, Mutator, Pool, Report, _assert_invariants, _drain
from tests.test_chaos import _setup as chaos_setup

Conn = psycopg.Connection[Any]


def _v2(conn: Conn) -> tuple[int, str, bool, bool]:
    """(space id, embedding table, bulk_fill, has a valid index) of version 2 of space tv."""
    row = conn.execute(
        "SELECT s.id, s.embedding_table::text, s.bulk_fill, EXISTS (SELECT 1 FROM pg_index i "
        "  JOIN pg_class x ON x.oid = i.indexrelid WHERE i.indrelid = s.embedding_table "
        "  AND x.relname = '_emb_' || s.id || '_hnsw' AND i.indisvalid) "
        "FROM mmr._space s WHERE s.name = 'tv' AND s.version = 2"
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), bool(row[2]), bool(row[3])


def _check_all_versions(url: str) -> None:
    """mmr.check over every version (the CLI check of tests/test_chaos covers them too) and an
    independent count on version 2."""
    with db.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT space, version, missing, stale, duplicate, orphan, queued, failed "
            "FROM mmr.check('chaos')"
        ).fetchall()
        assert {(r[0], r[1]) for r in rows} >= {("tv", 1), ("tv", 2), ("iv", 1)}, rows
        for r in rows:
            assert r[2:] == (0, 0, 0, 0, 0, 0), r
        _id, table, _f, _i = _v2(conn)
        bad = conn.execute(
            f"SELECT (SELECT count(*) FROM chaos c WHERE c.body IS NOT NULL AND NOT EXISTS "
            f"  (SELECT 1 FROM {table} e WHERE e.id = c.id AND "
            f"   e.content_hash = sha256(convert_to(c.body, 'UTF8')))), "
            f"(SELECT count(*) FROM {table} e WHERE NOT EXISTS "
            f"  (SELECT 1 FROM chaos c WHERE c.id = e.id AND c.body IS NOT NULL))"
        ).fetchone()
        assert bad == (0, 0), bad


def _kill_storm(url: str, tmp_path: Path, seconds: float, kills: int, seed: int) -> Report:
    report = Report()
    env = {
        "MMR_WORKER_FAULT": FAULTS,
        "MMR_WORKER_DELAY": "encode:0.01",
        "MMR_WORKER_FAULT_LOG": str(tmp_path / "faults.log"),
    }
    rng = random.Random(seed)
    mut = Mutator(url, report, seed)
    pool = Pool(url, report, env)
    pace = threading.Event()  # never set: paces the storm
    mut.start()
    try:
        for _ in range(3):
            pool.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end or report.kills + report.external_kills < kills:
            pool.reap()
            pool.kill_one(rng)
            pace.wait(rng.uniform(0.1, 0.6))
            assert time.monotonic() < end + 120, report
    finally:
        mut.halt.set()
        mut.join(10)
        pool.stop()
    return report


def test_kill9_during_a_bulk_fill(db_url: str, tmp_path: Path) -> None:
    chaos_setup(db_url, rows=2000)
    _drain(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT mmr.add_space('chaos', 'tv', 'mmr-test', 'body', 32, new_version => true)"
        )
        _id, _table, filling, indexed = _v2(conn)
        assert filling and not indexed
    report = _kill_storm(db_url, tmp_path, seconds=12, kills=10, seed=17)
    assert report.other_exits == [], report
    _drain(db_url)
    _check_all_versions(db_url)
    _assert_invariants(db_url)  # the CLI `mmr check` and the recomputed vectors of version 1

    # A worker killed while it builds the index that ends the fill: the build is one
    # transaction, so the version stays in its fill, unindexed, and the next worker ends it.
    with db.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT mmr.begin_bulk_fill('chaos', 'tv', 2)")
        _sid0, table, filling, indexed = _v2(conn)
        assert filling and not indexed
    with db.connect(db_url) as locker:  # holds a lock CREATE INDEX must wait for
        locker.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
        cfg = WorkerConfig(once=False, lease_s=LEASE_S, poll_s=0.2)
        pool = Pool(db_url, Report(), {})
        proc = pool.ctx.Process(target=_child, args=(worker_url(db_url), cfg, 40, {}), daemon=True)
        proc.start()
        deadline = time.monotonic() + 60
        backend = None
        with db.connect(db_url, autocommit=True) as watch:
            while backend is None:
                assert time.monotonic() < deadline, "the worker did not start the index build"
                row = watch.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE '%_worker_finish_fill%' "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()
                backend = row[0] if row else None
                threading.Event().wait(0.05)
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            # its server process dies with it (as in a crash of the worker's machine)
            watch.execute("SELECT pg_terminate_backend(%s)", (backend,))
        locker.rollback()
    with db.connect(db_url, autocommit=True) as conn:
        _sid, _t, filling, indexed = _v2(conn)
        assert filling and not indexed
    _drain(db_url)
    with db.connect(db_url, autocommit=True) as conn:
        _sid, _t, filling, indexed = _v2(conn)
        assert not filling and indexed
        conn.execute("SELECT mmr.switch_space('chaos', 'tv')")
        q = conn.execute(f"SELECT embedding FROM {table} ORDER BY id LIMIT 1").fetchone()
        assert q is not None
        plan = conn.execute("SELECT mmr.explain_search('chaos', 'tv', %s, 5)", (q[0],)).fetchone()
        assert plan is not None and uses_hnsw(plan[0])
    _check_all_versions(db_url)
    print(
        f"\nbulk chaos: {report.launches} worker launches, {report.kills} kill -9 "
        f"({report.external_kills} external), mutations {dict(report.mutations)}"
    )
