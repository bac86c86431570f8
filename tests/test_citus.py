"""pg_mmretrieval on a real Citus cluster (coordinator + 2 workers on 127.0.0.1).

Skipped, with the reason, when Citus is neither installed in the embedded server nor buildable
from CITUS_SRC (tests/citus_helpers.py).  docs/operations.md, "Citus".
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pg_mmretrieval import citus
from pg_mmretrieval.cli import cli
from tests.citus_helpers import citus_cluster, citus_url, one
from tests.helpers import worker_url

__all__ = ["citus_cluster", "citus_url"]  # fixtures, imported for pytest


def _mmr(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR_DATABASE_URL": url, "MMR_WORKER_DATABASE_URL": worker_url(url)}
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cluster_cli_without_citus_exits_2_and_says_how(tmp_path: Any) -> None:
    # Citus not installed in the embedded server and CITUS_SRC naming nothing: a clear error,
    # exit 2, no traceback (runs before the cluster fixture installs Citus on a fresh machine).
    if citus.availability() is None and citus.cluster_installed():
        pytest.skip("Citus is installed in this embedded server: the error path cannot be shown")
    env = {**os.environ, citus.ENV_CITUS_SRC: str(tmp_path / "no-such-citus.tar.gz")}
    env["MMR_DATA_DIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.cli", "cluster", "start", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "CITUS_SRC" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_cluster_help_and_bad_options() -> None:
    r = CliRunner().invoke(cli, ["cluster", "--help"])
    assert r.exit_code == 0 and "start" in r.output and "CITUS_SRC" in r.output
    r = CliRunner().invoke(cli, ["cluster", "start", "--help"])
    assert "--workers" in r.output and "--port" in r.output


def test_cluster_status(citus_cluster: citus.ClusterStatus) -> None:
    assert citus_cluster.running and len(citus_cluster.nodes) == 3
    with psycopg.connect(citus_cluster.coordinator_url) as conn:
        workers = conn.execute(
            "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0"
        ).fetchone()
        assert workers is not None and workers[0] == 2
    r = CliRunner().invoke(cli, ["cluster", "status", "--json"])
    assert r.exit_code == 0 and '"running": true' in r.output
    # starting a running cluster again is a no-op that says where it is
    again = citus.start_cluster(workers=2, port=citus_cluster.nodes[0].port)
    assert again.coordinator_url == citus_cluster.coordinator_url and again.running


@pytest.fixture()
def items(citus_url: str) -> str:
    """A distributed table with a collection and a space (the mmr-test encoder, 32-d)."""
    name = f"items_{os.urandom(3).hex()}"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT create_distributed_table(%s, 'id')", (name,))
        conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g FROM generate_series(1, 200) g")
        conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    return name


def test_distributed_collection_is_colocated(citus_url: str, items: str) -> None:
    with psycopg.connect(citus_url) as conn:
        queue, emb = conn.execute(
            "SELECT c.queue_table::text, s.embedding_table::text FROM mmr._collection c "
            "JOIN mmr._space s ON s.collection_id = c.id WHERE c.name = %s",
            (items,),
        ).fetchone() or (None, None)
        rows = conn.execute(
            "SELECT logicalrelid::text, colocationid, "
            "       column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition "
            "WHERE logicalrelid::text = ANY (%s)",
            ([items, queue, emb],),
        ).fetchall()
        assert len(rows) == 3
        assert len({r[1] for r in rows}) == 1  # one co-location group
        assert {r[2] for r in rows} == {"id"}
        # one HNSW index per shard of the embedding table
        shards = one(
            conn, "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = %s::regclass", (emb,)
        )
        indexes = one(
            conn,
            "SELECT sum(result::int) FROM run_command_on_shards(%s, "
            "$$SELECT count(*) FROM pg_index i JOIN pg_class k ON k.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = k.relam WHERE i.indrelid = '%%s'::regclass "
            "AND a.amname = 'hnsw'$$)",
            (emb,),
        )
        assert shards >= 2 and indexes == shards
        # the backfill queued every row
        assert one(conn, f"SELECT count(*) FROM {queue}") == 200


def test_worker_and_check_on_the_cluster(citus_url: str, items: str) -> None:
    r = _mmr(citus_url, "worker", "--collection", items, "--once")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(citus_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rows, embedded, missing, stale, duplicate, orphan, queued FROM mmr.check(%s)",
            (items,),
        ).fetchone()
        assert row == (200, 200, 0, 0, 0, 0, 0)
        # changes on the shards are captured: insert, update, delete, NULL content
        conn.execute(f"INSERT INTO {items} SELECT g, 'y' || g FROM generate_series(201, 260) g")
        conn.execute(f"UPDATE {items} SET body = 'changed ' || id::text WHERE id <= 30")
        conn.execute(f"DELETE FROM {items} WHERE id BETWEEN 31 AND 40")
        conn.execute(f"UPDATE {items} SET body = NULL WHERE id BETWEEN 41 AND 45")
        stale = conn.execute("SELECT stale, queued FROM mmr.check(%s)", (items,)).fetchone()
        assert stale is not None and stale[0] == 30 and stale[1] == 90
    r = _mmr(citus_url, "worker", "--collection", items, "--concurrency", "2", "--once")
    assert r.returncode == 0, r.stderr
    r = _mmr(citus_url, "check", items)
    assert r.returncode == 0, r.stdout + r.stderr
    with psycopg.connect(citus_url) as conn:
        row = conn.execute(
            "SELECT rows, embedded, missing, stale, duplicate, orphan, queued FROM mmr.check(%s)",
            (items,),
        ).fetchone()
        assert row == (245, 245, 0, 0, 0, 0, 0)
        # the stored hash is the hash of the current content, on every row
        wrong = one(
            conn,
            f"SELECT count(*) FROM {items} s JOIN mmr._emb_{_space_id(conn, items)} e "
            "ON e.id = s.id WHERE e.content_hash IS DISTINCT FROM mmr.content_hash(s.body)",
        )
        assert wrong == 0


def _space_id(conn: psycopg.Connection[Any], collection: str) -> int:
    return int(
        one(
            conn,
            "SELECT s.id FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
            "WHERE c.name = %s",
            (collection,),
        )
    )


def test_unsupported_sources_fail_clearly(citus_url: str) -> None:
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE rls_src (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT create_distributed_table('rls_src', 'id')")
        conn.execute("ALTER TABLE rls_src ENABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            conn.execute("SELECT mmr.create_collection('rls', 'rls_src', text_columns => '{body}')")
        assert "row-level security" in str(e.value) and e.value.diag.message_hint
        assert one(conn, "SELECT count(*) FROM mmr._collection WHERE name = 'rls'") == 0


def _reference_collection(url: str, name: str, reference: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        if reference:
            conn.execute("SELECT create_reference_table(%s)", (name,))
        conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g FROM generate_series(1, 100) g")
        conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    r = _mmr(url, "worker", "--collection", name, "--once")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {name} SELECT g, 'y' || g FROM generate_series(101, 120) g")
        conn.execute(f"UPDATE {name} SET body = 'changed ' || id::text WHERE id <= 10")
        conn.execute(f"DELETE FROM {name} WHERE id BETWEEN 11 AND 15")
        conn.execute(f"UPDATE {name} SET body = NULL WHERE id = 16")


def _check(conn: psycopg.Connection[Any], name: str) -> Any:
    return conn.execute(
        "SELECT rows, embedded, missing, stale, duplicate, orphan, queued FROM mmr.check(%s)",
        (name,),
    ).fetchone()


def test_reference_table_collection(citus_url: str, db_url: str) -> None:
    """A collection on a Citus reference table: the queue a Citus local table on the
    coordinator (written by the coordinator's copy only), the embedding tables reference tables
    with an HNSW index on every copy; searches equal to one node's on the same data."""
    import numpy as np
    from pgvector.psycopg import register_vector

    name = "ref_src"
    _reference_collection(citus_url, name, True)
    with psycopg.connect(citus_url, autocommit=True) as conn:
        queue, emb = conn.execute(
            "SELECT c.queue_table::text, s.embedding_table::text FROM mmr._collection c "
            "JOIN mmr._space s ON s.collection_id = c.id WHERE c.name = %s",
            (name,),
        ).fetchone() or (None, None)
        kinds = dict(
            conn.execute(
                "SELECT logicalrelid::text, mmr._citus_kind(logicalrelid) FROM pg_dist_partition "
                "WHERE logicalrelid::text = ANY (%s)",
                ([queue, emb],),
            ).fetchall()
        )
        assert kinds == {queue: "local", emb: "reference"}, kinds
        nodes = one(conn, "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary'")
        # an HNSW index on every copy of the embedding table (one per node)
        hnsw = conn.execute(
            "SELECT nodeport, result FROM run_command_on_placements(%s, "
            "$$SELECT count(*) FROM pg_index i JOIN pg_class k ON k.oid = i.indexrelid "
            "JOIN pg_am a ON a.oid = k.relam WHERE i.indrelid = '%%s'::regclass "
            "AND a.amname = 'hnsw'$$)",
            (emb,),
        ).fetchall()
        assert len(hnsw) == nodes == 3 and all(r[1] == "1" for r in hnsw), hnsw
        # each change queued once, not once per node's copy: 20 inserts + 10 updates
        assert one(conn, f"SELECT count(*) FROM {queue}") == 30
        assert _check(conn, name) == (114, 94, 20, 10, 0, 0, 30)
        # deletes and NULL content reach every copy of the embedding table
        copies = conn.execute(
            "SELECT result FROM run_command_on_placements(%s, 'SELECT count(*) FROM %%s')", (emb,)
        ).fetchall()
        assert [r[0] for r in copies] == ["94"] * 3, copies
    r = _mmr(citus_url, "worker", "--collection", name, "--concurrency", "2", "--once")
    assert r.returncode == 0, r.stderr
    r = _mmr(citus_url, "check", name)
    assert r.returncode == 0, r.stdout + r.stderr
    _reference_collection(db_url, name, False)
    r = _mmr(db_url, "worker", "--collection", name, "--once")
    assert r.returncode == 0, r.stderr
    got: dict[str, list[Any]] = {}
    for label, url in (("citus", citus_url), ("one", db_url)):
        with psycopg.connect(url) as conn:
            register_vector(conn)
            assert _check(conn, name) == (114, 114, 0, 0, 0, 0, 0), label
            table = one(
                conn, "SELECT embedding_table::text FROM mmr.spaces WHERE collection = %s", (name,)
            )
            vecs = {
                i: np.array(v.to_list() if hasattr(v, "to_list") else v, dtype=float)
                for i, v in conn.execute(f"SELECT id, embedding FROM {table}").fetchall()
            }
            ids = sorted(vecs)
            matrix = np.array([vecs[i] for i in ids])
            got[label] = []
            for qid in (1, 20, 50, 101, 120):
                rows = conn.execute(
                    "SELECT (key #>> '{}')::bigint, round(score::numeric, 5) "
                    "FROM mmr.search(%s, 'vec', %s::vector, 10)",
                    (name, "[" + ",".join(str(x) for x in vecs[qid]) + "]"),
                ).fetchall()
                exact = np.argsort(-(matrix @ vecs[qid]), kind="stable")[:10]
                assert {r[0] for r in rows} == {ids[i] for i in exact}, (label, qid)
                got[label].append(sorted(rows, key=lambda r: (-r[1], r[0])))
    assert got["citus"] == got["one"]
    with psycopg.connect(citus_url, autocommit=True) as conn:
        shard = one(
            conn,
            "SELECT shard_name(%s::regclass, shardid) FROM pg_dist_shard "
            "WHERE logicalrelid = %s::regclass",
            (emb, emb),
        )
        conn.execute(f"INSERT INTO {name} VALUES (500, 'queued, then truncated')")
        conn.execute(f"TRUNCATE {name}")
        assert one(conn, f"SELECT count(*) FROM {queue}") == 0
        copies = conn.execute(
            "SELECT result FROM run_command_on_placements(%s, 'SELECT count(*) FROM %%s')", (emb,)
        ).fetchall()
        assert [r[0] for r in copies] == ["0"] * 3, copies
        conn.execute("SELECT mmr.drop_collection(%s)", (name,))
        assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass "
                   "AND NOT tgisinternal", (name,)) == 0  # fmt: skip
        assert one(conn, "SELECT to_regclass(%s)", (queue,)) is None
        assert one(conn, "SELECT to_regclass(%s)", (emb,)) is None
        # the copies on the workers are gone too
        left = conn.execute(
            "SELECT result FROM run_command_on_workers("
            "format('SELECT to_regclass(%%L)', %s::text))",
            (shard,),
        ).fetchall()
        assert [r[0] for r in left] == ["", ""], left


