"""Issue 12, item 1: no user code runs with the worker's (or the installer's) rights.

An application role ``app`` (not a superuser) owns a schema and a table keyed by its own domain
whose CHECK calls a "spy": a plpgsql function that records who ran it and, when that role is a
superuser, makes ``app`` a superuser.  An administrator registers the table, ``app`` inserts,
the real worker runs: the spy must only ever run as ``app`` itself, and the rows get embedded.
"""

from __future__ import annotations

import os
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
from psycopg import sql

from pg_mmretrieval import db
from pg_mmretrieval.errors import ConfigError
from pg_mmretrieval.worker import Worker, WorkerConfig
from tests.helpers import worker_url

REPO = Path(__file__).resolve().parent.parent
_SPY = """
CREATE FUNCTION {s}.spy(v bigint) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO {s}.spy_log (who, session, super)
    SELECT current_user, session_user, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('ALTER ROLE %I SUPERUSER', {app});
    END IF;
    RETURN v > 0;
END
$f$
"""


@pytest.fixture()
def app(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A non-superuser application role owning schema ``<app>s`` with a spy and its log."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
    conn.execute(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(name + "s"), ident)
    )
    conn.execute(sql.SQL("SET ROLE {}").format(ident))
    s = sql.Identifier(name + "s")
    conn.execute(
        sql.SQL("CREATE TABLE {}.spy_log (who text, session text, super boolean)").format(s)
    )
    # whoever runs the spy may record it (the log is the test's witness, not a defence)
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(s))
    conn.execute(sql.SQL("GRANT INSERT ON {}.spy_log TO PUBLIC").format(s))
    conn.execute(sql.SQL(_SPY).format(s=s, app=sql.Literal(name)))
    conn.execute("RESET ROLE")
    yield name
    conn.execute("RESET ROLE")
    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))
    conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def _as(conn: psycopg.Connection[Any], role: str, stmt: str) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        conn.execute(stmt)
    finally:
        conn.execute("RESET ROLE")


def _register(conn: psycopg.Connection[Any], app: str, name: str) -> None:
    """The administrator (a superuser here) registers app's table."""
    conn.execute(
        "SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, f"{app}s.items")
    )
    conn.execute("SELECT mmr.add_space(%s, 'vec', 'mmr-test', 'body', 32)", (name,))


def _drain(db_url: str, name: str) -> None:
    stats = Worker(worker_url(db_url), WorkerConfig(collections=(name,), once=True)).run()
    assert stats.dead == 0


def _spy_runs(conn: psycopg.Connection[Any], app: str) -> list[tuple[str, str, bool]]:
    return [
        (str(r[0]), str(r[1]), bool(r[2]))
        for r in conn.execute(f"SELECT who, session, super FROM {app}s.spy_log").fetchall()
    ]


def _assert_safe(conn: psycopg.Connection[Any], app: str) -> None:
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (app,)).fetchone()
    assert row == (False,), f"{app} became a superuser"
    runs = _spy_runs(conn, app)
    assert all(not sup for _, _, sup in runs), runs
    assert {who for who, _, _ in runs} <= {app}, f"user code ran as another role: {runs}"


