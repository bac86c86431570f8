"""The local Citus cluster of the tests (tests/test_citus*.py): one per session, or a skip.

Citus comes from the embedded server (already installed) or from CITUS_SRC (a source tarball
or tree, built once per PostgreSQL version and cached); without either the tests that need a
cluster are skipped, saying how to enable them.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pg_mmretrieval import citus, install

WORKERS = 2


def _free_base_port(start: int = 6101, span: int = WORKERS + 1) -> int:
    for base in range(start, start + 400, 10):
        try:
            for p in range(base, base + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports for the Citus test cluster")


def _with_database(url: str, name: str) -> str:
    return re.sub(r"/[^/?]*$", f"/{name}", url)


@pytest.fixture(scope="session")
def citus_cluster() -> Iterator[citus.ClusterStatus]:
    """A coordinator and two workers on 127.0.0.1, stopped at the end of the session."""
    reason = citus.availability()
    if reason is not None:
        pytest.skip(reason)
    current = citus.cluster_status()
    port = current.nodes[0].port if current.running else _free_base_port()
    st = citus.start_cluster(workers=WORKERS, port=port)
    try:
        yield st
    finally:
        citus.stop_cluster()


@pytest.fixture(scope="module")
def citus_url(citus_cluster: citus.ClusterStatus) -> Iterator[str]:
    """A fresh database on every node (Citus needs the same database everywhere), with Citus
    and pgvector, the workers registered, and the mmr schema installed on the coordinator."""
    name = f"tc_{uuid.uuid4().hex[:10]}"
    for node in citus_cluster.nodes:
        with psycopg.connect(node.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(_with_database(node.url, name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
            conn.execute("CREATE EXTENSION vector")
    coord = _with_database(citus_cluster.coordinator_url, name)
    with psycopg.connect(coord, autocommit=True) as conn:
        conn.execute(
            "SELECT citus_set_coordinator_host('127.0.0.1', %s)", (citus_cluster.nodes[0].port,)
        )
        for node in citus_cluster.nodes[1:]:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
    install.upgrade(coord)
    try:
        yield coord
    finally:
        for node in citus_cluster.nodes:
            with psycopg.connect(node.url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]