def test_local_tables_on_the_coordinator(citus_url: str) -> None:
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE cl_src (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT citus_add_local_table_to_metadata('cl_src')")
        conn.execute("CREATE TABLE plain_src (id bigint PRIMARY KEY, body text)")
        for name in ("cl_src", "plain_src"):
            conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g FROM generate_series(1, 20) g")
            conn.execute(
                "SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name)
            )
            conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
            conn.execute(f"INSERT INTO {name} SELECT g, 'y' || g FROM generate_series(21, 30) g")
            conn.execute(f"UPDATE {name} SET body = 'z' WHERE id = 1")
    for name in ("cl_src", "plain_src"):
        r = _mmr(citus_url, "worker", "--collection", name, "--once")
        assert r.returncode == 0, r.stderr
        with psycopg.connect(citus_url) as conn:
            row = conn.execute(
                "SELECT rows, embedded, missing, stale, duplicate, queued FROM mmr.check(%s)",
                (name,),
            ).fetchone()
            assert row == (30, 30, 0, 0, 0, 0), name


def _load_external(url: str, name: str, vecs: Any, distributed: bool) -> None:
    from pgvector.psycopg import register_vector

    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        if distributed:
            conn.execute("SELECT create_distributed_table(%s, 'id')", (name,))
        conn.execute(
            f"INSERT INTO {name} SELECT g, 'row' FROM generate_series(0, %s) g", (len(vecs) - 1,)
        )
        conn.execute("SELECT mmr.create_collection(%s, %s, create_view => false)", (name, name))
        emb = one(
            conn,
            "SELECT mmr.add_space(%s, 'vec', 'external', NULL, %s)::text",
            (name, vecs.shape[1]),
        )
        with conn.cursor().copy(
            f"COPY {emb} (id, embedding, model_id) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int8", "vector", "text"])
            for i, v in enumerate(vecs):
                cp.write_row((i, v, "external"))
        conn.execute(f"ANALYZE {emb}")


