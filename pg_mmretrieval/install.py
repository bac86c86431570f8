"""Install and upgrade the ``mmr`` schema through the Alembic environment in ``migrations/``.

Versioned SQL (``sql/incremental``) runs once per Alembic revision; idempotent SQL
(``sql/idempotent``: functions, views, grants; all ``CREATE OR REPLACE``) is re-applied on
every upgrade to head.  Concurrent upgrades serialise on an advisory lock.
"""

# A little over 400 lines on purpose: install, upgrade, uninstall and the revision query share
# one Alembic configuration, one connection helper and one advisory lock.  If it grows,
# ``uninstall`` (with its query of dependent objects) is the part to move to its own module.

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from . import db
from .errors import DatabaseError, DependentObjectsError, UnsupportedServerError

__all__ = [
    "MIN_PGVECTOR",
    "MIN_POSTGRES",
    "SchemaVersion",
    "Uninstalled",
    "apply_sql_file",
    "check_server",
    "check_versions",
    "current",
    "idempotent_files",
    "migrations_dir",
    "quote_ident",
    "render_sql",
    "render_text",
    "sql_dir",
    "uninstall",
    "upgrade",
    "vector_schema",
]

MIN_POSTGRES = 150000
MIN_PGVECTOR = (0, 8, 4)
_LOCK_KEY = 0x6D6D72  # "mmr": serialises concurrent installs


def sql_dir() -> Path:
    """The ``sql/`` directory shipped in the package."""
    return Path(str(resources.files("pg_mmretrieval._sql")))


def migrations_dir() -> Path:
    """The Alembic environment shipped in the package."""
    return Path(str(resources.files("pg_mmretrieval._migrations")))


def _alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _sa_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextmanager
def _connect(url: str | None) -> Iterator[sa.Connection]:
    """A SQLAlchemy connection for Alembic; connection failures become DatabaseError."""
    target = db.resolve_url(url)
    engine = sa.create_engine(_sa_url(target), poolclass=sa.pool.NullPool)
    try:
        try:
            connection = engine.connect()
        except sa.exc.OperationalError as e:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {db.redact(target)}: {e.orig}".strip()
                + "\nCheck MMR_DATABASE_URL, or unset it to use the embedded server."
            ) from e
        with connection:
            yield connection
    finally:
        engine.dispose()


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_versions(
    server_num: int, vector_default: str | None, vector_installed: str | None
) -> None:
    """Refuse PostgreSQL < 15 and pgvector < 0.8.4 with a message that says what to do.

    Args:
        server_num: ``server_version_num`` (e.g. 180006).
        vector_default: the pgvector version the server offers (None: not available).
        vector_installed: the version installed in this database (None: not installed).
    """
    if server_num < MIN_POSTGRES:
        raise UnsupportedServerError(
            f"PostgreSQL {server_num // 10000} is not supported: pg_mmretrieval needs PostgreSQL "
            "15 or newer. Upgrade the server, or unset MMR_DATABASE_URL to use the embedded "
            "PostgreSQL 18."
        )
    need = ".".join(map(str, MIN_PGVECTOR))
    if vector_default is None and vector_installed is None:
        raise UnsupportedServerError(
            "the pgvector extension is not available on this server: install pgvector "
            f"{need} or newer (https://github.com/pgvector/pgvector#installation), or unset "
            "MMR_DATABASE_URL to use the embedded server, which ships it."
        )
    if vector_installed is not None and _version_tuple(vector_installed) < MIN_PGVECTOR:
        raise UnsupportedServerError(
            f"pgvector {vector_installed} is installed in this database, but pg_mmretrieval "
            f"needs {need} or newer (older releases have HNSW corruption bugs and a CVE in "
            "parallel builds). Upgrade pgvector on the server, then run "
            "`ALTER EXTENSION vector UPDATE;`."
        )
    if vector_installed is None and _version_tuple(str(vector_default)) < MIN_PGVECTOR:
        raise UnsupportedServerError(
            f"the server offers pgvector {vector_default}, but pg_mmretrieval needs {need} or "
            "newer: upgrade pgvector on the server."
        )


def check_server(conn: psycopg.Connection[Any]) -> None:
    """Check the connected server's PostgreSQL and pgvector versions (see check_versions)."""
    row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    ext = conn.execute(
        "SELECT default_version, installed_version FROM pg_available_extensions "
        "WHERE name = 'vector'"
    ).fetchone()
    check_versions(int(row[0]) if row else 0, ext[0] if ext else None, ext[1] if ext else None)


def vector_schema(conn: psycopg.Connection[Any]) -> str:
    """The schema pgvector is installed in."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    if row is None:
        raise UnsupportedServerError("the vector extension is not installed in this database")
    return str(row[0])


VECTOR_SCHEMA_PLACEHOLDER = "@extschema:vector@"


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (what libpq's PQescapeIdentifier gives)."""
    return '"' + name.replace('"', '""') + '"'


