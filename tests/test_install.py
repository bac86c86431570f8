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
