"""Connections: where the database is, and what every connection gets."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import config, server
from .errors import ConfigError, DatabaseError, InputError, MMRError, NotFoundError

__all__ = [
    "WORKER_ROLE",
    "connect",
    "redact",
    "resolve_url",
    "resolve_worker_url",
    "translate_error",
    "with_user",
]

WORKER_ROLE = "mmr_worker"
"""The worker's least-privilege role (created by ``mmr db upgrade``, docs/security.md)."""


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``MMR_DATABASE_URL``, else the embedded server."""
    return url or config.database_url() or server.ensure_running()


def resolve_worker_url(url: str | None = None) -> str:
    """The worker's URL: the argument, else ``MMR_WORKER_DATABASE_URL``, else
    ``MMR_DATABASE_URL`` (as given), else the embedded server logged in as ``mmr_worker``.
    """
    explicit = url or config.worker_database_url() or config.database_url()
    if explicit:
        return explicit
    return with_user(server.ensure_running(), WORKER_ROLE)


def with_user(url: str, user: str) -> str:
    """``url`` (a URL or a libpq connection string) logging in as ``user``, without a password."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if k != "password"}
    params["user"] = user
    return make_conninfo("", **params)


def connect(
    url: str | None = None,
    *,
    autocommit: bool = False,
    application_name: str = "pg_mmretrieval",
    register_types: bool = True,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a psycopg connection with pgvector's types registered.

    Args:
        url: connection URL; defaults to ``MMR_DATABASE_URL`` or the embedded server.
        autocommit: psycopg's autocommit mode.
        application_name: shown in ``pg_stat_activity``.
        register_types: register pgvector's ``vector``/``halfvec`` adapters (needs the extension).

    Raises:
        DatabaseError: the server cannot be reached.
    """
    target = resolve_url(url)
    _check_url(target)
    kwargs.setdefault("application_name", application_name)
    kwargs.setdefault("connect_timeout", int(os.environ.get("MMR_CONNECT_TIMEOUT", "10")))
    try:
        conn = psycopg.connect(target, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as e:
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {redact(target)}: {e}".strip()
            + "\nCheck MMR_DATABASE_URL, or unset it to use the embedded server.",
            getattr(e, "sqlstate", None),
        ) from e
    if register_types:
        _register(conn)
    from .plugins import call_prepare_connection

    call_prepare_connection(conn)
    return conn


def _check_url(target: str) -> None:
    """A malformed URL (e.g. ``MMR_DATABASE_URL=notaurl``) is a ConfigError, not a traceback."""
    try:
        conninfo_to_dict(target)
    except psycopg.ProgrammingError as e:
        shown = target if "@" not in target and "password" not in target else "(hidden)"
        raise ConfigError(
            f"{shown!r} is not a PostgreSQL connection URL ({str(e).strip()}); set "
            "MMR_DATABASE_URL to e.g. postgresql://user@localhost:5432/dbname, or unset it to "
            "use the embedded server"
        ) from e


def _register(conn: psycopg.Connection[Any]) -> None:
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        # The vector extension is not installed yet (before `mmr db upgrade`).
        if not conn.autocommit:
            conn.rollback()


def redact(url: str) -> str:
    """The URL without its password (never print a password)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


_NOT_FOUND = {"42704", "42P01", "42883"}  # undefined_object, undefined_table, undefined_function
_INPUT = {"22", "23", "42", "55"}  # data, integrity, syntax/access rule, object state


def translate_error(e: psycopg.Error) -> MMRError:
    """Turn a psycopg error into an MMRError, keeping PostgreSQL's message, hint and SQLSTATE.

    ``undefined_object`` becomes NotFoundError; data exceptions, constraint violations and
    invalid arguments become InputError; the rest DatabaseError.
    """
    diag = e.diag
    msg = diag.message_primary or str(e).strip()
    code = diag.sqlstate
    if diag.message_hint:
        msg = f"{msg}\nHint: {diag.message_hint}"
    elif code == "25006":  # read_only_sql_transaction: most often a hot standby
        msg += "\nHint: writes go to the primary; a hot standby (read replica) only searches."
    err: MMRError
    if code in _NOT_FOUND:
        err = NotFoundError(msg)
    elif code is not None and code[:2] in _INPUT and code != "42501":
        err = InputError(msg)
    else:
        return DatabaseError(msg, code)
    err.sqlstate = code
    return err