def render_text(text: str, vector_schema_name: str) -> str:
    """The templating of the SQL files: ``@extschema:vector@`` becomes the quoted schema of
    pgvector.  Online the schema comes from the server (render_sql); offline
    (``mmr db upgrade --sql --vector-schema``) from the caller."""
    return text.replace(VECTOR_SCHEMA_PLACEHOLDER, quote_ident(vector_schema_name))


def render_sql(conn: psycopg.Connection[Any], text: str) -> str:
    """Replace ``@extschema:vector@`` by pgvector's (quoted) schema on this server."""
    if VECTOR_SCHEMA_PLACEHOLDER not in text:
        return text
    return render_text(text, vector_schema(conn))


def apply_sql_file(conn: psycopg.Connection[Any], path: Path) -> None:
    """Run one SQL file as a script (several statements, no parameters)."""
    conn.execute(render_sql(conn, path.read_text(encoding="utf-8")).encode())


def idempotent_files() -> list[Path]:
    """The idempotent SQL files, in the order every upgrade to head applies them."""
    return sorted((sql_dir() / "idempotent").glob("*.sql"))


def _apply_idempotent(conn: psycopg.Connection[Any]) -> None:
    for path in idempotent_files():
        apply_sql_file(conn, path)
    _record_python_path(conn)
    # The encoder catalog learns the installed plugins' encoders (mmr.add_space checks them).
    from .encoder_catalog import publish_quietly

    publish_quietly(conn, "mmr db upgrade")


def _record_python_path(conn: psycopg.Connection[Any]) -> None:
    """Record where this interpreter's packages live, for mmr.embed's PL/Python (the
    server's Python adds these directories to import pg_mmretrieval; docs/server.md)."""
    from .plpython import site_dirs

    conn.execute("SELECT mmr.set_python_path(%s::text[])", (site_dirs(),))


@dataclass(frozen=True)
class SchemaVersion:
    """The installed and the newest revision of the mmr schema."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(
    url: str | None = None, revision: str = "head", *, connection: sa.Connection | None = None
) -> SchemaVersion:
    """Install or upgrade the mmr schema; safe to run twice and concurrently.

    Args:
        url: connection URL (default: ``MMR_DATABASE_URL`` or the embedded server).
        revision: Alembic revision to reach; functions and views are refreshed only at head.
        connection: run on this SQLAlchemy (psycopg) connection, inside its current
            transaction, and leave committing to the caller (e.g. an application's own
            migration: ``op.install_mmr()``); ``url`` is then ignored.

    Raises:
        UnsupportedServerError: PostgreSQL < 15 or pgvector < 0.8.4.
    """
    if connection is not None:
        return _upgrade_on(connection, revision)
    with _connect(url) as connection:
        raw = connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        check_server(raw)
        from .standby import refuse_standby  # a standby: one clear error, not alembic's

        refuse_standby(raw, "`mmr db upgrade`")
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        connection.commit()
        try:
            command.upgrade(_alembic_config(connection), revision)
            connection.commit()
            at_head = _current(connection) == head_revision()
            if at_head:
                _apply_idempotent(raw)
                connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_KEY})")
            connection.commit()
        return SchemaVersion(_current(connection), head_revision())


def _upgrade_on(connection: sa.Connection, revision: str) -> SchemaVersion:
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise UnsupportedServerError(
            "installing the mmr schema on a given connection needs the psycopg (sync) driver, "
            f"not {type(raw).__module__}.{type(raw).__name__}: run Alembic with a "
            "postgresql+psycopg:// URL, or run `mmr db upgrade` before migrating"
        )
    check_server(raw)
    # Transaction-scoped: released when the caller commits or rolls back.
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    command.upgrade(_alembic_config(connection), revision)
    if _current(connection) == head_revision():
        _apply_idempotent(raw)
    return SchemaVersion(_current(connection), head_revision())


# Objects outside schema mmr that depend on an object in it (a function, type, table, view,
# operator): a column whose generated or default expression calls an mmr function, a column of an
# mmr type, a view, index, constraint, trigger, policy or function using one.  A view's rule and a
# column's default are reported as the view and the column.  The project's own objects are in
# schema mmr, except the event trigger calling mmr._ddl_guard; collections' triggers, views and
# sync functions are dropped by mmr.drop_collection before this runs.
_DEPENDENTS_SQL = """
WITH mmr_objects AS (
    SELECT 'pg_class'::regclass AS cls, oid FROM pg_class WHERE relnamespace = $1
    UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace = $1
    UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace = $1
    UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprnamespace = $1
), deps AS (
    SELECT CASE WHEN d.classid IN ('pg_rewrite'::regclass, 'pg_attrdef'::regclass)
                THEN 'pg_class'::regclass ELSE d.classid END AS classid,
           coalesce(r.ev_class, ad.adrelid, d.objid) AS objid,
           CASE WHEN d.classid = 'pg_rewrite'::regclass THEN 0
                ELSE coalesce(ad.adnum, d.objsubid) END AS objsubid,
           d.refclassid, d.refobjid, d.refobjsubid
      FROM pg_depend d
      JOIN mmr_objects m ON m.cls = d.refclassid AND m.oid = d.refobjid
      LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
      LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
     WHERE d.deptype IN ('n', 'a')
), placed AS (
    SELECT deps.*,
           CASE deps.classid
               WHEN 'pg_class'::regclass THEN
                   (SELECT relnamespace FROM pg_class WHERE oid = deps.objid)
               WHEN 'pg_proc'::regclass THEN
                   (SELECT pronamespace FROM pg_proc WHERE oid = deps.objid)
               WHEN 'pg_type'::regclass THEN
                   (SELECT typnamespace FROM pg_type WHERE oid = deps.objid)
               WHEN 'pg_constraint'::regclass THEN
                   (SELECT connamespace FROM pg_constraint WHERE oid = deps.objid)
               WHEN 'pg_trigger'::regclass THEN
                   (SELECT k.relnamespace FROM pg_trigger g JOIN pg_class k ON k.oid = g.tgrelid
                     WHERE g.oid = deps.objid)
               WHEN 'pg_policy'::regclass THEN
                   (SELECT k.relnamespace FROM pg_policy p JOIN pg_class k ON k.oid = p.polrelid
                     WHERE p.oid = deps.objid)
               WHEN 'pg_event_trigger'::regclass THEN
                   (SELECT p.pronamespace FROM pg_event_trigger e JOIN pg_proc p
                        ON p.oid = e.evtfoid WHERE e.oid = deps.objid)
           END AS nsp
      FROM deps
)
SELECT (pg_identify_object(classid, objid, objsubid)).type,
       pg_describe_object(classid, objid, objsubid),
       string_agg(DISTINCT pg_describe_object(refclassid, refobjid, refobjsubid), ', ')
  FROM placed
 WHERE nsp IS DISTINCT FROM $1
 GROUP BY 1, 2
 ORDER BY 2