def test_search_across_shards_matches_one_node(citus_url: str, db_url: str) -> None:
    import numpy as np
    from pgvector.psycopg import register_vector

    from tests.helpers import unit_vectors

    vecs = unit_vectors(3000, 16, seed=3)
    _load_external(citus_url, "srch", vecs, True)
    _load_external(db_url, "srch", vecs, False)
    qs = unit_vectors(40, 16, seed=4)
    exact = np.argsort(-(qs @ vecs.T), axis=1)[:, :10]
    recall = {}
    for label, url in (("citus", citus_url), ("one", db_url)):
        hits = 0
        with psycopg.connect(url) as conn:
            register_vector(conn)
            for q, ex in zip(qs, exact, strict=True):
                rows = conn.execute(
                    "SELECT (key #>> '{}')::bigint, score FROM mmr.search('srch', 'vec', %s, 10)",
                    (q,),
                ).fetchall()
                assert len(rows) == 10
                scores = [r[1] for r in rows]
                assert scores == sorted(scores, reverse=True)  # merged in order on the coordinator
                hits += len({r[0] for r in rows} & set(ex.tolist()))
        recall[label] = hits / (10 * len(qs))
    assert recall["citus"] >= recall["one"] - 1e-9 and recall["citus"] >= 0.95, recall
    # the plan: a Citus scan over every shard, each an HNSW index scan, merged by a sort + limit
    with psycopg.connect(citus_url) as conn:
        # shards of ~100 rows would be scanned sequentially: ask every shard for its index
        conn.execute("SET citus.propagate_set_commands = 'local'")
        conn.execute("SET LOCAL enable_seqscan = off")
        emb = one(conn, "SELECT embedding_table::text FROM mmr.spaces WHERE collection = 'srch'")
        lit = "[" + ",".join(f"{x:.6f}" for x in qs[0]) + "]"
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN (COSTS OFF) SELECT id FROM {emb} ORDER BY embedding <=> '{lit}' LIMIT 10"
            ).fetchall()
        )
        shards = one(
            conn, "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = %s::regclass", (emb,)
        )
        assert "Custom Scan (Citus Adaptive)" in plan and f"Task Count: {shards}" in plan, plan
        assert "Index Scan using" in plan and "_hnsw" in plan, plan


