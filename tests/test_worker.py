"""The ingestion worker against a real PostgreSQL: invariants, races, failures, operations."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from pg_mmretrieval import db
from pg_mmretrieval.encoder_catalog import publish
from pg_mmretrieval.encoders import _REGISTRY, Encoder, Item, get_encoder, register_encoder
from pg_mmretrieval.errors import (
    InputError,
    LimitError,
    Permanent,
    PermanentLoadError,
    Retryable,
    RetryableLoadError,
)
from pg_mmretrieval.worker import (
    PermanentFailure,
    RetryableFailure,
    RetryPolicy,
    Worker,
    WorkerConfig,
    claiming,
    classify,
    writing,
)
from pg_mmretrieval.worker.catalog import load_catalog
from tests.helpers import worker_url

_counter = itertools.count()


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class ScriptedEncoder(Encoder):
    """The mmr-test vectors, plus hooks: poison inputs and a callback before encoding."""

    dimension = 32
    modalities: ClassVar[frozenset[str]] = frozenset({"text", "image"})

    def __init__(self, name: str, model_id: str = "scripted/v1") -> None:
        self.name = name
        self.model_id = model_id
        self.hook: Callable[[Sequence[Item]], None] | None = None
        self.calls = 0
        self.items_seen = 0

    def _embed(self, batch: Sequence[Item]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.items_seen += len(batch)
        if self.hook is not None:
            self.hook(batch)
        for item in batch:
            if item == "POISON":
                raise InputError("the scripted encoder rejects POISON")
            if item == "FLAKY":
                raise OSError("the scripted encoder's device is busy")
        return np.stack([_hash_vec(it) for it in batch])


def _hash_vec(item: Item) -> npt.NDArray[np.float32]:
    data = item.encode() if isinstance(item, str) else bytes(item)
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def encoder(conn: psycopg.Connection[Any]) -> Iterator[ScriptedEncoder]:
    enc = ScriptedEncoder(f"scripted-{next(_counter)}")
    register_encoder(enc)
    publish(conn, "test", [enc])  # mmr.add_space checks the encoder catalog
    try:
        yield enc
    finally:
        _REGISTRY.pop(enc.name, None)


@pytest.fixture()
def table(conn: psycopg.Connection[Any], encoder: ScriptedEncoder) -> str:
    """A fresh table registered as a collection of the same name; space 'vec' on body."""
    name = f"items_{next(_counter)}_{os.getpid()}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text, img bytea)")
    conn.execute(
        "SELECT mmr.create_collection(%s, %s, image_column => 'img', text_columns => '{body}')",
        (name, name),
    )
    conn.execute("SELECT mmr.add_space(%s, 'vec', %s, 'body', 32)", (name, encoder.name))
    return name


def cfg(name: str, **kw: Any) -> WorkerConfig:
    base: dict[str, Any] = {
        "collections": (name,),
        "once": True,
        "lease_s": 5.0,
        "batch_size": 16,
        "retry": RetryPolicy(max_attempts=3, base_s=0.05),
    }
    base.update(kw)
    return WorkerConfig(**base)


def check(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM mmr.check(%s) WHERE space = 'vec'", (name,))
    cols = [d.name for d in cur.description or []]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(cols, row, strict=True))


def emb_table(conn: psycopg.Connection[Any], name: str, space: str = "vec", v: int = 1) -> str:
    row = conn.execute(
        "SELECT embedding_table::text FROM mmr.spaces WHERE collection = %s AND space = %s "
        "AND version = %s",
        (name, space, v),
    ).fetchone()
    assert row is not None
    return str(row[0])


def stored(conn: psycopg.Connection[Any], name: str, key: int) -> npt.NDArray[np.float32]:
    row = conn.execute(
        f"SELECT embedding FROM {emb_table(conn, name)} WHERE id = %s", (key,)
    ).fetchone()
    assert row is not None
    return np.asarray(row[0].to_numpy(), dtype=np.float32)


def test_embeds_rows_once_with_hash_and_model(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'text ' || g FROM generate_series(1, 100) g")
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert stats.written == 100 and stats.dead == 0
    rep = check(conn, table)
    assert (rep["missing"], rep["stale"], rep["duplicate"], rep["orphan"]) == (0, 0, 0, 0)
    assert rep["embedded"] == 100 and rep["queued"] == 0
    emb = emb_table(conn, table)
    assert conn.execute(f"SELECT DISTINCT model_id FROM {emb}").fetchall() == [("scripted/v1",)]
    # the content hash is sha256 of the UTF-8 text, in SQL and in Python alike
    row = conn.execute(f"SELECT content_hash FROM {emb} WHERE id = 7").fetchone()
    assert row == (hashlib.sha256(b"text 7").digest(),)
    np.testing.assert_allclose(stored(conn, table, 7), _hash_vec("text 7"), atol=1e-6)
    # the space is pinned to the model that filled it
    assert conn.execute(
        "SELECT model_id FROM mmr.spaces WHERE collection = %s", (table,)
    ).fetchone() == ("scripted/v1",)


def test_unchanged_content_is_not_reembedded(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'same ' || g FROM generate_series(1, 10) g")
    Worker(worker_url(db_url), cfg(table)).run()
    seen = encoder.items_seen
    # same value written again (no queue entry), and entries queued by hand / by repair
    conn.execute(f"UPDATE {table} SET body = body")
    conn.execute(
        f"INSERT INTO mmr._queue_{_cid(conn, table)} (mmr_space_id, id) "
        f"SELECT {_sid(conn, table)}, g FROM generate_series(1, 10) g"
    )
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert stats.unchanged == 10 and stats.written == 0
    assert encoder.items_seen == seen
    assert check(conn, table)["queued"] == 0


def _cid(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT id FROM mmr._collection WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _sid(conn: psycopg.Connection[Any], name: str, v: int = 1) -> int:
    row = conn.execute(
        "SELECT s.id FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
        "WHERE c.name = %s AND s.version = %s",
        (name, v),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_update_racing_a_slow_worker_never_leaves_old_content(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} VALUES (1, 'old one'), (2, 'old two')")
    Worker(worker_url(db_url), cfg(table)).run()
    conn.execute(f"UPDATE {table} SET body = 'new one' WHERE id = 1")
    fired = []

    def update_while_encoding(batch: Sequence[Item]) -> None:
        if "new one" in batch and not fired:
            fired.append(1)
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute(f"UPDATE {table} SET body = 'newest one' WHERE id = 1")

    encoder.hook = update_while_encoding
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert fired and stats.released >= 1
    np.testing.assert_allclose(stored(conn, table, 1), _hash_vec("newest one"), atol=1e-6)
    rep = check(conn, table)
    assert (rep["missing"], rep["stale"], rep["queued"]) == (0, 0, 0)


def test_row_locked_by_an_application_is_released_not_waited_for(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    holder = psycopg.connect(db_url)
    try:
        holder.execute(f"UPDATE {table} SET body = 'a2' WHERE id = 1")  # open transaction
        w = Worker(worker_url(db_url), cfg(table, once=False, poll_s=0.2))
        t = threading.Thread(target=w.run)
        t.start()
        try:
            wait_for(lambda: check(conn, table)["embedded"] == 1, what="row 2 embedded")
            # row 1 was locked: released, not waited for
            wait_for(lambda: w.stats.released >= 1, what="row 1 released")
            holder.commit()
            wait_for(lambda: check(conn, table)["queued"] == 0, what="row 1 embedded")
        finally:
            w.stop()
            t.join(10)
    finally:
        holder.close()
    np.testing.assert_allclose(stored(conn, table, 1), _hash_vec("a2"), atol=1e-6)
    assert check(conn, table)["stale"] == 0


def test_poison_item_fails_alone_and_neighbours_are_written(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(
        f"INSERT INTO {table} SELECT g, CASE WHEN g = 5 THEN 'POISON' ELSE 'ok ' || g END "
        "FROM generate_series(1, 12) g"
    )
    stats = Worker(worker_url(db_url), cfg(table, batch_size=16)).run()
    assert stats.batches == 1 and stats.written == 11 and stats.dead == 1
    row = conn.execute(
        "SELECT key, error_class, attempts, jsonb_array_length(history) FROM mmr._failed "
        "WHERE collection_id = %s",
        (_cid(conn, table),),
    ).fetchone()
    assert row == (5, "permanent", 1, 1)
    rep = check(conn, table)
    assert rep["missing"] == 1 and rep["failed"] == 1 and rep["unqueued"] == 0


def test_retryable_failure_backs_off_then_dead_letters_with_history(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} VALUES (1, 'FLAKY'), (2, 'fine')")
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert stats.written == 1 and stats.retried == 2 and stats.dead == 1
    key, cls, attempts, history = conn.execute(
        "SELECT key, error_class, attempts, history FROM mmr._failed WHERE collection_id = %s",
        (_cid(conn, table),),
    ).fetchone() or (None, None, None, None)
    assert (key, cls, attempts) == (1, "retryable", 3)
    assert [h["class"] for h in history] == ["retryable"] * 3
    assert "device is busy" in history[0]["error"]
    # the backoff grew: the attempts are spread out
    times = [h["at"] for h in history]
    assert times == sorted(times)

    # mmr failed retry: back into the queue; fixed content then succeeds
    conn.execute(f"UPDATE {table} SET body = 'FLAKY' WHERE id = 1")  # unchanged: no entry
    encoder.hook = None
    n = conn.execute("SELECT mmr.retry_failed(%s)", (table,)).fetchone()
    assert n == (1,)
    conn.execute(f"UPDATE {table} SET body = 'fixed' WHERE id = 1")
    Worker(worker_url(db_url), cfg(table)).run()
    rep = check(conn, table)
    assert (rep["missing"], rep["failed"], rep["queued"]) == (0, 0, 0)


def test_dead_workers_lease_expires_and_item_goes_alone(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'x' || g FROM generate_series(1, 5) g")
    with db.connect(db_url, autocommit=True) as dead:
        coll = load_catalog(dead, [table])[0]
        items = claiming.claim(dead, coll, "dead-worker", 3, 1.0, [_sid(conn, table)])
    assert len(items) == 3
    t0 = time.monotonic()
    stats = Worker(worker_url(db_url), cfg(table, lease_s=5.0)).run()
    assert time.monotonic() - t0 < 10
    assert stats.written == 5
    # the 3 items a dead worker held were processed one per unit (isolation)
    assert stats.batches >= 2
    assert check(conn, table)["queued"] == 0


def test_item_that_keeps_killing_workers_is_dead_lettered(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} VALUES (1, 'crashy'), (2, 'fine')")
    conn.execute(f"UPDATE mmr._queue_{_cid(conn, table)} SET mmr_claims = 5 WHERE id = 1")
    stats = Worker(worker_url(db_url), cfg(table, retry=RetryPolicy(max_claims=5))).run()
    assert stats.written == 1 and stats.dead == 1
    assert conn.execute(
        "SELECT error_class FROM mmr._failed WHERE collection_id = %s", (_cid(conn, table),)
    ).fetchall() == [("crash",)]


def test_deleted_and_nulled_rows_leave_no_orphans(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'x' || g FROM generate_series(1, 10) g")
    Worker(worker_url(db_url), cfg(table)).run()
    conn.execute(f"DELETE FROM {table} WHERE id <= 3")
    conn.execute(f"UPDATE {table} SET body = NULL WHERE id = 4")
    conn.execute(f"INSERT INTO {table} VALUES (3, 'back again')")
    Worker(worker_url(db_url), cfg(table)).run()
    rep = check(conn, table)
    assert (rep["rows"], rep["embedded"], rep["orphan"], rep["missing"]) == (7, 7, 0, 0)


def test_check_repair_and_exit_status(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'x' || g FROM generate_series(1, 6) g")
    Worker(worker_url(db_url), cfg(table)).run()
    emb = emb_table(conn, table)
    # damage: a lost embedding, a stale one, an orphan (triggers bypassed)
    conn.execute("SET session_replication_role = replica")
    conn.execute(f"DELETE FROM {emb} WHERE id = 1")
    conn.execute(f"UPDATE {table} SET body = 'changed' WHERE id = 2")
    conn.execute(f"DELETE FROM {table} WHERE id = 3")
    conn.execute("SET session_replication_role = origin")
    env = {**os.environ, "MMR_DATABASE_URL": db_url}
    run = [sys.executable, "-m", "pg_mmretrieval.cli", "check", table, "--json"]
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    body = next(s for s in json.loads(out.stdout)["spaces"] if s["space"] == "vec")
    assert (body["missing"], body["stale"], body["orphan"], body["unqueued"]) == (1, 1, 1, 2)
    out = subprocess.run([*run, "--repair"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    Worker(worker_url(db_url), cfg(table)).run()
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    assert json.loads(out.stdout)["healthy"] is True


def test_wakes_on_notify_without_polling(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    w = Worker(worker_url(db_url), cfg(table, once=False, poll_s=60.0))
    t = threading.Thread(target=w.run)
    t.start()
    try:
        wait_for(lambda: w._listen is not None, what="worker listening")
        time.sleep(0.3)  # let it settle into its wait; the poll interval is 60 s
        conn.execute(f"INSERT INTO {table} VALUES (1, 'wake up')")
        wait_for(lambda: check(conn, table)["embedded"] == 1, timeout=5, what="notify wake-up")
        alive = conn.execute(
            "SELECT count(*) FROM mmr._worker WHERE id = %s AND stopped_at IS NULL", (w.id,)
        ).fetchone()
        assert alive == (1,)
        app = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'mmr-worker %%'"
        ).fetchone()
        assert app is not None and app[0] >= 2
    finally:
        w.stop()
        t.join(10)
    assert not t.is_alive()
    assert conn.execute(
        "SELECT stopped_at IS NOT NULL FROM mmr._worker WHERE id = %s", (w.id,)
    ).fetchone() == (True,)


def test_model_switch_in_the_shadow(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'x' || g FROM generate_series(1, 20) g")
    Worker(worker_url(db_url), cfg(table)).run()
    enc2 = ScriptedEncoder(f"scripted-b-{next(_counter)}", model_id="scripted/v2")
    register_encoder(enc2)
    publish(conn, "test", [enc2])
    try:
        conn.execute(
            "SELECT mmr.add_space(%s, 'vec', %s, 'body', 32, new_version => true)",
            (table, enc2.name),
        )
        # v1 stays active while v2 fills; writes during the fill reach both versions
        conn.execute(f"UPDATE {table} SET body = 'during fill' WHERE id = 1")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT mmr.switch_space(%s, 'vec')", (table,))
        Worker(worker_url(db_url), cfg(table)).run()
        env = {**os.environ, "MMR_DATABASE_URL": db_url}
        cli = [sys.executable, "-m", "pg_mmretrieval.cli"]
        r = subprocess.run([*cli, "space", "switch", table, "vec"], env=env, timeout=60)
        assert r.returncode == 0
        active = conn.execute(
            "SELECT version, model_id FROM mmr.spaces WHERE collection = %s AND active", (table,)
        ).fetchall()
        assert active == [(2, "scripted/v2")]
        for v, model in ((1, "scripted/v1"), (2, "scripted/v2")):
            models = conn.execute(
                f"SELECT DISTINCT model_id FROM {emb_table(conn, table, v=v)}"
            ).fetchall()
            assert models == [(model,)]  # never two models in one table
        r = subprocess.run(
            [*cli, "space", "drop", table, "vec", "--version", "1", "--yes"], env=env, timeout=60
        )
        assert r.returncode == 0
        assert check(conn, table)["missing"] == 0
    finally:
        _REGISTRY.pop(enc2.name, None)


def test_space_pinned_to_another_model_is_not_served(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(
        "UPDATE mmr._space SET model_id = 'other/model' WHERE id = %s", (_sid(conn, table),)
    )
    conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
    w = Worker(worker_url(db_url), cfg(table, once=False, poll_s=0.1))
    t = threading.Thread(target=w.run)
    t.start()
    time.sleep(1.0)  # give it the chance to do the wrong thing
    w.stop()
    t.join(10)
    assert w.stats.written == 0 and check(conn, table)["embedded"] == 0


def test_sigterm_finishes_the_batch(conn: psycopg.Connection[Any], db_url: str) -> None:
    name = f"sig_{next(_counter)}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
    conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g FROM generate_series(1, 8) g")
    env = {
        **os.environ,
        "MMR_DATABASE_URL": db_url,
        "MMR_WORKER_DATABASE_URL": worker_url(db_url),
        "MMR_WORKER_DELAY": "encode:2.0",
    }
    p = subprocess.Popen(
        [sys.executable, "-m", "pg_mmretrieval.cli", "worker", "--collection", name],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        qt = f"mmr._queue_{_cid(conn, name)}"
        wait_for(
            lambda: (
                conn.execute(
                    f"SELECT count(*) FROM {qt} WHERE mmr_claimed_by IS NOT NULL"
                ).fetchone()
                == (8,)
            ),
            what="batch claimed",
        )
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "8 embedded" in err
    assert conn.execute(f"SELECT count(*) FROM {qt}").fetchone() == (0,)


def test_cli_backfill_status_failed_and_concurrency(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    name = f"cli_{next(_counter)}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO {name} SELECT g, 'x' || g FROM generate_series(1, 300) g")
    conn.execute(f"INSERT INTO {name} VALUES (301, '')")
    conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
    conn.execute(
        "SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32, backfill => false)", (name,)
    )
    env = {**os.environ, "MMR_DATABASE_URL": db_url, "MMR_WORKER_DATABASE_URL": worker_url(db_url)}
    cli = [sys.executable, "-m", "pg_mmretrieval.cli"]

    def mmr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)

    r = mmr("backfill", name, "vec", "--progress")
    assert r.returncode == 1  # the empty text was dead-lettered
    assert "301 rows queued" in r.stderr and "300 embedded" in r.stderr
    r = mmr("failed", "list", "--collection", name, "--json")
    failed = json.loads(r.stdout)
    assert [(f["key"], f["error_class"]) for f in failed] == [(301, "permanent")]
    r = mmr("status", "--json", "--collection", name)
    st = json.loads(r.stdout)[0]
    assert (st["rows"], st["embedded"], st["queued"], st["failed"]) == (301, 300, 0, 1)
    assert st["throughput_1m"] >= 300 and st["encoder"] == "mmr-test"
    assert mmr("failed", "retry", name).stdout.startswith("1 items")
    assert mmr("failed", "purge", name).stdout.startswith("0 dead")
    conn.execute(f"UPDATE {name} SET body = 'filled' WHERE id = 301")
    conn.execute(f"INSERT INTO {name} SELECT g, 'y' || g FROM generate_series(302, 600) g")
    r = mmr("worker", "--collection", name, "--concurrency", "2", "--once")
    assert r.returncode == 0, r.stderr
    r = mmr("check", name)
    assert r.returncode == 0, r.stdout
    assert get_encoder("mmr-test").dimension == 32


def test_space_dropped_under_a_running_worker(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    conn.execute(f"INSERT INTO {table} SELECT g, 'x' || g FROM generate_series(1, 40) g")
    dropped = []

    def drop_while_encoding(batch: Sequence[Item]) -> None:
        if not dropped:
            dropped.append(1)
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute("SELECT mmr.drop_space(%s, 'vec')", (table,))
                other.execute(
                    "SELECT mmr.add_space(%s, 'vec2', %s, 'body', 32)", (table, encoder.name)
                )

    encoder.hook = drop_while_encoding
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert dropped
    rows = conn.execute("SELECT space, embedded, missing, queued FROM mmr.check(%s)", (table,))
    assert rows.fetchall() == [("vec2", 40, 0, 0)]
    assert stats.dead == 0


def test_composite_text_and_uuid_keys(conn: psycopg.Connection[Any], db_url: str) -> None:
    name = f"comp_{next(_counter)}"
    conn.execute(
        f"CREATE TABLE {name} (tenant text, n int, u uuid DEFAULT gen_random_uuid(), "
        "body text, PRIMARY KEY (tenant, n, u))"
    )
    conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
    conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))
    conn.execute(
        f"INSERT INTO {name} (tenant, n, body) SELECT t, g, CASE WHEN g = 3 THEN '' "
        "ELSE t || g END FROM unnest(ARRAY['a b', 'Ünï''\"']) t, generate_series(1, 20) g"
    )
    stats = Worker(worker_url(db_url), cfg(name)).run()
    assert stats.written == 38 and stats.dead == 2
    keys = conn.execute(
        "SELECT key ->> 'tenant', (key ->> 'n')::int FROM mmr._failed f "
        "JOIN mmr._collection c ON c.id = f.collection_id WHERE c.name = %s ORDER BY 1",
        (name,),
    ).fetchall()
    assert keys == [("a b", 3), ("Ünï'\"", 3)]
    conn.execute(f"UPDATE {name} SET body = 'fixed' WHERE n = 3")
    conn.execute(f"UPDATE {name} SET body = body || '!' WHERE n < 3")
    Worker(worker_url(db_url), cfg(name)).run()
    rep = check(conn, name)
    assert (rep["rows"], rep["embedded"], rep["missing"], rep["stale"], rep["failed"]) == (
        40,
        40,
        0,
        0,
        0,
    )


def test_halfvec_space_and_binary_vectors_without_registered_adapters(
    conn: psycopg.Connection[Any], db_url: str, encoder: ScriptedEncoder
) -> None:
    """Vectors go to the server in pgvector's binary format, also into halfvec spaces and
    on a connection where pgvector's adapters were not registered by ``db.connect``."""
    name = f"half_{next(_counter)}"
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    conn.execute("SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, name))
    conn.execute(
        "SELECT mmr.add_space(%s, 'vec', %s, 'body', 32, storage => 'halfvec')",
        (name, encoder.name),
    )
    conn.execute(f"INSERT INTO {name} SELECT g, 'half ' || g FROM generate_series(1, 40) g")
    (catalog,) = load_catalog(conn, [name])
    items = claiming.claim(conn, catalog, "test-worker", 100, 30.0, [catalog.spaces[0].id])
    for it in items:
        it.vector = _hash_vec(str(it.content))
    bare = db.connect(db_url, autocommit=True, register_types=False)
    try:
        res = writing.write(bare, catalog, items, "test-worker", {catalog.spaces[0].id: "m/1"})
    finally:
        bare.close()
    assert res.written == 40 and res.released == 0
    rep = check(conn, name)
    assert (rep["embedded"], rep["queued"], rep["missing"], rep["stale"]) == (40, 0, 0, 0)
    row = conn.execute(
        f"SELECT embedding::text, pg_typeof(embedding)::text FROM {emb_table(conn, name)} "
        "WHERE id = 5"
    ).fetchone()
    assert row is not None and row[1] == "halfvec"
    got = np.array(json.loads(row[0]), dtype=np.float32)
    np.testing.assert_allclose(got, _hash_vec("half 5"), atol=2e-3)


def test_classify_by_marker_bases_never_by_name() -> None:
    from PIL import UnidentifiedImageError

    class QuotaExceeded(Retryable):
        """A plugin's own error: retry later."""

    class Unreadable(Permanent):
        """A plugin's own error: never retry."""

    class RetryableLoadErrorLookalike(Exception):
        pass

    RetryableLoadErrorLookalike.__name__ = "RetryableLoadError"  # a name decides nothing
    assert classify(QuotaExceeded("later")) == "retryable"
    assert classify(Unreadable("never")) == "permanent"
    assert classify(RetryableLoadError("timed out")) == "retryable"
    assert classify(PermanentLoadError("empty")) == "permanent"
    assert classify(LimitError("over the limit")) == "permanent"
    assert classify(UnidentifiedImageError("not an image")) == "permanent"  # an OSError
    assert classify(InputError("bad")) == "permanent"
    assert classify(OSError("busy")) == "retryable"
    assert classify(RetryableLoadErrorLookalike("x")) == "retryable"  # unknown: retryable
    lookalike_p = type("PermanentLoadError", (Exception,), {})
    assert classify(lookalike_p("x")) == "retryable"  # unknown, whatever its name
    # a timeout is no input error; a bad cell is
    assert not isinstance(RetryableLoadError("x"), InputError)
    assert isinstance(PermanentLoadError("x"), InputError)
    # the worker's former names are the same classes
    assert PermanentFailure is Permanent and RetryableFailure is Retryable


def test_retryable_errors_are_retried_and_permanent_ones_dead_lettered(
    conn: psycopg.Connection[Any], table: str, db_url: str, encoder: ScriptedEncoder
) -> None:
    class QuotaExceeded(Retryable):
        pass

    raises: dict[str, Exception] = {
        "QUOTA": QuotaExceeded("the service's quota is exhausted"),
        "TIMEOUT": RetryableLoadError("the URL timed out"),
        "BROKEN": PermanentLoadError("not a readable image"),
    }

    def hook(batch: Sequence[Item]) -> None:
        for it in batch:
            if isinstance(it, str) and it in raises:
                raise raises[it]

    encoder.hook = hook
    conn.execute(
        f"INSERT INTO {table} VALUES (1, 'QUOTA'), (2, 'TIMEOUT'), (3, 'BROKEN'), (4, 'ok')"
    )
    stats = Worker(worker_url(db_url), cfg(table)).run()
    assert stats.written == 1 and stats.dead == 3 and stats.retried == 4
    failed = {
        key: (cls, attempts)
        for key, cls, attempts in conn.execute(
            "SELECT key, error_class, attempts FROM mmr._failed WHERE collection_id = %s",
            (_cid(conn, table),),
        )
    }
    assert failed == {1: ("retryable", 3), 2: ("retryable", 3), 3: ("permanent", 1)}