"""


@dataclass(frozen=True)
class Uninstalled:
    """What :func:`uninstall` removed: the collections, and (with ``cascade``) the user's objects
    that depended on schema ``mmr``, as ``(kind, object, depends_on)``."""

    collections: list[str]
    dropped: list[tuple[str, str, str]]


def _dependents(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str]]:
    nsp = conn.execute("SELECT 'mmr'::regnamespace::oid").fetchone()
    assert nsp is not None
    sql = _DEPENDENTS_SQL.replace("$1", str(int(nsp[0])) + "::oid")
    return [(str(k), str(o), str(d)) for k, o, d in conn.execute(sql.encode()).fetchall()]


def uninstall(url: str | None = None, *, cascade: bool = False) -> Uninstalled:
    """Remove pg_mmretrieval from a database: every collection (its triggers on your tables,
    views, queues, embedding tables), then schema ``mmr``.  Your tables and the vector
    extension stay.

    Objects of yours that depend on schema ``mmr`` (e.g. a column ``GENERATED ALWAYS AS
    (mmr.content_hash(caption))``, a view reading ``mmr.collections``, an index calling an mmr
    function) would be dropped with it: uninstall then refuses and changes nothing, unless
    ``cascade`` is true, which drops them too and reports them in ``Uninstalled.dropped``.

    Raises:
        DependentObjectsError: such objects exist and ``cascade`` is false (``objects`` lists
            them: kind, object, what it depends on).
    """
    with db.connect(url, autocommit=False) as conn:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'mmr'").fetchone() is None:
            return Uninstalled([], [])
        conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
        names = [str(r[0]) for r in conn.execute("SELECT name FROM mmr._collection ORDER BY id")]
        for name in names:
            conn.execute("SELECT mmr.drop_collection(%s)", (name,))
        found = _dependents(conn)
        if found and not cascade:
            conn.rollback()
            listing = "\n".join(f"  {kind} {obj} (uses {on})" for kind, obj, on in found)
            raise DependentObjectsError(
                f"not uninstalling: {len(found)} object(s) of yours depend on schema mmr and "
                f"would be dropped with it:\n{listing}\nNothing was changed. Remove or alter "
                "them first (e.g. ALTER TABLE ... ALTER COLUMN ... DROP EXPRESSION keeps a "
                "generated column's values), or pass --cascade (cascade=True) to drop them too.",
                found,
            )
        conn.execute("DROP SCHEMA mmr CASCADE")
        conn.commit()
    return Uninstalled(names, found)


def _current(connection: sa.Connection) -> str | None:
    has_schema = connection.exec_driver_sql(
        "SELECT 1 FROM pg_namespace WHERE nspname = 'mmr'"
    ).first()
    if not has_schema:
        return None
    ctx = MigrationContext.configure(
        connection, opts={"version_table": "alembic_version", "version_table_schema": "mmr"}
    )
    return ctx.get_current_revision()


def current(url: str | None = None) -> SchemaVersion:
    """The installed revision (None when the schema is not installed) and the head."""
    with _connect(url) as connection:
        return SchemaVersion(_current(connection), head_revision())
