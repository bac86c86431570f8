"""Growing a Citus cluster while searches run: `mmr cluster add-node`, `mmr cluster rebalance`.

Its own local cluster (coordinator + 1 worker, in a data directory of its own, so the session
cluster of tests/test_citus.py keeps its shape), grown to 2 workers while a thread searches.
Skipped, with the reason, without Citus (tests/citus_helpers.py).  docs/operations.md, "Citus".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pg_mmretrieval import citus, config, install
from pg_mmretrieval.cli import cli
from tests.citus_helpers import free_base_port, one
from tests.helpers import worker_url

ROWS = 600
CHECK = "SELECT rows, embedded, missing, stale, duplicate, orphan, queued FROM mmr.check('grow')"
CATS = 60  # 10 rows per category: a filter on one is scored exactly


def _env(data_dir: Path, url: str | None = None) -> dict[str, str]:
    env = {**os.environ, config.ENV_DATA_DIR: str(data_dir)}
    if url is not None:
        env["MMR_DATABASE_URL"] = url
        env["MMR_WORKER_DATABASE_URL"] = worker_url(url)
    return env


def _mmr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[tuple[Path, str]]:
    """A coordinator and one worker in a data directory of their own, a database with the
    mmr schema; stopped (every node, the added one too) and removed at the end of the module.

    (Under the tests' data directory, which the server's system user may enter: not under
    pytest's tmp directory, whose parent pytest makes private again at each session start.)"""
    reason = citus.availability()
    if reason is not None:
        pytest.skip(reason)
    before = os.environ.get(config.ENV_DATA_DIR)
    data_dir = config.data_dir() / "citus-grow"
    os.environ[config.ENV_DATA_DIR] = str(data_dir)
    try:
        citus.stop_cluster()  # one a failed run left behind
        shutil.rmtree(data_dir, ignore_errors=True)
        st = citus.start_cluster(workers=1, port=free_base_port(start=6401, span=6))
        try:
            name = f"tg_{uuid.uuid4().hex[:10]}"
            coord = citus.create_database(st, name)
            install.upgrade(coord)
            yield data_dir, coord
        finally:
            citus.stop_cluster()
            shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        if before is None:
            os.environ.pop(config.ENV_DATA_DIR, None)
        else:
            os.environ[config.ENV_DATA_DIR] = before


def test_add_node_and_rebalance_help_and_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["cluster", "add-node", "--help"])
    assert r.exit_code == 0 and "citus_add_node" in r.output
    r = CliRunner().invoke(cli, ["cluster", "rebalance", "--help"])
    assert r.exit_code == 0 and "--mode" in r.output and "citus_rebalance_start" in r.output
    # no cluster in this data directory: exit 2 with a message, no traceback
    for args in (("cluster", "add-node"), ("cluster", "rebalance")):
        done = _mmr(_env(tmp_path), *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "no local cluster" in done.stderr and "Traceback" not in done.stderr
    r = CliRunner().invoke(cli, ["cluster", "rebalance", "--mode", "sideways"])
    assert r.exit_code == 2 and "sideways" in r.output


def _placements(conn: psycopg.Connection[Any], tables: list[str]) -> list[tuple[Any, ...]]:
    """(table, shard's hash range start, node port) of every placement of ``tables``."""
    return conn.execute(
        "SELECT s.logicalrelid::text, s.shardminvalue::bigint, n.nodeport "
        "FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) "
        "JOIN pg_dist_node n USING (groupid) WHERE s.logicalrelid::text = ANY (%s)",
        (tables,),
    ).fetchall()


def _np(v: Any) -> Any:
    import numpy as np

    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


class _Searcher(threading.Thread):
    """Runs mmr.search, a filtered mmr.search and mmr.composed_search in turn until told to
    stop, recording each one's end time, latency and error."""

    def __init__(self, url: str, vecs: list[Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.vecs = url, vecs
        self.stop = threading.Event()
        self.done: list[tuple[float, str, float]] = []
        self.errors: list[tuple[float, str, str]] = []

    def run(self) -> None:
        from pgvector.psycopg import register_vector

        stmts = {
            "search": "SELECT key FROM mmr.search('grow', 'vec', %(q)s, 10)",
            "filter": "SELECT key FROM mmr.search('grow', 'vec', %(q)s, 10, "
            "filter => jsonb_build_object('cat', %(c)s::int))",
            "composed": "SELECT key FROM mmr.composed_search('grow', 'vec', reference => %(q)s, "
            "modifier => %(m)s, method => 'weighted', k => 10)",
        }
        conn = psycopg.connect(self.url, autocommit=True)
        register_vector(conn)
        i = 0
        while not self.stop.is_set():
            kind = list(stmts)[i % 3]
            params = {"q": self.vecs[i % len(self.vecs)], "m": self.vecs[(i + 7) % len(self.vecs)]}
            params["c"] = i % CATS
            t0 = time.monotonic()
            try:
                rows = conn.execute(stmts[kind], params).fetchall()
                assert len(rows) == 10, (kind, len(rows))
                self.done.append((time.monotonic(), kind, time.monotonic() - t0))
            except Exception as e:  # recorded and asserted on by the test
                self.errors.append((time.monotonic(), kind, f"{type(e).__name__}: {e}"))
                if conn.closed or conn.broken:
                    conn = psycopg.connect(self.url, autocommit=True)
                    register_vector(conn)
            i += 1
        conn.close()


class _Writer(threading.Thread):
    """Inserts one row at a time (ids from 100001, category -1: out of the searches' way)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.ids: list[int] = []
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            i = 100001
            while not self.stop.is_set():
                try:
                    conn.execute("INSERT INTO grow VALUES (%s, -1, %s)", (i, f"written {i}"))
                    self.ids.append(i)
                except psycopg.Error as e:  # recorded and asserted on by the test
                    self.errors.append(f"{type(e).__name__}: {e}")
                i += 1
                time.sleep(0.05)


def test_add_node_and_rebalance_while_searching(small_cluster: tuple[Path, str]) -> None:
    import numpy as np
    from pgvector.psycopg import register_vector

    data_dir, url = small_cluster
    env = _env(data_dir, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET citus.shard_count = 4")  # 4 shard groups: 2 move to the new node
        conn.execute("CREATE TABLE grow (id bigint PRIMARY KEY, cat int, body text)")
        conn.execute("SELECT create_distributed_table('grow', 'id')")
        conn.execute(
            f"INSERT INTO grow SELECT g, g % {CATS}, 'doc ' || g FROM generate_series(1, {ROWS}) g"
        )
        conn.execute("SELECT mmr.create_collection('grow', 'grow', text_columns => '{body}')")
        emb = one(conn, "SELECT mmr.add_space('grow', 'vec', 'mmr-test', 'body', 32)::text")
        queue = one(conn, "SELECT queue_table::text FROM mmr._collection WHERE name = 'grow'")
    r = _mmr(env, "worker", "--collection", "grow", "--once")
    assert r.returncode == 0, r.stderr
    tables = ["grow", queue, emb]
    with psycopg.connect(url) as conn:
        register_vector(conn)
        before = {i: _np(v) for i, v in conn.execute(f"SELECT id, embedding FROM {emb}")}
        ports_before = {p[2] for p in _placements(conn, tables)}
    assert len(before) == ROWS and len(ports_before) == 1
    vecs = [before[i] for i in sorted(before)[::7]]

    # searches before: the reference latencies
    s0 = _Searcher(url, vecs)
    s0.start()
    time.sleep(4)
    s0.stop.set()
    s0.join(timeout=60)
    assert not s0.errors, s0.errors[:3]

    searcher = _Searcher(url, vecs)
    searcher.start()
    writer = _Writer(url)  # inserts rows meanwhile: change capture goes on during the moves
    writer.start()
    time.sleep(1)
    t0 = time.monotonic()
    added = _mmr(env, "cluster", "add-node")
    assert added.returncode == 0, added.stderr
    new_port = int(added.stdout.strip().rsplit(":", 1)[1].split("/")[0])
    t_added = time.monotonic()
    reb = _mmr(env, "cluster", "rebalance")
    t1 = time.monotonic()
    assert reb.returncode == 0, reb.stderr
    time.sleep(1)
    searcher.stop.set()
    writer.stop.set()
    searcher.join(timeout=60)
    writer.join(timeout=60)

    during = [d for d in searcher.done if t_added <= d[0] <= t1]  # while shards move
    lat0 = [d[2] for d in s0.done]
    lat1 = [d[2] for d in during]
    kinds = ("search", "filter", "composed")
    report = {
        "rebalance": reb.stdout.strip(),
        "add_node_s": round(t_added - t0, 1),
        "rebalance_s": round(t1 - t_added, 1),
        "searches_during": len(during),
        "by_kind_during": {k: sum(1 for d in during if d[1] == k) for k in kinds},
        "searches_during_add_node": sum(1 for d in searcher.done if t0 <= d[0] < t_added),
        "errors": len(searcher.errors),
        "rows_inserted_meanwhile": len(writer.ids),
        "insert_errors": len(writer.errors),
        "p50_ms_before": round(_pct(lat0, 0.5), 2),
        "p99_ms_before": round(_pct(lat0, 0.99), 2),
        "p50_ms_during": round(_pct(lat1, 0.5), 2),
        "p99_ms_during": round(_pct(lat1, 0.99), 2),
        "max_ms_during": round(max(lat1, default=0) * 1000, 1),
    }  # fmt: skip
    print("REBALANCE " + json.dumps(report))
    assert not searcher.errors, searcher.errors[:5]
    assert not writer.errors and writer.ids, writer.errors[:5]
    extra = len(writer.ids)
    assert all(any(d[1] == k for d in during) for k in kinds), report
    assert "moves" in reb.stdout and "finished" in reb.stdout, reb.stdout

    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        # the new node holds shards now, and every shard group stayed together
        place = _placements(conn, tables)
        assert new_port in {p[2] for p in place}, place
        groups: dict[int, set[tuple[str, int]]] = {}
        for table, lo, port in place:
            groups.setdefault(lo, set()).add((table, port))
        for lo, members in groups.items():
            assert {t for t, _ in members} == set(tables), (lo, members)
            assert len({p for _, p in members}) == 1, (lo, members)
        on_new = [lo for lo, members in groups.items() if {p for _, p in members} == {new_port}]
        assert len(on_new) == len(groups) // 2 == 2, groups  # a fair share: 2 of 4 groups
        # nothing lost: the same embeddings, every row found by an exact (filtered) search
        after = {i: _np(v) for i, v in conn.execute(f"SELECT id, embedding FROM {emb}")}
        assert after.keys() == before.keys()
        assert all(np.array_equal(after[i], before[i]) for i in before)
        found: set[int] = set()
        for c in range(CATS):
            q = before[c if c else CATS]
            rows = conn.execute(
                "SELECT (key #>> '{}')::bigint FROM mmr.search('grow', 'vec', %s, 10, "
                "filter => jsonb_build_object('cat', %s::int))",
                (q, c),
            ).fetchall()
            found |= {r[0] for r in rows}
        assert found == set(before), set(before) - found
        # (the rows inserted during the moves are all queued, none lost, none twice)
        got = conn.execute(CHECK).fetchone()
        assert got == (ROWS + extra, ROWS, extra, 0, 0, 0, extra), got
        assert one(conn, "SELECT count(*) FROM grow WHERE id = ANY (%s)", (writer.ids,)) == extra
        # changes after the move are captured on the moved shards, and a worker embeds them
        conn.execute(
            f"INSERT INTO grow SELECT g, g % {CATS}, 'new ' || g "
            f"FROM generate_series({ROWS + 1}, {ROWS + 80}) g"
        )
        conn.execute("UPDATE grow SET body = 'changed ' || id::text WHERE id <= 20")
        assert one(conn, "SELECT queued FROM mmr.check('grow')") == 100 + extra
    r = _mmr(env, "worker", "--collection", "grow", "--once")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(url) as conn:
        total = ROWS + extra + 80
        assert conn.execute(CHECK).fetchone() == (total, total, 0, 0, 0, 0, 0)
        wrong = one(
            conn,
            f"SELECT count(*) FROM grow s JOIN {emb} e ON e.id = s.id "
            "WHERE e.content_hash IS DISTINCT FROM mmr.content_hash(s.body)",
        )
        assert wrong == 0
        moved = one(
            conn,
            "SELECT count(*) FROM citus_shards WHERE table_name = 'grow'::regclass "
            "AND nodeport = %s",
            (new_port,),
        )
        assert moved >= 1
    # stopped and started again, the cluster keeps its added node (no --workers needed)
    assert _mmr(env, "cluster", "stop").returncode == 0
    started = _mmr(env, "cluster", "start")
    assert started.returncode == 0, started.stderr
    nodes = json.loads(_mmr(env, "cluster", "status", "--json").stdout)["nodes"]
    assert len(nodes) == 3 and all(n["running"] for n in nodes), nodes
    assert new_port in {n["port"] for n in nodes}
    # `mmr status` on the Citus database: the collection, its rows embedded, nothing queued
    st = _mmr(env, "status", "--json")
    assert st.returncode == 0, st.stderr
    rows = [r for r in json.loads(st.stdout) if r.get("collection") == "grow"]
    assert len(rows) == 1, st.stdout
    assert rows[0]["rows"] == total and rows[0]["embedded"] == total and rows[0]["queued"] == 0
