"""The install / upgrade SQL as a script, for a DBA to apply with psql (``mmr db upgrade --sql``).

The same steps as ``mmr db upgrade`` (pg_mmretrieval.install.upgrade), written instead of run:
the server checks, the versioned files of each Alembic revision with the version table's
statements (Alembic's offline mode, through the same migrations), then every idempotent file.
The one piece of templating that the online upgrade takes from the server, the schema of the
vector extension (``@extschema:vector@``), is given by the caller; the script checks it on the
server and stops with a clear error when it is wrong.  Everything runs in one transaction.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from alembic import command

from . import install
from .errors import ConfigError

__all__ = ["upgrade_sql"]

_HEADER = """\
-- pg_mmretrieval: {what} (revision {span}), written by `mmr db upgrade --sql{args}`.
-- Apply as the role that owns (or will own) schema mmr, e.g.:
--   psql -v ON_ERROR_STOP=1 -d mydb -f this-file.sql
-- One transaction: on any error nothing is changed.  pgvector's schema: {schema}.

BEGIN;
SELECT pg_catalog.pg_advisory_xact_lock({lock});  -- serialises concurrent installs
"""

# install.check_server, plus: the extension's schema is the one this script was written for.
_CHECKS = """\
DO $mmr_check$
DECLARE
    v_schema constant name := {schema_literal};
    v_installed text;
    v_installed_in name;
    v_default text;
BEGIN
    IF current_setting('server_version_num')::int < {min_pg} THEN
        RAISE EXCEPTION 'PostgreSQL % is not supported: pg_mmretrieval needs PostgreSQL 15 '
                        'or newer', current_setting('server_version')
            USING ERRCODE = 'feature_not_supported', HINT = 'Upgrade the server.';
    END IF;
    SELECT e.extversion, n.nspname INTO v_installed, v_installed_in
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'vector';
    SELECT default_version INTO v_default FROM pg_catalog.pg_available_extensions
     WHERE name = 'vector';
    IF v_installed IS NULL AND v_default IS NULL THEN
        RAISE EXCEPTION 'the pgvector extension is not available on this server'
            USING ERRCODE = 'undefined_file',
                  HINT = 'Install pgvector {min_vector} or newer: '
                         'https://github.com/pgvector/pgvector#installation';
    END IF;
    IF pg_catalog.string_to_array(pg_catalog.regexp_replace(coalesce(v_installed, v_default),
                                                            '[^0-9.]', '', 'g'), '.')::int[]
       < ARRAY[{min_vector_array}] THEN
        RAISE EXCEPTION 'pgvector % is too old: pg_mmretrieval needs {min_vector} or newer',
                        coalesce(v_installed, v_default)
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Upgrade pgvector on the server, then ALTER EXTENSION vector UPDATE;';
    END IF;
    IF v_installed IS NULL THEN
        EXECUTE pg_catalog.format('CREATE EXTENSION vector SCHEMA %I', v_schema);
    ELSIF v_installed_in <> v_schema THEN
        RAISE EXCEPTION 'the vector extension is in schema %, this script was written for %',
                        v_installed_in, v_schema
            USING ERRCODE = 'invalid_schema_name',
                  HINT = pg_catalog.format('Write it again with: mmr db upgrade --sql '
                                           '--vector-schema %s', v_installed_in);
    END IF;
END
$mmr_check$;
"""

_IDEMPOTENT = """\
-- The idempotent files (functions, views, grants), as every upgrade to head re-applies them.
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade_sql(
    from_revision: str | None = None,
    revision: str = "head",
    *,
    vector_schema: str = "public",
    python_path: Sequence[str] = (),
) -> str:
    """The SQL script that takes a database from ``from_revision`` (None: not installed) to
    ``revision``, as ``mmr db upgrade`` would online.

    Args:
        from_revision: the revision the database is at (``mmr db current``); None for a new
            install.
        revision: the revision to reach; functions and views are included only at head, as
            online.
        vector_schema: the schema the vector extension is (or will be) installed in.
        python_path: the database server's site-packages directories where pg_mmretrieval is
            installed, recorded for ``mmr.embed``'s PL/Python (``mmr.set_python_path``; online
            the upgrade records its own interpreter's, which offline would be this machine's,
            not the server's).  Empty: nothing recorded.

    Raises:
        ConfigError: an unknown revision, or an empty schema name.
    """
    if not vector_schema:
        raise ConfigError("--vector-schema must name a schema (the vector extension's)")
    head = install.head_revision()
    target = head if revision == "head" else revision
    buf = io.StringIO()
    cfg = install._alembic_config()
    cfg.output_buffer = buf
    cfg.attributes["vector_schema"] = vector_schema
    span = f"{from_revision}:{target}" if from_revision else target
    if from_revision != target:
        try:
            command.upgrade(cfg, span, sql=True)
        except Exception as e:  # alembic's CommandError and ResolutionError
            raise ConfigError(
                f"cannot write the upgrade {span}: {e}\n"
                "Give revisions that exist (mmr db current prints the database's)."
            ) from e
    out = io.StringIO()
    args = "".join(
        [
            f" --from {from_revision}" if from_revision else "",
            f" {revision}" if revision != "head" else "",
            f" --vector-schema {vector_schema}" if vector_schema != "public" else "",
            "".join(f" --python-path {d}" for d in python_path),
        ]
    )
    what = "upgrade" if from_revision else "install"
    out.write(
        _HEADER.format(
            what=what, span=span, args=args, schema=vector_schema, lock=install._LOCK_KEY
        )
    )
    minv = install.MIN_PGVECTOR
    out.write(
        _CHECKS.format(
            schema_literal=_literal(vector_schema),
            min_pg=install.MIN_POSTGRES,
            min_vector=".".join(map(str, minv)),
            min_vector_array=", ".join(map(str, minv)),
        )
    )
    out.write("\n" + buf.getvalue())
    if target == head:
        out.write("\n" + _IDEMPOTENT)
        for path in install.idempotent_files():
            text = path.read_text(encoding="utf-8")
            out.write(f"\n-- sql/idempotent/{path.name}\n")
            out.write(install.render_text(text, vector_schema).rstrip() + "\n")
        # the encoder catalog (mmr.add_space checks it): the plugins installed where the script
        # is written, as the online upgrade publishes them
        from .encoder_catalog import publish_sql

        out.write("\n-- the encoder catalog\n" + publish_sql("mmr db upgrade --sql"))
        if python_path:
            dirs = ", ".join(_literal(d) for d in python_path)
            out.write(f"\n-- --python-path\nSELECT mmr.set_python_path(ARRAY[{dirs}]::text[]);\n")
    out.write("\nCOMMIT;\n")
    return out.getvalue()
