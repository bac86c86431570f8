"""The embedded server: mmr server start|status|url|stop, and on-demand start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pg_mmretrieval.server import tuned_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MMR_DATABASE_URL"}
    env["MMR_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_server_lifecycle_and_on_demand_start(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("srv")
    st = json.loads(_run(data, "server", "status", "--json").stdout)
    assert st["running"] is False and st["data_dir"] == str(data / "pgdata")

    # any command starts the server on demand and says so
    r = _run(data, "db", "upgrade")
    assert r.returncode == 0, r.stderr
    assert "starting the embedded PostgreSQL server" in r.stderr
    assert "MMR_DATABASE_URL" in r.stderr

    st = json.loads(_run(data, "server", "status", "--json").stdout)
    assert st["running"] is True and st["version"].startswith("18")
    url = _run(data, "server", "url").stdout.strip().splitlines()[-1]
    assert url == st["url"] and url.startswith("postgresql://")

    # tuned settings are in effect (restart-only ones included)
    import psycopg

    with psycopg.connect(url) as conn:
        got = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings "
                "WHERE name IN ('maintenance_work_mem', "
                "'dynamic_shared_memory_type')"
            ).fetchall()
        )
    assert got["dynamic_shared_memory_type"] == "mmap"
    assert got["maintenance_work_mem"] != "65536kB"

    r = _run(data, "server", "start")  # already running: no-op
    assert r.returncode == 0 and r.stdout.strip() == url
    # a running standby of this data directory is stopped first, and says so
    port = _free_port()
    r = _run(data, "server", "standby", "start", "--port", str(port))
    assert r.returncode == 0, r.stderr
    standby_state = ["server", "standby", "status", "--port", str(port), "--json"]
    assert json.loads(_run(data, *standby_state).stdout)["running"] is True
    r = _run(data, "server", "stop")
    assert r.stdout.splitlines() == [f"stopped the standby on port {port}", "stopped"], r.stderr
    assert json.loads(_run(data, *standby_state).stdout)["running"] is False
    assert (data / f"standby-{port}" / "PG_VERSION").exists()  # its data is kept
    r = _run(data, "server", "start")
    assert r.returncode == 0 and r.stdout.strip() == url
    assert _run(data, "server", "stop").stdout.strip() == "stopped"
    assert _run(data, "server", "stop").stdout.strip() == "not running"
    assert json.loads(_run(data, "server", "status", "--json").stdout)["running"] is False
    # data survives a restart
    r = _run(data, "db", "current")
    assert r.returncode == 0 and "up to date" in r.stdout

    # after a crash (postmaster killed: stale postmaster.pid, WAL to replay) the next command
    # starts the server again, waiting for recovery (MMR_SERVER_START_TIMEOUT)
    import signal

    pid = int((data / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    r = _run(data, "db", "current")
    assert r.returncode == 0 and "up to date" in r.stdout, r.stderr
    log = (data / "pgdata" / "log").read_text()
    assert "database system was interrupted" in log or "not properly shut down" in log
    _run(data, "server", "stop")

    env_bad = {"MMR_SERVER_START_TIMEOUT": "soon"}
    r = subprocess.run(
        [sys.executable, "-m", "pg_mmretrieval", "db", "current"],
        env={
            **{k: v for k, v in os.environ.items() if k != "MMR_DATABASE_URL"},
            "MMR_DATA_DIR": str(data),
            **env_bad,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "MMR_SERVER_START_TIMEOUT must be a whole number" in r.stderr


def test_tuned_settings_scale_with_the_machine() -> None:
    small = tuned_settings(memory_bytes=2 << 30, cpus=2)
    big = tuned_settings(memory_bytes=64 << 30, cpus=16)
    assert small["maintenance_work_mem"] == "256MB"
    assert big["maintenance_work_mem"] == "2048MB"  # HNSW builds: 3x faster than 64 MB here
    assert big["shared_buffers"] == "8192MB"
    assert big["max_parallel_maintenance_workers"] == "8"
    assert small["max_parallel_maintenance_workers"] == "1"
