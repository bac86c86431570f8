"""Grow the local Citus cluster: add a worker node, rebalance shards onto it.

``add_node`` starts one more worker of the local cluster (``pg_mmretrieval.citus``) on the
next free port and registers it with ``citus_add_node`` in every database of the cluster that
has Citus (Citus keeps its metadata per database).  ``rebalance`` runs Citus's own background
rebalancer (``citus_rebalance_start`` then ``citus_rebalance_wait``), which moves shard groups
(a source table's shard with the co-located shards of its queue and embedding tables) by
logical replication: reads and writes continue during a move, writes to a moving shard wait
for a moment at its end.  docs/operations.md, "Citus".
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from . import citus
from .errors import ConfigError, ServerError

__all__ = ["TRANSFER_MODES", "RebalanceResult", "add_node", "citus_databases", "rebalance"]

TRANSFER_MODES = ("auto", "force_logical", "block_writes")


def _running_cluster() -> citus.ClusterStatus:
    st = citus.cluster_status()
    if not st.nodes:
        raise citus.CitusUnavailable("no local cluster: start one with `mmr cluster start`")
    if not st.running:
        down = ", ".join(str(n.port) for n in st.nodes if not n.running)
        raise ConfigError(f"the local cluster is not running (ports {down}): `mmr cluster start`")
    return st


def citus_databases(st: citus.ClusterStatus) -> list[str]:
    """The coordinator's databases that have the Citus extension."""
    found = []
    with citus._connect(st.nodes[0].port) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname"
            ).fetchall()
        ]
    for name in names:
        with psycopg.connect(citus._on(st.coordinator_url, name), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'").fetchone():
                found.append(name)
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def add_node() -> citus.NodeStatus:
    """Start one more worker node and add it (``citus_add_node``) to every Citus database of
    the local cluster.  It holds no shards until a rebalance moves some onto it."""
    st = _running_cluster()
    ports = [n.port for n in st.nodes]
    if len(ports) - 1 >= 16:
        raise ConfigError("the local cluster has 16 workers already (the most it runs)")
    port = max(ports) + 1
    while not _port_free(port):
        port += 1
        if port > 65535:
            raise ConfigError("no free port above the cluster's for a new node")
    pgdata = citus._cluster_dir() / f"node{len(ports)}"
    if pgdata.exists() and not citus._node_running(pgdata):
        shutil.rmtree(pgdata)  # left by an add-node that failed before it was recorded
    citus._init_node(pgdata, port)
    citus._run_pg(
        "pg_ctl", ["-w", "-t", "120", "-l", str(pgdata / "log"), "start"], pgdata, timeout=150
    )
    layout = citus._layout() or {"ports": ports}
    layout["ports"] = [*layout["ports"], port]
    (citus._cluster_dir() / "cluster.json").write_text(json.dumps(layout))
    node = citus.cluster_status().nodes[-1]
    for name in citus_databases(st):
        with citus._connect(port) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(citus._on(node.url, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
            conn.execute("CREATE EXTENSION vector")
        with psycopg.connect(citus._on(st.coordinator_url, name), autocommit=True) as conn:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (port,))
    return node


@dataclass(frozen=True)
class RebalanceResult:
    """One database's rebalance: the moves Citus planned, its job, how long it took."""

    database: str
    moves: int
    job_id: int | None
    state: str  # pg_dist_background_job.state ("finished"), or "nothing to move"
    seconds: float


def _plan(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM get_rebalance_table_shards_plan()").fetchone()
    return int(row[0]) if row else 0


def rebalance(database: str | None = None, mode: str = "auto") -> list[RebalanceResult]:
    """Rebalance the shards of ``database`` (default: every Citus database of the local
    cluster) over its nodes with Citus's background rebalancer, waiting for it to finish."""
    if mode not in TRANSFER_MODES:
        raise ConfigError(f"--mode must be one of {', '.join(TRANSFER_MODES)}, not {mode!r}")
    st = _running_cluster()
    names = citus_databases(st)
    if database is not None:
        if database not in names:
            raise ConfigError(
                f"database {database!r} has no Citus on the local cluster (those that have: "
                f"{', '.join(names) or 'none'})"
            )
        names = [database]
    return [_rebalance_one(citus._on(st.coordinator_url, name), name, mode) for name in names]


def _rebalance_one(url: str, name: str, mode: str) -> RebalanceResult:
    with psycopg.connect(url, autocommit=True) as conn:
        moves = _plan(conn)
        if moves == 0:
            return RebalanceResult(name, 0, None, "nothing to move", 0.0)
        t0 = time.monotonic()
        row = conn.execute(
            "SELECT citus_rebalance_start(shard_transfer_mode => %s::citus.shard_transfer_mode)",
            (mode,),
        ).fetchone()
        job_id = int(row[0]) if row and row[0] is not None else None
        conn.execute("SELECT citus_rebalance_wait()")
        seconds = time.monotonic() - t0
        state = "finished"
        if job_id is not None:
            got = conn.execute(
                "SELECT state::text FROM pg_dist_background_job WHERE job_id = %s", (job_id,)
            ).fetchone()
            state = str(got[0]) if got else "unknown"
        if state != "finished":
            raise ServerError(
                f"the rebalance of {name} (job {job_id}) ended {state}: its tasks and their "
                "errors are in pg_dist_background_task on the coordinator"
            )
        return RebalanceResult(name, moves, job_id, state, seconds)