def test_chaos_workers_killed_while_rows_change(citus_url: str) -> None:
    """Two workers on the cluster, one killed -9 twice, while rows are inserted, updated and
    deleted: afterwards 0 missing, 0 stale, 0 duplicate (a CI-sized chaos run)."""
    import random
    import signal
    import time

    name = "chaos_src"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT create_distributed_table(%s, 'id')", (name,))
        conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g::text FROM generate_series(1, 400) g")
        conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    env = {
        **os.environ,
        "MMR_DATABASE_URL": citus_url,
        "MMR_WORKER_DATABASE_URL": worker_url(citus_url),
    }
    cmd = [sys.executable, "-m", "pg_mmretrieval.cli", "worker", "--collection", name]
    cmd += ["--lease", "3", "--batch-size", "16", "--poll", "0.5"]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    workers = [spawn(), spawn()]
    rng = random.Random(15)
    kills = 0
    try:
        with psycopg.connect(citus_url, autocommit=True) as conn:
            for rnd in range(12):
                ids = rng.sample(range(1, 400), 30)
                conn.execute(
                    f"UPDATE {name} SET body = 'r{rnd} ' || id::text WHERE id = ANY (%s)", (ids,)
                )
                conn.execute(
                    f"INSERT INTO {name} SELECT g, 'n' || g::text "
                    "FROM generate_series(%s::int, %s::int) g",
                    (1000 + rnd * 10, 1000 + rnd * 10 + 9),
                )
                conn.execute(f"DELETE FROM {name} WHERE id = %s", (rng.randrange(1, 400),))
                if rnd in (3, 7):
                    victim = workers.pop(0)
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.wait(timeout=30)
                    kills += 1
                    workers.append(spawn())
                time.sleep(0.7)
    finally:
        for p in workers:
            p.send_signal(signal.SIGTERM)
        for p in workers:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    assert kills == 2
    time.sleep(3.5)  # the killed workers' leases expire
    r = _mmr(citus_url, "worker", "--collection", name, "--once")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(citus_url) as conn:
        row = conn.execute(
            "SELECT rows, embedded, missing, stale, duplicate, orphan, queued FROM mmr.check(%s)",
            (name,),
        ).fetchone()
        assert row is not None
        rows = one(conn, f"SELECT count(*) FROM {name}")
        assert row == (rows, rows, 0, 0, 0, 0, 0), row
        wrong = one(
            conn,
            f"SELECT count(*) FROM {name} s JOIN mmr._emb_{_space_id(conn, name)} e "
            "ON e.id = s.id WHERE e.content_hash IS DISTINCT FROM mmr.content_hash(s.body)",
        )
        assert wrong == 0


