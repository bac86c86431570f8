"""Schema install and upgrade: idempotent, concurrent-safe, version checks."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from pg_mmretrieval import install
from pg_mmretrieval.errors import UnsupportedServerError

from .conftest import _with_database


def _mmr(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_upgrade_is_idempotent_and_concurrent_safe(empty_db_url: str) -> None:
    assert install.current(empty_db_url).current is None
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pg_mmretrieval", "db", "upgrade"],
            env={**os.environ, "MMR_DATABASE_URL": empty_db_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "mmr schema at revision" in out
    version = install.current(empty_db_url)
    assert version.up_to_date and version.current == install.head_revision()
    with psycopg.connect(empty_db_url) as conn:
        before = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'mmr'::regnamespace"
        ).fetchone()
    again = _mmr(empty_db_url, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    with psycopg.connect(empty_db_url) as conn:
        after = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'mmr'::regnamespace"
        ).fetchone()
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
        ).fetchone() == (1,)
    assert before == after
    current = _mmr(empty_db_url, "db", "current")
    assert current.returncode == 0 and "up to date" in current.stdout


def test_db_current_on_an_empty_database_says_what_to_do(server_url: str) -> None:
    import uuid

    name = "c_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        res = _mmr(_with_database(server_url, name), "db", "current")
        assert res.returncode == 1
        assert "not installed" in res.stdout and "mmr db upgrade" in res.stdout
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_real_server_passes_the_version_checks(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        install.check_server(conn)
        (num,) = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()  # type: ignore[misc]
        assert num >= 150000


@pytest.mark.parametrize(
    ("server", "default", "installed", "message"),
    [
        (140010, "0.8.6", None, "PostgreSQL 14 is not supported"),
        (180006, None, None, "not available on this server"),
        (180006, "0.8.6", "0.7.4", "pgvector 0.7.4 is installed"),
        (180006, "0.8.3", None, "offers pgvector 0.8.3"),
    ],
)
def test_old_versions_are_refused_with_a_clear_message(
    server: int, default: str | None, installed: str | None, message: str
) -> None:
    with pytest.raises(UnsupportedServerError, match=message):
        install.check_versions(server, default, installed)
    install.check_versions(150000, "0.8.4", None)
    install.check_versions(180006, "0.8.6", "0.8.6")


def test_uninstall_removes_everything_but_the_users_tables(empty_db_url: str) -> None:
    import pg_mmretrieval as mmr

    install.upgrade(empty_db_url)
    with mmr.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep_me (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO keep_me VALUES (1, 'x')")
        mmr.create_collection(conn, "k", "keep_me", text_columns=["body"])
        mmr.add_space(conn, "k", "t", "mmr-test", "body", 32)
    res = _mmr(empty_db_url, "db", "uninstall", "--yes")
    assert res.returncode == 0, res.stderr
    assert "1 collections dropped" in res.stdout
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regnamespace('mmr')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM keep_me").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'keep_me'::regclass "
            "AND NOT tgisinternal"
        ).fetchone() == (0,)
        conn.execute("INSERT INTO keep_me VALUES (2, 'y')")  # no dangling trigger
    assert install.current(empty_db_url).current is None
    assert _mmr(empty_db_url, "db", "uninstall", "--yes").returncode == 0  # idempotent


# Citus (019-citus.sql) follows pg_depend from a function to the composite types it uses and,
# from such a type's relation, to every function that depends on that relation (its SQL body
# reads the type's fields: a BEGIN ATOMIC body selecting `f.sql` from a function returning
# mmr._search_plan records one row per field read).  So one planner reading plan-type fields
# made every function taking the plan type depend, for Citus, on what that planner reads (the
# catalog table mmr._space, not in Citus' metadata), and `REVOKE ... ON ALL FUNCTIONS IN SCHEMA
# mmr` and `citus_add_node` failed with 0A000 (tests/test_citus_rebalance.py).  The rule: no
# function depends on the relation of a composite type of schema mmr (the plan types): the
# planners read the catalog through mmr._fast_space's columns and build plans from columns.
PLAN_TYPE_READERS = """
SELECT p.oid::regprocedure::text AS function, t.oid::regclass::text AS relation,
       t.relkind::text AS kind, count(*) AS fields
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objid
  JOIN pg_catalog.pg_class t ON d.refclassid = 'pg_catalog.pg_class'::regclass
                            AND t.oid = d.refobjid
 WHERE p.pronamespace = 'mmr'::regnamespace AND t.relnamespace = 'mmr'::regnamespace
   AND d.deptype = 'n' AND t.relkind = 'c'
 GROUP BY 1, 2, 3 ORDER BY 1, 2
"""


def test_no_function_reads_plan_type_fields_in_its_body(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        found = conn.execute(PLAN_TYPE_READERS).fetchall()
        # the query finds the old failure's shape (mmr._composed_exec_plan reading the fields
        # of mmr._fast_plan's mmr._search_plan): a SQL body reading a plan type's fields
        conn.execute(
            "CREATE FUNCTION mmr._t_reads_plan(p_sql text) RETURNS text LANGUAGE sql STABLE "
            "BEGIN ATOMIC SELECT f.sql FROM (SELECT p_sql, NULL::text[]) g, "
            "LATERAL (SELECT (ROW(g.p_sql, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
            "NULL, NULL, NULL, NULL, NULL, NULL)::mmr._exec_plan).*) f; END"
        )
        caught = conn.execute(PLAN_TYPE_READERS).fetchall()
        conn.rollback()
    assert not found, (
        "functions whose SQL body depends on a composite type's relation (Citus then "
        f"propagates every user of that type with them): {found}"
    )
    assert [r for r in caught if r[0].startswith("mmr._t_reads_plan")], caught
