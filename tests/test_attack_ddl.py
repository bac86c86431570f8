"""Issue 12, items 6, 7, 9: uninstall keeps user data; schema changes of registered tables never
break the user's writes; schema and table names that need quoting."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

import pg_mmretrieval as mmr
from pg_mmretrieval import install
from pg_mmretrieval.errors import DatabaseError, DependentObjectsError, InputError


def _queue(conn: psycopg.Connection[Any], collection: str, key: str) -> list[Any]:
    q = conn.execute(
        "SELECT queue_table::text FROM mmr._collection WHERE name = %s", (collection,)
    ).fetchone()
    assert q is not None
    return [
        r[0]
        for r in conn.execute(
            psycopg.sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                psycopg.sql.Identifier(key), psycopg.sql.SQL(q[0])
            )
        )
    ]


def _register(conn: psycopg.Connection[Any], name: str, table: str) -> None:
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, other int)")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'one', 1)")
    mmr.create_collection(conn, name, table, text_columns=["body"])
    mmr.add_space(conn, name, "t", "mmr-test", "body", 32)


# -- item 7: schema changes ----------------------------------------------------------------------


def test_item7_guard_is_installed(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT evtevent, evtfoid::regproc::text FROM pg_event_trigger "
        "WHERE evtname = 'mmr_ddl_guard'"
    ).fetchone()
    assert row == ("ddl_command_end", "mmr._ddl_guard")


def test_item7_rename_text_column_keeps_writes_working(conn: psycopg.Connection[Any]) -> None:
    _register(conn, "ren_text", "ren_text")
    conn.execute("ALTER TABLE ren_text RENAME COLUMN body TO body2")
    conn.execute("INSERT INTO ren_text VALUES (2, 'two', 2)")
    conn.execute("UPDATE ren_text SET body2 = 'uno' WHERE id = 1")
    assert _queue(conn, "ren_text", "id") == [1, 2]
    conn.execute("DELETE FROM ren_text WHERE id = 2")
    assert _queue(conn, "ren_text", "id") == [1]
    assert conn.execute(
        "SELECT text_columns::text[] FROM mmr._collection WHERE name = 'ren_text'"
    ).fetchone() == (["body2"],)
    assert conn.execute(
        "SELECT source_column::text FROM mmr.spaces WHERE collection = 'ren_text'"
    ).fetchone() == ("body2",)
    # the view follows the name; the statement cache names the new column nowhere wrongly
    assert conn.execute("SELECT body2, t FROM ren_text_mmr WHERE id = 1").fetchone() == (
        "uno",
        None,
    )


def test_item7_rename_key_column_keeps_writes_and_search_working(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("CREATE TABLE ren_key (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO ren_key VALUES (1, 'one'), (2, 'two')")
    mmr.create_collection(conn, "ren_key", "ren_key", text_columns=["body"])
    mmr.add_space(conn, "ren_key", "x", "external", None, 3)
    mmr.add_space(conn, "ren_key", "t", "mmr-test", "body", 32)
    mmr.put_embeddings(conn, "ren_key", "x", [1, 2], [[1, 0, 0], [0, 1, 0]])
    conn.execute("ALTER TABLE ren_key RENAME COLUMN id TO item_id")
    conn.execute("INSERT INTO ren_key VALUES (3, 'three')")
    assert _queue(conn, "ren_key", "item_id") == [1, 2, 3]
    conn.execute("UPDATE ren_key SET body = NULL WHERE item_id = 3")
    conn.execute("DELETE FROM ren_key WHERE item_id = 2")  # removes its embedding and entry
    assert _queue(conn, "ren_key", "item_id") == [1, 3]
    assert [h.key for h in mmr.search(conn, "ren_key", "x", [0, 1, 0], k=5)] == [1]
    assert conn.execute("SELECT item_id FROM ren_key_mmr ORDER BY 1").fetchall() == [(1,), (3,)]


def test_item7_drop_registered_column_refused(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE drop_col (id int PRIMARY KEY, body text, other int)")
    mmr.create_collection(conn, "drop_col", "drop_col", text_columns=["body"], create_view=False)
    mmr.add_space(conn, "drop_col", "t", "mmr-test", "body", 32)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as e:
        conn.execute("ALTER TABLE drop_col DROP COLUMN body")
    assert "is the text column of collection 'drop_col' and cannot be dropped" in str(e.value)
    assert "drop_collection" in (e.value.diag.message_hint or "")
    # with the view, CASCADE would take the view too: still refused
    _register(conn, "drop_col2", "drop_col2")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        conn.execute("ALTER TABLE drop_col2 DROP COLUMN body CASCADE")
    conn.execute("INSERT INTO drop_col VALUES (1, 'a', 1)")  # writes still work
    assert _queue(conn, "drop_col", "id") == [1]


def test_item7_key_type_change_refused(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE key_type (id int PRIMARY KEY, body text)")
    mmr.create_collection(conn, "key_type", "key_type", text_columns=["body"], create_view=False)
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        conn.execute("ALTER TABLE key_type ALTER COLUMN id TYPE bigint")
    assert "key column of collection 'key_type'" in str(e.value)
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        conn.execute("ALTER TABLE key_type ALTER COLUMN body TYPE int USING length(body)")
    assert "text column" in str(e.value)
    conn.execute("ALTER TABLE key_type ALTER COLUMN body TYPE varchar(100)")  # still a string


def test_item7_unrelated_alters_and_table_rename_unaffected(
    conn: psycopg.Connection[Any],
) -> None:
    _register(conn, "unrel", "unrel")
    conn.execute("ALTER TABLE unrel ADD COLUMN extra text")
    conn.execute("ALTER TABLE unrel DROP COLUMN extra")
    conn.execute("ALTER TABLE unrel RENAME COLUMN other TO other2")
    assert conn.execute("SELECT other2 FROM unrel_mmr").fetchall() == [(1,)]
    conn.execute("CREATE SCHEMA unrel_s")
    conn.execute("ALTER TABLE unrel RENAME TO unrel_renamed")
    conn.execute("ALTER TABLE unrel_renamed SET SCHEMA unrel_s")
    conn.execute("INSERT INTO unrel_s.unrel_renamed VALUES (2, 'two', 2)")
    assert _queue(conn, "unrel", "id") == [1, 2]
    # DDL on unregistered tables is untouched
    conn.execute("CREATE TABLE plain (a int)")
    conn.execute("ALTER TABLE plain RENAME COLUMN a TO b")
    conn.execute("ALTER TABLE plain ALTER COLUMN b TYPE bigint")
    conn.execute("ALTER TABLE plain DROP COLUMN b")
    mmr.drop_collection(conn, "unrel")


def test_item7_rename_by_non_superuser_owner(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP ROLE IF EXISTS ddl_owner")
    conn.execute("CREATE ROLE ddl_owner NOLOGIN")
    try:
        conn.execute("CREATE TABLE owned (id int PRIMARY KEY, body text)")
        conn.execute("ALTER TABLE owned OWNER TO ddl_owner")
        mmr.create_collection(conn, "owned", "owned", text_columns=["body"])
        mmr.add_space(conn, "owned", "t", "mmr-test", "body", 32)
        conn.execute("SET ROLE ddl_owner")
        conn.execute("ALTER TABLE owned RENAME COLUMN body TO body2")
        conn.execute("INSERT INTO owned VALUES (1, 'a')")
        conn.execute("RESET ROLE")
        assert _queue(conn, "owned", "id") == [1]
    finally:
        conn.execute("RESET ROLE")
        mmr.drop_collection(conn, "owned")
        conn.execute("DROP TABLE IF EXISTS owned")
        conn.execute("DROP ROLE IF EXISTS ddl_owner")


# -- item 9: names that need quoting -------------------------------------------------------------


def test_item9_mixed_case_schema_end_to_end(conn: psycopg.Connection[Any]) -> None:
    table = '"My App"."T ""x"""'  # schema with a space and capitals, table with a quote
    view = '"My App"."T ""x""_mmr"'
    conn.execute('CREATE SCHEMA "My App"')
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    mmr.create_collection(conn, "quoted", table, text_columns=["body"])
    mmr.add_space(conn, "quoted", "v", "external", None, 3)
    mmr.put_embeddings(conn, "quoted", "v", [1, 2], [[1, 0, 0], [0, 1, 0]])
    assert [h.key for h in mmr.search(conn, "quoted", "v", [0, 1, 0], k=1)] == [2]
    assert conn.execute(f"SELECT count(v) FROM {view}").fetchone() == (2,)
    conn.execute(f"DELETE FROM {table} WHERE id = 2")
    assert conn.execute(f"SELECT count(v) FROM {view}").fetchone() == (1,)
    mmr.drop_collection(conn, "quoted")
    assert conn.execute("SELECT to_regclass(%s)", (view,)).fetchone() == (None,)