def test_filter_composed_hybrid_rerank_match_one_node(citus_url: str, db_url: str) -> None:
    """The other search functions on a distributed collection return what they return on one
    node for the same data (1000 rows: both searches are exact at this size), composed search by
    stored key too (WeiMoCIR with a caption space: one statement that reads the reference in
    both spaces, runs both legs and scores by key)."""
    from pgvector.psycopg import register_vector

    from tests.helpers import unit_vectors

    vecs = unit_vectors(1000, 16, seed=5)
    caps = unit_vectors(1000, 16, seed=6)
    for url, dist in ((citus_url, True), (db_url, False)):
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("CREATE TABLE legs (id bigint PRIMARY KEY, cat int, body text)")
            if dist:
                conn.execute("SELECT create_distributed_table('legs', 'id')")
            conn.execute(
                "INSERT INTO legs SELECT g, g % 5, 'word' || (g % 7)::text || "
                "CASE WHEN g % 3 = 0 THEN ' red bag' ELSE ' blue box' END "
                "FROM generate_series(0, 999) g"
            )
            conn.execute(
                "SELECT mmr.create_collection('legs', 'legs', text_columns => '{body}', "
                "create_view => false)"
            )
            # vec, and cap (a caption space: WeiMoCIR by key reads the reference in both)
            for space, vs in (("vec", vecs), ("cap", caps)):
                emb = one(
                    conn, f"SELECT mmr.add_space('legs', '{space}', 'external', NULL, 16)::text"
                )
                with conn.cursor().copy(
                    f"COPY {emb} (id, embedding, model_id) FROM STDIN WITH (FORMAT BINARY)"
                ) as cp:
                    cp.set_types(["int8", "vector", "text"])
                    for i, v in enumerate(vs):
                        cp.write_row((i, v, "external"))
            conn.execute("SELECT mmr.create_text_index('legs')")
    queries = {
        "filter": "SELECT key, round(score::numeric, 5) FROM mmr.search('legs', 'vec', %(q)s, 10, "
        "filter => '{\"cat\": 2}')",
        "composed": "SELECT key, round(score::numeric, 5) FROM mmr.composed_search('legs', 'vec', "
        "reference => %(q)s, modifier => %(m)s, method => 'weighted', k => 10)",
        "composed by key": "SELECT key, round(score::numeric, 5) FROM mmr.composed_search("
        "'legs', 'vec', reference_key => %(r)s::jsonb, modifier => %(m)s, method => 'weimocir', "
        'k => 10, params => \'{"caption_space": "cap", "beta": 0.3}\')',
        "hybrid": "SELECT key, round(score::numeric, 5) FROM mmr.hybrid_search('legs', 'red bag', "
        "spaces => '{vec}', vectors => ARRAY[%(q)s], k => 10)",
        "rerank": "SELECT key, round(score::numeric, 5) FROM mmr.search('legs', 'vec', %(q)s, 10, "
        "rerank => 'mmr')",
    }
    got: dict[str, dict[str, list[Any]]] = {"citus": {}, "one": {}}
    for label, url in (("citus", citus_url), ("one", db_url)):
        with psycopg.connect(url) as conn:
            register_vector(conn)
            for name, stmt in queries.items():
                for i in range(5):
                    params = {"q": vecs[10 * i], "m": vecs[10 * i + 1], "r": str(10 * i)}
                    got[label][f"{name}{i}"] = conn.execute(stmt, params).fetchall()

    def ties_ordered(rows: list[Any]) -> list[Any]:  # equal scores: any order is right
        return sorted(rows, key=lambda r: (-r[1], str(r[0])))

    for key, rows in got["one"].items():
        assert len(rows) == 10, key
        assert ties_ordered(got["citus"][key]) == ties_ordered(rows), key