def _key_type(conn: psycopg.Connection[Any], rel: str, col: str = "id") -> str:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname = %s",
        (rel, col),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _tables(conn: psycopg.Connection[Any], name: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT c.queue_table::text, s.embedding_table::text FROM mmr._collection c "
        "JOIN mmr._space s ON s.collection_id = c.id WHERE c.name = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _embedded(conn: psycopg.Connection[Any], name: str) -> int:
    _, emb = _tables(conn, name)
    row = conn.execute(f"SELECT count(*) FROM {emb}").fetchone()
    return int(row[0]) if row else 0


def test_item1_domain_check_never_runs_as_worker_or_installer(
    conn: psycopg.Connection[Any], db_url: str, app: str
) -> None:
    """The exact report: a domain-keyed table, registered by an admin, filled by app."""
    s = f"{app}s"
    _as(conn, app, f"CREATE DOMAIN {s}.myid AS bigint CHECK ({s}.spy(VALUE))")
    _as(conn, app, f"CREATE TABLE {s}.items (id {s}.myid PRIMARY KEY, body text)")
    _register(conn, app, f"dom_{app}")
    _as(conn, app, f"INSERT INTO {s}.items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
    _drain(db_url, f"dom_{app}")
    _assert_safe(conn, app)
    assert _embedded(conn, f"dom_{app}") == 5
    # the queue and the embedding table are keyed by the base type, never the app's domain
    q, emb = _tables(conn, f"dom_{app}")
    assert _key_type(conn, q) == _key_type(conn, emb) == "bigint"


def test_item1_alter_domain_add_check_later(
    conn: psycopg.Connection[Any], db_url: str, app: str
) -> None:
    s = f"{app}s"
    _as(conn, app, f"CREATE DOMAIN {s}.myid AS bigint")
    _as(conn, app, f"CREATE TABLE {s}.items (id {s}.myid PRIMARY KEY, body text)")
    _register(conn, app, f"late_{app}")
    _as(conn, app, f"ALTER DOMAIN {s}.myid ADD CHECK ({s}.spy(VALUE))")
    _as(conn, app, f"INSERT INTO {s}.items SELECT g, 'item ' || g FROM generate_series(1, 4) g")
    _as(conn, app, f"UPDATE {s}.items SET body = body || '!' WHERE id = 2")
    _drain(db_url, f"late_{app}")
    _assert_safe(conn, app)
    assert _embedded(conn, f"late_{app}") == 4
    # the administrator's own functions cast keys to the base type too
    assert conn.execute(f"SELECT missing, stale FROM mmr.check('late_{app}')").fetchone() == (0, 0)
    conn.execute("SELECT * FROM mmr.repair(%s)", (f"late_{app}",))
    _assert_safe(conn, app)


def test_item1_trigger_path_insert_runs_no_user_code_as_owner(
    conn: psycopg.Connection[Any], app: str
) -> None:
    """app's own INSERT fires the SECURITY DEFINER sync trigger (owned by the installer)."""
    s = f"{app}s"
    _as(conn, app, f"CREATE DOMAIN {s}.myid AS bigint CHECK ({s}.spy(VALUE))")
    _as(conn, app, f"CREATE TABLE {s}.items (id {s}.myid PRIMARY KEY, body text)")
    _register(conn, app, f"trg_{app}")
    _as(conn, app, f"INSERT INTO {s}.items VALUES (1, 'one'), (2, 'two')")
    _as(conn, app, f"UPDATE {s}.items SET body = 'uno' WHERE id = 1")
    _as(conn, app, f"DELETE FROM {s}.items WHERE id = 2")
    _assert_safe(conn, app)
    q, _ = _tables(conn, f"trg_{app}")
    # queued 1 and 2; the update is deduplicated; the delete took 2 out
    assert conn.execute(f"SELECT count(*) FROM {q}").fetchone() == (1,)


def test_item1_rls_policy_function_not_run_as_worker(
    conn: psycopg.Connection[Any], db_url: str, app: str
) -> None:
    s = f"{app}s"
    _as(conn, app, f"CREATE TABLE {s}.items (id bigint PRIMARY KEY, body text)")
    _as(conn, app, f"ALTER TABLE {s}.items ENABLE ROW LEVEL SECURITY")
    _as(conn, app, f"ALTER TABLE {s}.items FORCE ROW LEVEL SECURITY")
    _as(conn, app, f"CREATE POLICY p ON {s}.items USING ({s}.spy(id)) WITH CHECK (true)")
    _register(conn, app, f"rls_{app}")
    _as(conn, app, f"INSERT INTO {s}.items SELECT g, 'item ' || g FROM generate_series(1, 3) g")
    _drain(db_url, f"rls_{app}")
    _assert_safe(conn, app)
    assert _embedded(conn, f"rls_{app}") == 3
    assert all(who != db.WORKER_ROLE for who, _, _ in _spy_runs(conn, app))


def test_item1_user_owned_key_type_refused(conn: psycopg.Connection[Any], app: str) -> None:
    """A cast from text to a type app owns could be app's function: such keys are refused."""
    s = f"{app}s"
    _as(conn, app, f"CREATE TYPE {s}.color AS ENUM ('red', 'green')")
    _as(conn, app, f"CREATE TABLE {s}.items (id {s}.color PRIMARY KEY, body text)")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        conn.execute(
            "SELECT mmr.create_collection('enum_key', %s, text_columns => '{body}')",
            (f"{s}.items",),
        )
    assert e.value.diag.message_hint and "built-in" in e.value.diag.message_hint


def test_item1_worker_role_is_least_privilege(
    conn: psycopg.Connection[Any], db_url: str, app: str
) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, rolbypassrls, "
        "rolcanlogin FROM pg_roles WHERE rolname = %s",
        (db.WORKER_ROLE,),
    ).fetchone()
    assert row == (False, False, False, False, False, True, True)
    s = f"{app}s"
    _as(conn, app, f"CREATE TABLE {s}.items (id bigint PRIMARY KEY, body text, secret text)")
    _register(conn, app, f"lp_{app}")
    w = db.WORKER_ROLE
    for stmt, ok in [
        (f"SELECT id, body FROM {s}.items", True),
        (f"SELECT secret FROM {s}.items", False),
        (f"INSERT INTO {s}.items (id) VALUES (99)", False),
        (f"DELETE FROM {s}.items", False),
        ("SELECT mmr.drop_collection('x')", False),
        (f"SELECT mmr.grant_worker('{w}')", False),
    ]:
        with psycopg.connect(worker_url(db_url), autocommit=True) as wc:
            if ok:
                wc.execute(stmt)
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    wc.execute(stmt)
    # dropping the collection takes the worker's grants on the source table back
    conn.execute("SELECT mmr.drop_collection(%s)", (f"lp_{app}",))
    with (
        psycopg.connect(worker_url(db_url), autocommit=True) as wc,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        wc.execute(f"SELECT id, body FROM {s}.items")


def test_item1_worker_refuses_a_superuser_session(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    conn.execute("CREATE TABLE su_items (id int PRIMARY KEY, body text)")
    conn.execute("SELECT mmr.create_collection('su', 'su_items', text_columns => '{body}')")
    conn.execute("SELECT mmr.add_space('su', 'vec', 'mmr-test', 'body', 32)")
    conn.execute("INSERT INTO su_items VALUES (1, 'one')")
    cfg = WorkerConfig(collections=("su",), once=True, connect_timeout_s=5)
    with pytest.raises(ConfigError, match="refuses to run as superuser"):
        Worker(db_url, cfg).run()
    assert _embedded(conn, "su") == 0
    # the CLI: one line saying what to do, exit status 2 (a setting to fix), nothing done
    env = {**os.environ, "MMR_DATABASE_URL": db_url, "MMR_WORKER_DATABASE_URL": db_url}
    env.pop("MMR_WORKER_ALLOW_SUPERUSER", None)
    cli = [sys.executable, "-m", "pg_mmretrieval.cli", "worker", "--collection", "su", "--once"]
    r = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the worker refuses"), r.stderr
    assert "mmr_worker" in err[0] and "--allow-superuser" in err[0]
    # the explicit override
    r = subprocess.run(
        [*cli, "--allow-superuser"], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert _embedded(conn, "su") == 1


def test_item1_embedded_default_connects_as_mmr_worker(
    conn: psycopg.Connection[Any], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MMR_DATABASE_URL", "MMR_WORKER_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    if "MMR_DATA_DIR" not in os.environ:  # pragma: no cover - the tests' own server is embedded
        pytest.skip("the tests run against MMR_DATABASE_URL")
    default = db.resolve_worker_url()
    with psycopg.connect(default, autocommit=True) as wc:
        assert wc.execute("SELECT session_user::text").fetchone() == (db.WORKER_ROLE,)
    # a running worker's sessions log in as mmr_worker (a real login, not SET ROLE)
    conn.execute("CREATE TABLE dflt_items (id int PRIMARY KEY, body text)")
    conn.execute("SELECT mmr.create_collection('dflt', 'dflt_items', text_columns => '{body}')")
    conn.execute("SELECT mmr.add_space('dflt', 'vec', 'mmr-test', 'body', 32)")
    w = Worker(worker_url(db_url), WorkerConfig(collections=("dflt",), poll_s=0.2))
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 60
        users: set[str] = set()
        while time.monotonic() < deadline and not users:
            users = {
                str(r[0])
                for r in conn.execute(
                    "SELECT usename FROM pg_stat_activity WHERE application_name = %s",
                    (w.application_name,),
                )
            }
            time.sleep(0.05)
        assert users == {db.WORKER_ROLE}
    finally:
        w.stop()
        t.join(30)


def test_item1_grant_worker_for_a_role_of_your_own(
    conn: psycopg.Connection[Any], db_url: str, app: str
) -> None:
    mine = f"w_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS").format(sql.Identifier(mine)))
    try:
        s = f"{app}s"
        _as(conn, app, f"CREATE DOMAIN {s}.myid AS bigint CHECK ({s}.spy(VALUE))")
        _as(conn, app, f"CREATE TABLE {s}.items (id {s}.myid PRIMARY KEY, body text)")
        conn.execute("SELECT mmr.grant_worker(%s)", (mine,))
        _register(conn, app, f"own_{app}")  # granted to `mine` as it is created
        _as(conn, app, f"INSERT INTO {s}.items SELECT g, 'x' || g FROM generate_series(1, 3) g")
        url = db.with_user(db_url, mine)
        stats = Worker(url, WorkerConfig(collections=(f"own_{app}",), once=True)).run()
        assert stats.written == 3
        _assert_safe(conn, app)
        # PUBLIC may not make itself a worker; a superuser or a role without BYPASSRLS is refused
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as(conn, app, f"SELECT mmr.grant_worker('{app}')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="superuser"):
            conn.execute("SELECT mmr.grant_worker('postgres')")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="BYPASSRLS"):
            conn.execute("SELECT mmr.grant_worker(%s)", (app,))
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(mine)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(mine)))


def test_item1_upgrade_converts_domain_keyed_tables(
    conn: psycopg.Connection[Any], app: str
) -> None:
    """An install from before revision 0004 has domain-typed queue/embedding keys: converted."""
    s = f"{app}s"
    name = f"old_{app}"
    _as(conn, app, f"CREATE DOMAIN {s}.myid AS bigint CHECK ({s}.spy(VALUE))")
    _as(conn, app, f"CREATE TABLE {s}.items (id {s}.myid PRIMARY KEY, body text)")
    _register(conn, app, name)
    q, emb = _tables(conn, name)
    # what an older mmr.create_collection made: the domain in the catalog and in both tables
    conn.execute(f"DROP VIEW {s}.items_mmr")
    conn.execute(f"DROP POLICY source_visible ON {emb}")
    conn.execute(f"ALTER TABLE {q} ALTER COLUMN id TYPE {s}.myid")
    conn.execute(f"ALTER TABLE {emb} ALTER COLUMN id TYPE {s}.myid")
    conn.execute(
        f"CREATE POLICY source_visible ON {emb} FOR SELECT USING "
        f"(EXISTS (SELECT 1 FROM {s}.items s WHERE s.id = {emb}.id OFFSET 0))"
    )
    conn.execute(
        "UPDATE mmr._collection SET key_types = ARRAY[%s::regtype] WHERE name = %s",
        (f"{s}.myid", name),
    )
    conn.execute("SELECT mmr.refresh_view(%s)", (name,))
    text = (REPO / "sql" / "incremental" / "004-10-worker-role.sql").read_text()
    conn.execute(text[text.index("DO $$") :])  # the conversion (the table exists already)
    assert _key_type(conn, q) == _key_type(conn, emb) == "bigint"
    row = conn.execute(
        "SELECT key_types::text[] FROM mmr._collection WHERE name = %s", (name,)
    ).fetchone()
    assert row == (["bigint"],)
    assert conn.execute(
        "SELECT count(*) FROM pg_policy WHERE polrelid = %s::regclass", (emb,)
    ).fetchone() == (1,)
    assert conn.execute(f"SELECT count(*) FROM {s}.items_mmr").fetchone() == (0,)
    _assert_safe(conn, app)


def test_item1_search_filter_never_casts_to_the_owners_domain(
    conn: psycopg.Connection[Any], app: str
) -> None:
    """A filter on a domain-typed column compares in the base type: the domain's CHECK (the
    table owner's code) never runs as the role that searches (here a superuser)."""
    s = f"{app}s"
    _as(conn, app, f"CREATE DOMAIN {s}.price AS bigint CHECK ({s}.spy(VALUE))")
    _as(conn, app, f"CREATE TABLE {s}.items (id bigint PRIMARY KEY, body text, p {s}.price)")
    _as(conn, app, f"INSERT INTO {s}.items VALUES (1, 'one', 5), (2, 'two', 7)")
    conn.execute(f"TRUNCATE {s}.spy_log")
    name = f"flt_{app}"
    conn.execute(
        "SELECT mmr.create_collection(%s, %s, text_columns => '{body}')", (name, f"{s}.items")
    )
    conn.execute("SELECT mmr.add_space(%s, 'x', 'external', NULL, 3)", (name,))
    conn.execute(
        "SELECT mmr.put_embeddings(%s, 'x', ARRAY['1', '2']::jsonb[], "
        "ARRAY['[1,0,0]', '[0,1,0]']::vector[])",
        (name,),
    )
    for flt in ('{"p": 7}', '{"p": {">=": 6}}', '{"p": {"in": [7, 8]}}'):
        hits = conn.execute(
            "SELECT key FROM mmr.search(%s, 'x', '[1,0,0]'::vector, k => 5, filter => %s::jsonb)",
            (name, flt),
        ).fetchall()
        assert len(hits) == 1, (flt, hits)
    assert _spy_runs(conn, app) == []
    _assert_safe(conn, app)
    conn.execute("SELECT mmr.drop_collection(%s)", (name,))