def test_item9_user_view_never_replaced(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA myapp")
    conn.execute('CREATE SCHEMA "MyApp"')
    conn.execute('CREATE TABLE "MyApp".u (id int PRIMARY KEY, body text)')
    conn.execute("""CREATE VIEW "MyApp".u_mmr AS SELECT 'mine'::text AS owner""")
    with pytest.raises(InputError) as e:
        mmr.create_collection(conn, "mixed", '"MyApp".u', text_columns=["body"])
    assert "already exists" in str(e.value)
    assert conn.execute('SELECT owner FROM "MyApp".u_mmr').fetchone() == ("mine",)
    # with another view name it registers, in the right schema
    mmr.create_collection(conn, "mixed", '"MyApp".u', text_columns=["body"], view_name="u_v")
    assert conn.execute("""SELECT to_regclass('"MyApp".u_v') IS NOT NULL""").fetchone() == (True,)
    # the user drops mmr's view and puts their own under its name: mmr leaves it alone
    conn.execute('DROP VIEW "MyApp".u_v')
    conn.execute("""CREATE VIEW "MyApp".u_v AS SELECT 'mine too'::text AS owner""")
    with pytest.raises(InputError, match="was not created by pg_mmretrieval"):
        mmr.add_space(conn, "mixed", "t", "mmr-test", "body", 32)
    mmr.drop_collection(conn, "mixed")
    assert conn.execute('SELECT owner FROM "MyApp".u_v').fetchone() == ("mine too",)


# -- item 6: uninstall ---------------------------------------------------------------------------


def _mmr_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, MMR_DATABASE_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_item6_uninstall_refuses_and_keeps_generated_column(empty_db_url: str) -> None:
    install.upgrade(empty_db_url)
    with mmr.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE cap (id int PRIMARY KEY, caption text, "
            "h bytea GENERATED ALWAYS AS (mmr.content_hash(caption)) STORED)"
        )
        conn.execute("CREATE VIEW my_collections AS SELECT collection FROM mmr.collections")
        conn.execute("INSERT INTO cap (id, caption) VALUES (1, 'a cat')")
        mmr.create_collection(conn, "cap", "cap", text_columns=["caption"])
        before = conn.execute("SELECT h FROM cap").fetchone()
    with pytest.raises(DependentObjectsError) as e:
        install.uninstall(empty_db_url)
    assert any("column h of table cap" in o for _, o, _ in e.value.objects)
    assert "column h of table cap" in str(e.value)
    assert any(o == "view my_collections" for _, o, _ in e.value.objects)
    assert isinstance(e.value, DatabaseError) and e.value.sqlstate == "2BP01"
    res = _mmr_cli(empty_db_url, "db", "uninstall", "--yes")
    assert res.returncode != 0 and "column h of table cap" in res.stderr + res.stdout
    with mmr.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT h FROM cap").fetchone() == before  # column and data kept
        assert conn.execute("SELECT count(*) FROM mmr._collection").fetchone() == (1,)
    res = _mmr_cli(empty_db_url, "db", "uninstall", "--yes", "--cascade")
    assert res.returncode == 0, res.stderr
    assert "dropped table column column h of table cap" in res.stdout
    assert "dropped view view my_collections" in res.stdout
    with mmr.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('mmr')").fetchone() == (None,)
        assert conn.execute("SELECT id, caption FROM cap").fetchall() == [(1, "a cat")]
        assert conn.execute("SELECT to_regclass('my_collections')").fetchone() == (None,)


def test_item7_rename_keeps_column_privileges_of_embeddings(conn: psycopg.Connection[Any]) -> None:
    """The embedding tables' column-privilege check (item 3) follows a renamed column."""
    conn.execute("CREATE TABLE ren_priv (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO ren_priv VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    mmr.create_collection(conn, "ren_priv", "ren_priv", text_columns=["body"])
    mmr.add_space(conn, "ren_priv", "b", "external", "body", 3)
    mmr.put_embeddings(conn, "ren_priv", "b", [1, 2], [[1, 0, 0], [0, 1, 0]])
    role = "ren_priv_reader"
    conn.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        conn.execute(f"GRANT SELECT (id, title, body) ON ren_priv TO {role}")
        conn.execute("ALTER TABLE ren_priv RENAME COLUMN body TO body2")
        conn.execute(f"SET ROLE {role}")
        hits = conn.execute(
            "SELECT key FROM mmr.search('ren_priv', 'b', '[0,1,0]'::vector, k => 1)"
        ).fetchall()
        assert [h[0] for h in hits] == [{"id": 2}] or [h[0] for h in hits] == [2]
        conn.execute("RESET ROLE")
        conn.execute(f"REVOKE SELECT (body2) ON ren_priv FROM {role}")
        conn.execute(f"SET ROLE {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="body2"):
            conn.execute("SELECT key FROM mmr.search('ren_priv', 'b', '[0,1,0]'::vector, k => 1)")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")