def test_lifecycle_repair_truncate_drop(citus_url: str) -> None:
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE life (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT create_distributed_table('life', 'id')")
        conn.execute("INSERT INTO life SELECT g, 'x' || g::text FROM generate_series(1, 50) g")
        conn.execute("SELECT mmr.create_collection('life', 'life', text_columns => '{body}')")
        conn.execute("SELECT mmr.add_space('life', 'vec', 'mmr-test', 'body', 32)")
        queue = one(conn, "SELECT queue_table::text FROM mmr._collection WHERE name = 'life'")
        conn.execute(f"DELETE FROM {queue} WHERE id <= 10")  # lost entries: repair re-queues
        assert one(conn, "SELECT sum(queued) FROM mmr.repair('life')") == 10
        conn.execute("SELECT mmr.add_space('life', 'vec2', 'mmr-test', 'body', 32)")
        conn.execute("SELECT mmr.drop_space('life', 'vec2')")
        conn.execute("TRUNCATE life")
        assert one(conn, f"SELECT count(*) FROM {queue}") == 0
        conn.execute("SELECT mmr.drop_collection('life')")
        assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'life'::regclass "
                   "AND NOT tgisinternal") == 0  # fmt: skip
        assert one(conn, "SELECT to_regclass(%s)", (queue,)) is None


@pytest.mark.parametrize("kind", ["distributed", "reference"])
def test_sync_on_shards_with_format_characters_in_names(citus_url: str, kind: str) -> None:
    """On Citus the sync function runs each statement with this node's shards filled in
    (EXECUTE format(template, VARIADIC v_shards)): columns named like placeholders stay names,
    and each space's statements reach its own embedding table's shards."""
    name = f"pct_{kind[:3]}"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE {name} ("k%1$s" bigint, "k%%" text, "c%2$s" text, '
            'PRIMARY KEY ("k%1$s", "k%%"))'
        )
        if kind == "distributed":
            conn.execute(f"SELECT create_distributed_table('{name}', 'k%1$s')")
        else:
            conn.execute(f"SELECT create_reference_table('{name}')")
        conn.execute(f"INSERT INTO {name} SELECT g, 'a', 'x' || g FROM generate_series(1, 20) g")
        conn.execute(
            "SELECT mmr.create_collection(%s, %s, text_columns => '{c%%2$s}')", (name, name)
        )
        conn.execute("SELECT mmr.add_space(%s, 'ext', 'external', NULL, 4)", (name,))
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'c%%2$s', 32)", (name,))
        queue, ext = conn.execute(
            "SELECT c.queue_table::text, s.embedding_table::text FROM mmr._collection c "
            "JOIN mmr._space s ON s.collection_id = c.id WHERE c.name = %s AND s.name = 'ext'",
            (name,),
        ).fetchone() or (None, None)
        conn.execute(f"DELETE FROM {queue}")
        conn.execute(f"INSERT INTO {name} SELECT g, 'a', 'y' || g FROM generate_series(21, 30) g")
        conn.execute(f"""UPDATE {name} SET "c%2$s" = 'z' WHERE "k%1$s" <= 5""")
        assert one(conn, f"SELECT count(*) FROM {queue}") == 15  # each change queued once
        conn.execute(
            f"""INSERT INTO {ext} ("k%1$s", "k%%", embedding, model_id) """
            f"""SELECT "k%1$s", "k%%", '[1,0,0,0]', 'external' FROM {name}"""
        )
        conn.execute(f"""UPDATE {name} SET "k%%" = 'b' WHERE "k%1$s" <= 3""")  # key change
        conn.execute(f"""DELETE FROM {name} WHERE "k%1$s" > 25""")
        assert one(conn, f"SELECT count(*) FROM {ext}") == 22
        assert one(conn, f'SELECT count(*) FROM {queue} WHERE "k%1$s" > 25') == 0
        conn.execute(f"TRUNCATE {name}")
        assert (
            one(conn, f"SELECT count(*) FROM {ext}"),
            one(conn, f"SELECT count(*) FROM {queue}"),
        ) == (0, 0)


def _external_source(conn: psycopg.Connection[Any], name: str, kind: str, composite: bool) -> str:
    """A source table of `kind` (distributed, reference) with rows 1..2000 (for a composite
    key: (tenant, id) = (id % 7, id), distributed on tenant), a collection and a 4-d external
    space; returns the embedding table."""
    if composite:
        conn.execute(
            f"CREATE TABLE {name} (tenant int, id bigint, body text, PRIMARY KEY (tenant, id))"
        )
    else:
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
    if kind == "distributed":
        col = "tenant" if composite else "id"
        conn.execute("SELECT create_distributed_table(%s, %s)", (name, col))
    else:
        conn.execute("SELECT create_reference_table(%s)", (name,))
    cols = "g % 7, g, 'x' || g" if composite else "g, 'x' || g"
    conn.execute(f"INSERT INTO {name} SELECT {cols} FROM generate_series(1, 2000) g")
    conn.execute("SELECT mmr.create_collection(%s, %s, create_view => false)", (name, name))
    return str(one(conn, "SELECT mmr.add_space(%s, 'ext', 'external', NULL, 4)::text", (name,)))


@pytest.mark.parametrize(
    ("kind", "composite"),
    [("distributed", False), ("distributed", True), ("reference", False)],
    ids=["distributed", "distributed-composite", "reference"],
)
def test_put_embeddings(citus_url: str, kind: str, composite: bool) -> None:
    """mmr.put_embeddings (and put_embedding, and the Python client's) on a Citus source: the
    key check finds the rows on the shards; one call of 1000 rows; a missing key is refused
    with 23503 naming the first missing one, and nothing is written."""
    from pg_mmretrieval.client import Client

    name = f"put_{kind[:3]}{'_comp' if composite else ''}"

    def key(i: int) -> str:
        return f'{{"id": {i}, "tenant": {i % 7}}}' if composite else str(i)  # as jsonb prints

    from tests.helpers import unit_vectors

    spread = unit_vectors(2001, 4, seed=11)  # not near-duplicates: a sound HNSW graph per shard

    def vec(i: int) -> str:
        return "[" + ",".join(f"{x:.6f}" for x in spread[i]) + "]"

    with psycopg.connect(citus_url, autocommit=True) as conn:
        emb = _external_source(conn, name, kind, composite)
        ids = list(range(1, 1001))
        n = one(
            conn,
            "SELECT mmr.put_embeddings(%s, 'ext', %s::jsonb[], %s::vector[])",
            (name, [key(i) for i in ids], [vec(i) for i in ids]),
        )
        assert n == 1000
        conn.execute("SELECT mmr.put_embedding(%s, 'ext', %s::jsonb, '[0,0,1,0]')", (name, key(5)))
        assert one(conn, f"SELECT count(*) FROM {emb}") == 1000
        assert one(conn, f"SELECT embedding::text FROM {emb} WHERE id = 5") == "[0,0,1,0]"
        # updating rows that have embeddings, and new ones, in one call
        n = one(
            conn,
            "SELECT mmr.put_embeddings(%s, 'ext', %s::jsonb[], %s::vector[])",
            (name, [key(999), key(1500)], [vec(1999), vec(2000)]),
        )
        assert n == 2 and one(conn, f"SELECT count(*) FROM {emb}") == 1001
        # the first missing key is named (the keys 3001 and 3000 are not in the table)
        for bad_keys in ([key(1600), key(3001), key(1700), key(3000)], [key(3001)]):
            with pytest.raises(psycopg.errors.ForeignKeyViolation) as e:
                conn.execute(
                    "SELECT mmr.put_embeddings(%s, 'ext', %s::jsonb[], %s::vector[])",
                    (name, bad_keys, ["[1,1,1,1]"] * len(bad_keys)),
                )
            assert e.value.diag.message_primary == f"no row of {name} has key {key(3001)}"
            assert e.value.diag.message_hint and "Insert the row first" in e.value.diag.message_hint
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("SELECT mmr.put_embedding(%s, 'ext', %s::jsonb, '[1,1,1,1]')",
                         (name, key(3000)))  # fmt: skip
        with pytest.raises(psycopg.errors.UniqueViolation):  # a key twice, even one missing
            conn.execute(
                "SELECT mmr.put_embeddings(%s, 'ext', %s::jsonb[], %s::vector[])",
                (name, [key(1), key(3000), key(1)], ["[1,1,1,1]"] * 3),
            )
        assert one(conn, f"SELECT count(*) FROM {emb} WHERE id IN (1600, 1700)") == 0
        hits = conn.execute(
            "SELECT key FROM mmr.search(%s, 'ext', '[0,0,1,0]', 1)", (name,)
        ).fetchall()
        assert [h[0] for h in hits] == [{"tenant": 5, "id": 5} if composite else 5]
    with Client(citus_url) as client:
        coll = client.collection(name)
        keys: list[Any] = [{"tenant": i % 7, "id": i} if composite else i for i in (1800, 1801)]
        assert coll.put_embeddings("ext", keys, [[1.0, 2.0, 3.0, 4.0]] * 2) == 2
    with psycopg.connect(citus_url) as conn:
        assert one(conn, f"SELECT count(*) FROM {emb}") == 1003


def test_worker_on_a_composite_key_distributed_source(citus_url: str) -> None:
    """The worker embeds a distributed source whose key is (tenant, id), distributed on
    tenant; mmr check is clean afterwards."""
    name = "comp_src"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (tenant int, id bigint, body text, PRIMARY KEY (tenant, id))"
        )
        conn.execute("SELECT create_distributed_table(%s, 'tenant')", (name,))
        conn.execute(f"INSERT INTO {name} SELECT g % 5, g, 'x' || g FROM generate_series(1, 60) g")
        conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
        conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
        conn.execute(f"UPDATE {name} SET body = 'changed' WHERE id <= 5")
    r = _mmr(citus_url, "worker", "--collection", name, "--once")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(citus_url) as conn:
        assert _check(conn, name) == (60, 60, 0, 0, 0, 0, 0)
        emb = f"mmr._emb_{_space_id(conn, name)}"
        q = one(conn, f"SELECT embedding::text FROM {emb} WHERE id = 7")
        cur = conn.execute("SELECT key FROM mmr.search(%s, 'vec', %s::vector, 1)", (name, q))
        hits = cur.fetchall()
        assert [h[0] for h in hits] == [{"tenant": 2, "id": 7}]
